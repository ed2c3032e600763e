"""What do the round diagnostics (M usage, confounding) cost? From a finished run's benchmark files.

    python bench/diagnostics_cost.py results/demo [--out bench/diagnostics_cost.md]

Every rule writes a Snakemake benchmark file per job under results/<run>/benchmarks/round<t>/;
this sums the wall time of each round's jobs and reports the ``diagnose`` job's share (the
issue's budget: under 10 % of a round). Jobs that ran concurrently are summed, so the share
is of the round's job time, not of its wall clock; the CPU-seconds columns (Snakemake's
``cpu_time``) are the same share measured in CPU time, which a busy machine distorts less.
A round whose listed jobs lack some steps (a partial run) overstates the share.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd


def round_costs(run: Path) -> pd.DataFrame:
    rows = []
    for folder in sorted((run / "benchmarks").glob("round*"), key=lambda p: int(re.sub(r"\D", "", p.name))):
        tables = {f.stem: pd.read_csv(f, sep="\t").iloc[-1] for f in folder.glob("*.tsv")}
        if "diagnose" not in tables:
            continue
        wall = {k: float(t["s"]) for k, t in tables.items()}
        cpu = {k: float(t["cpu_time"]) for k, t in tables.items() if "cpu_time" in t}
        row = {"round": int(folder.name[5:]), "jobs": " ".join(sorted(tables)), "round_s": sum(wall.values()),
               "diagnose_s": wall["diagnose"], "diagnose_pct": 100.0 * wall["diagnose"] / sum(wall.values())}
        if "diagnose" in cpu:  # CPU seconds: less sensitive to a busy machine than wall time
            row.update(round_cpu_s=sum(cpu.values()), diagnose_cpu_s=cpu["diagnose"],
                       diagnose_cpu_pct=100.0 * cpu["diagnose"] / sum(cpu.values()))
        rows.append(row)
    if not rows:
        raise SystemExit(f"{run}: no benchmarks/round*/diagnose.tsv (run the workflow first)")
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    table = round_costs(args.run)
    text = (f"Diagnostics cost per round of `{args.run}` (sum of the round's job wall times, s)\n\n"
            + table.to_markdown(index=False, floatfmt=".1f") + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

"""What do the round diagnostics (M usage, confounding) cost? From a finished run's benchmark files.

    python bench/diagnostics_cost.py results/demo [--out bench/diagnostics_cost.md]

Every rule writes a Snakemake benchmark file per job under results/<run>/benchmarks/round<t>/;
this sums the wall time of each round's jobs and reports the ``diagnose`` job's share (the
issue's budget: under 10 % of a round). Jobs that ran concurrently are summed, so the share
is of the round's CPU-job time, not of its wall clock.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd


def round_costs(run: Path) -> pd.DataFrame:
    rows = []
    for folder in sorted((run / "benchmarks").glob("round*"), key=lambda p: int(re.sub(r"\D", "", p.name))):
        seconds = {f.stem: float(pd.read_csv(f, sep="\t")["s"].iloc[-1]) for f in folder.glob("*.tsv")}
        if "diagnose" not in seconds:
            continue
        total = sum(seconds.values())
        rows.append({"round": int(folder.name[5:]), "round_s": total, "diagnose_s": seconds["diagnose"],
                     "diagnose_pct": 100.0 * seconds["diagnose"] / total, "jobs": len(seconds)})
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

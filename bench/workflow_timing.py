"""Per-step wall time of a finished run, from Snakemake's benchmark files.

    python bench/workflow_timing.py --run [--cores 2] [-- extra snakemake args]
    python bench/workflow_timing.py --report results/demo [--wall SECONDS]

``--run`` runs the default workflow from scratch in a fresh working directory
(the repository's config.yaml plus any extra arguments), measures its wall
time, then reports. The report has one line per job (step, round, shard), the
totals per round, and the time spent outside jobs (Snakemake's own start-up
and scheduling).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def collect(run_dir: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((run_dir / "benchmarks").rglob("*.tsv")):
        table = pd.read_csv(tsv, sep="\t")
        parent = tsv.parent.name
        rows.append({"round": parent if parent.startswith("round") else "-", "job": tsv.stem,
                     "seconds": float(table["s"].iloc[-1]), "max_rss_mb": float(table["max_rss"].iloc[-1])})
    if not rows:
        raise SystemExit(f"no benchmark files under {run_dir / 'benchmarks'}")
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="results/<run> folder of a finished run")
    parser.add_argument("--wall", type=float, help="wall time of the whole snakemake command (s)")
    parser.add_argument("--run", action="store_true", help="run the workflow in a fresh directory first")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="extra snakemake arguments (after --)")
    args = parser.parse_args()
    if args.run:
        workdir = Path(tempfile.mkdtemp(prefix="conta-bench-"))
        repo = Path(__file__).resolve().parents[1]
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory",
               str(workdir), "--cores", str(args.cores), *args.extra]
        print("running:", " ".join(cmd), flush=True)
        start = time.time()
        # The rules call `python`: make it this interpreter even when no venv is activated.
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        args.wall = time.time() - start
        args.report = next((workdir / "results").iterdir())
    if args.report is None:
        parser.error("give --report RUN_DIR or --run")
    table = collect(args.report)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    per_round = table.groupby("round")["seconds"].sum()
    print("\nseconds per round:")
    print(per_round.to_string(float_format=lambda v: f"{v:.1f}"))
    total = table["seconds"].sum()
    print(f"\nsum of job times: {total:.1f} s ({total / 60:.2f} min)")
    if args.wall:
        print(f"wall time: {args.wall:.1f} s ({args.wall / 60:.2f} min); outside jobs: {args.wall - total:.1f} s")


if __name__ == "__main__":
    main()

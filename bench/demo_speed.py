"""The default demo in fp32 and in bf16 autocast on paired seeds: time per step, and mIoU (issue 16).

    python bench/demo_speed.py [--seeds 0 1 2 3 4] [--arms fp32 bf16] [--threads 2] [--prefix speed]
                               [--collect-only] [--out bench/demo_speed.md] [-- extra snakemake args]

Each arm and seed is one run of the default workflow (config.yaml: baseline + 3 CONTA rounds
on the generated dataset) into ``results/<prefix>_<arm>_s<seed>`` with ``--config seed=<seed>
threads=<threads>`` and the arm's overrides; a rerun resumes a finished run (its times are the
ones recorded when it ran). ``bf16`` runs the classifier and DeepLab training and the CAM network
under bf16 autocast (``classifier.precision``, ``segment.precision``, ``cam.precision``), ``fp32``
without it (both explicit: config.yaml's ``auto`` is bf16 on such a CPU); on a CPU bf16 pays off
only with AVX512-BF16 (or AMX).

Written: ``--out`` (markdown) and its ``.json``: per arm the mean ± std of CAM / pseudo-mask /
seg mIoU per round; the paired bf16 - fp32 difference of every round and score with a 95 %
Student-t interval and "within noise" where it contains 0; each step's seconds per round
(median over seeds, from the Snakemake benchmark files) and the wall time of each run. The
machine's load (``/proc/loadavg``) is recorded before and after each run: wall times are
comparable only between runs made on an idle machine, mIoU whatever the load (the thread
count is fixed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from conta_core.ablation_stats import COLUMNS, TITLES, t_interval, verdict  # noqa: E402

ARMS = {
    "fp32": ["classifier={precision: fp32}", "segment={precision: fp32}", "cam={precision: fp32}"],
    "bf16": ["classifier={precision: bf16}", "segment={precision: bf16}", "cam={precision: bf16}"],
}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(arm: str, seed: int, args) -> dict:
    name = f"{args.prefix}_{arm}_s{seed}"
    folder = REPO / "results" / name
    timing = folder / "demo_speed_wall.json"
    if not args.collect_only and not (folder / "summary.csv").exists():
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO),
               "--cores", str(args.threads), *args.extra, "--config", f"run={name}", f"seed={seed}",
               f"threads={args.threads}", *ARMS[arm]]
        print("$", " ".join(cmd), flush=True)
        before, start = load(), time.perf_counter()
        subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wall = time.perf_counter() - start
        folder.mkdir(parents=True, exist_ok=True)
        timing.write_text(json.dumps({"wall_s": wall, "load_before": before, "load_after": load()}))
    if not (folder / "summary.csv").exists():
        raise SystemExit(f"{folder}/summary.csv is missing: run without --collect-only first")
    steps = []
    for tsv in sorted((folder / "benchmarks").glob("round*/*.tsv")):
        seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
        step = tsv.stem.replace("_shard0", "")
        steps.append({"round": int(tsv.parent.name[len("round"):]), "step": step, "s": seconds})
    wall = json.loads(timing.read_text()) if timing.exists() else {}
    return {"arm": arm, "seed": seed, "scores": pd.read_csv(folder / "summary.csv"), "steps": pd.DataFrame(steps),
            **wall}


def report(results: list[dict], arms: list[str]) -> tuple[str, dict]:
    scores = pd.concat([r["scores"].assign(arm=r["arm"], seed=r["seed"]) for r in results])
    lines = ["## mIoU (%), mean ± std over seeds", "", "| arm | round | CAM | Pseudo-Mask | Seg. Mask | seeds |",
             "|---|---:|---:|---:|---:|---:|"]
    for (arm, rnd), g in scores.groupby(["arm", "round"]):
        cells = [f"{g[c].mean():.1f} ± {g[c].std(ddof=1):.1f}" for c in COLUMNS]
        lines.append(f"| {arm} | {rnd} | " + " | ".join(cells) + f" | {len(g)} |")
    claims = []
    if len(arms) == 2:
        a, b = arms
        lines += ["", f"## Paired difference {b} - {a} (same seed), 95 % t-interval", "",
                  "| round | score | Δ mIoU | 95 % interval | seeds | verdict |", "|---:|---|---:|---|---:|---|"]
        wide = scores.pivot_table(index=["seed", "round"], columns="arm", values=COLUMNS)
        for rnd in sorted(scores["round"].unique()):
            for c in COLUMNS:
                diff = (wide[(c, b)] - wide[(c, a)]).xs(rnd, level="round").dropna()
                mean, low, high, k = t_interval(diff)
                claims.append({"round": int(rnd), "score": c, "diff": mean, "low": low, "high": high, "seeds": k,
                               "verdict": verdict(low, high)})
                lines.append(f"| {rnd} | {TITLES[c]} | {mean:+.2f} | [{low:+.2f}, {high:+.2f}] | {k} | "
                             f"{verdict(low, high)} |")
    steps = pd.concat([r["steps"].assign(arm=r["arm"], seed=r["seed"]) for r in results])
    per_step = steps.groupby(["arm", "step", "seed"])["s"].mean().groupby(["arm", "step"]).median().unstack("arm")
    lines += ["", "## Seconds per round of each step (mean over rounds, median over seeds)", "",
              "| step | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    for step, row in per_step.iterrows():
        lines.append(f"| {step} | " + " | ".join(f"{row.get(a, float('nan')):.1f}" for a in arms) + " |")
    lines += ["", "## Runs", "", "| arm | seed | wall (s) | sum of steps (s) | load before | load after |",
              "|---|---:|---:|---:|---|---|"]
    for r in results:
        lines.append(f"| {r['arm']} | {r['seed']} | {r.get('wall_s', float('nan')):.0f} | {r['steps']['s'].sum():.0f} | "
                     f"{r.get('load_before', '?')} | {r.get('load_after', '?')} |")
    data = {"claims": claims, "per_step": per_step.reset_index().to_dict(orient="records"),
            "runs": [{k: r.get(k) for k in ("arm", "seed", "wall_s", "load_before", "load_after")} for r in results]}
    return "\n".join(lines) + "\n", data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefix", default="speed")
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "demo_speed.md")
    parser.add_argument("extra", nargs="*", help="extra snakemake arguments (after --)")
    args = parser.parse_args()
    results = [run(arm, seed, args) for seed in args.seeds for arm in args.arms]
    text, data = report(results, args.arms)
    args.out.write_text(f"# The default demo, fp32 vs bf16 (`python bench/demo_speed.py`)\n\n{text}")
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()

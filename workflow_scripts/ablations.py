"""Run the paper's ablations (Table 1: Q1-Q4) and the control arms side by side, over paired seeds.

    python workflow_scripts/ablations.py [--only arms,q1,q3] [--seeds 0 1 2 3 4] [--cores N]
                                         [--threads T] [--prefix NAME] [--dry-run] [--collect-only]
                                         [-- extra snakemake arguments, e.g. --configfile presets/...]

Each setting is one Snakemake run with ``--config`` overrides into its own
``results/<prefix>_<setting>_s<seed>`` folder (so reruns resume and settings never share
files), every run with the same ``threads`` (CPU results depend on the thread count: runs
made with different counts are refused, see below). Every setting is run with every seed
(paired seeds); 5 seeds by default, the fewest for the intervals of an effect claim.

Group ``arms`` (issue 11): ``default`` (= CONTA, conta.mode adjust), ``permuted`` (the null:
each image gets another image's X_m) and ``oracle`` (X_m and C from the ground truth;
research only). The baseline is round 0 of each seed: it never reads M, so it is the same in
every arm (the runner reports any disagreement, which would mean nondeterminism).

Written to ``results/<prefix>_*``:

* ``table1.md/.csv``: rows as in the paper (Baseline, Q1, Q2 rounds, Q3 blocks, Q4 source),
  mean ± std over the seeds;
* ``arms.md/.csv``: every arm and round, mean ± std;
* ``claims.md/.csv``: the paired difference of every arm and round to the baseline and to
  ``permuted``, with 95 % t-intervals, and "within noise" where an interval contains 0;
* ``diagnostics.md/.csv``: the M-usage diagnostic and the confounding shares, mean over seeds;
* ``per_class.md/.csv``: the default setting's per-class IoU over seeds.

Q2 (rounds) is read from the rows of the default run; Q3's block 5 and Q4's
seg_mask source are the default run itself.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from conta_core.ablation_stats import (COLUMNS, arm_markdown, arm_table, baseline_agreement,  # noqa: E402
                                       claims_markdown, long_scores, paired_differences)

# setting name -> --config overrides (on top of the user's config)
SETTINGS = {
    "default": [],
    "q1_seg_mask": ["conta={mode: seg_mask}"],
    "q3_block2": ["conta={block: 2}"],
    "q3_block3": ["conta={block: 3}"],
    "q3_block4": ["conta={block: 4}"],
    "q3_dense": ["conta={block: dense}"],
    "q4_pseudo_mask": ["confounder={source: pseudo_mask}"],
    "permuted": ["conta={mode: permuted}"],
    "oracle": ["conta={mode: oracle}"],
}
GROUPS = {"arms": ["permuted", "oracle"], "q1": ["q1_seg_mask"], "q2": [],
          "q3": ["q3_block2", "q3_block3", "q3_block4", "q3_dense"], "q4": ["q4_pseudo_mask"]}
ARM_NAMES = {"default": "adjust"}  # the default setting is CONTA itself
M_USAGE_KEYS = ["cam_change_permuted_pct", "cam_change_zero_pct", "cam_change_ceiling_pct", "m_change_permuted_pct",
                "cam_miou_own", "cam_miou_permuted",
                "cam_miou_zero", "score_share_m_pct", "alpha_entropy", "alpha_rel_spread", "w1_rel_change",
                "w2_rel_change"]


def run_setting(name: str, seed: int, prefix: str, cores: int, threads: int, extra: list[str],
                dry_run: bool, collect_only: bool) -> Path:
    run = f"{prefix}_{name}_s{seed}"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--cores", str(cores),
           *extra, "--config", f"run={run}", f"seed={seed}", f"threads={threads}", *SETTINGS[name]]
    if dry_run:
        cmd.append("-n")
    if not collect_only:
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return Path("results") / run / "summary.csv"


def check_threads(m_usage: dict[tuple[str, int], pd.DataFrame], allow_mixed: bool) -> int | None:
    """The one CPU thread count of every run's classifiers; runs with different counts are not comparable."""
    counts = {}
    for key, frame in m_usage.items():
        for value in frame["threads"].dropna().unique():
            counts.setdefault(int(value), []).append(f"{key[0]} seed {key[1]}")
    if len(counts) > 1 and not allow_mixed:
        detail = "; ".join(f"{t} threads: {', '.join(sorted(set(runs)))}" for t, runs in sorted(counts.items()))
        raise SystemExit(f"runs were trained with different CPU thread counts ({detail}); their scores differ by "
                         "thread count alone, so they are not compared. Rerun them with the same --threads "
                         "(delete their results folders), or pass --allow-mixed-threads.")
    return next(iter(counts)) if len(counts) == 1 else None


def diagnostics_table(m_usage: dict, confounding: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(M usage: mean over seeds per arm and round; confounding: object/background shares per class)."""
    usage = pd.concat([f.assign(arm=ARM_NAMES.get(a, a), seed=s) for (a, s), f in m_usage.items()])
    usage = usage.reindex(columns=["arm", "round", *M_USAGE_KEYS])  # older runs lack the newer keys: NaN
    usage = usage[usage["round"] > 0].groupby(["arm", "round"])[M_USAGE_KEYS].mean().reset_index()
    conf = pd.concat([f.assign(arm=ARM_NAMES.get(a, a), seed=s) for (a, s), f in confounding.items()])
    conf = conf[conf["region"].isin(["object", "background"])]
    conf = conf.groupby(["arm", "round", "source", "class", "region"])["share"].mean().unstack("region").reset_index()
    return usage, conf


def diagnostics_markdown(usage: pd.DataFrame, conf: pd.DataFrame) -> str:
    lines = ["### M usage (mean over seeds; CAM change in % of the CAM peak)", "",
             "| arm | round | " + " | ".join(M_USAGE_KEYS) + " |", "|---|---:|" + "---:|" * len(M_USAGE_KEYS)]
    for _, r in usage.iterrows():
        lines.append(f"| {r['arm']} | {int(r['round'])} | " + " | ".join(f"{r[k]:.3g}" for k in M_USAGE_KEYS) + " |")
    lines += ["", "### Confounding: share of each class's CAM / pseudo-mask mass on the object and on "
              "ground-truth background (%, mean over seeds)", "",
              "| arm | round | source | class | object | background |", "|---|---:|---|---|---:|---:|"]
    for _, r in conf.iterrows():
        lines.append(f"| {r['arm']} | {int(r['round'])} | {r['source']} | {r['class']} | "
                     f"{r['object']:.1f} | {r['background']:.1f} |")
    return "\n".join(lines) + "\n"


def table1(results: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Rows like the paper's Table 1, each cell mean and std over seeds."""
    rows = []

    def add(label: str, frames: list[pd.DataFrame], round_index: int | None) -> None:
        picked = [f[f["round"] == (f["round"].max() if round_index is None else round_index)] for f in frames]
        values = pd.concat(picked)[COLUMNS]
        rows.append({"setting": label, **{c: values[c].mean() for c in COLUMNS},
                     **{f"{c}_std": values[c].std(ddof=0) for c in COLUMNS}, "seeds": len(values)})

    default = results["default"]
    add("Baseline", default, 0)
    if "q1_seg_mask" in results:
        add("(Q1) M_t <- Seg. Mask", results["q1_seg_mask"], None)
    for r in range(1, int(default[0]["round"].max()) + 1):
        add(f"(Q2) Round = {r}", default, r)
    for name, label in (("q3_block2", "Block-2"), ("q3_block3", "Block-3"), ("q3_block4", "Block-4")):
        if name in results:
            add(f"(Q3) {label}", results[name], None)
    add("(Q3) Block-5", default, None)
    if "q3_dense" in results:
        add("(Q3) Dense", results["q3_dense"], None)
    if "q4_pseudo_mask" in results:
        add("(Q4) C_Pseudo-Mask", results["q4_pseudo_mask"], None)
    add("(Q4) C_Seg. Mask", default, None)
    return pd.DataFrame(rows)


def per_class_over_seeds(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-class IoU of each step and round (rows of per_class.csv), mean and std over the seeds."""
    rows = pd.concat(frames)
    grouped = rows.groupby(["step", "class", "round"], sort=False)["iou"]
    return grouped.agg(iou="mean", iou_std=lambda v: v.std(ddof=0), seeds="count").reset_index()


def per_class_markdown(table: pd.DataFrame) -> str:
    """One table per step: a row per class, a column per round (mean ± std over seeds)."""
    rounds = sorted(table["round"].unique())
    parts = ["Per-class IoU (%) of the default setting, mean ± std over seeds.\n"]
    for step, rows in table.groupby("step", sort=False):
        lines = [f"### {step}", "", "| class | " + " | ".join(f"round {r}" for r in rounds) + " |",
                 "|---|" + "---:|" * len(rounds)]
        for name, by_class in rows.groupby("class", sort=False):
            cells = {r["round"]: f"{r['iou']:.1f} ± {r['iou_std']:.1f}" for _, r in by_class.iterrows()}
            lines.append(f"| {name} | " + " | ".join(cells.get(r, "") for r in rounds) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| Setting | CAM | Pseudo-Mask | Seg. Mask | seeds |", "|---|---:|---:|---:|---:|"]
    for _, row in table.iterrows():
        cells = [f"{row[c]:.1f} ± {row[c + '_std']:.1f}" for c in COLUMNS]
        lines.append(f"| {row['setting']} | " + " | ".join(cells) + f" | {row['seeds']} |")
    return "mIoU (%), mean ± std over seeds; rows other than Q2 use the last round.\n\n" + "\n".join(lines) + "\n"


def write(prefix: str, name: str, table: pd.DataFrame, text: str) -> None:
    out = Path("results") / f"{prefix}_{name}"
    table.to_csv(out.with_suffix(".csv"), index=False, float_format="%.3f")
    out.with_suffix(".md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="arms,q1,q2,q3,q4",
                        help="comma-separated groups among arms,q1,q2,q3,q4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--prefix", default="ablation")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every job of every run")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--collect-only", action="store_true", help="only read finished runs and write the tables")
    parser.add_argument("--allow-mixed-threads", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra snakemake arguments (after --)")
    args = parser.parse_args()
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown ablation group(s) {unknown}; choose from {sorted(GROUPS)}")
    names = ["default"] + [n for g in groups for n in GROUPS[g]]
    results: dict[str, list[pd.DataFrame]] = {}
    runs, m_usage, confounding = {}, {}, {}
    default_per_class: list[pd.DataFrame] = []
    for name in names:
        for seed in args.seeds:
            path = run_setting(name, seed, args.prefix, args.cores, args.threads, args.extra, args.dry_run,
                               args.collect_only)
            if args.dry_run:
                continue
            frame = pd.read_csv(path)
            results.setdefault(name, []).append(frame)
            runs[ARM_NAMES.get(name, name), seed] = frame
            m_usage[name, seed] = pd.read_csv(path.with_name("m_usage.csv"))
            confounding[name, seed] = pd.read_csv(path.with_name("confounding.csv"))
            if name == "default":
                default_per_class.append(pd.read_csv(path.with_name("per_class.csv")))
    if args.dry_run:
        return
    threads = check_threads(m_usage, args.allow_mixed_threads)
    table = table1(results)
    write(args.prefix, "table1", table, markdown(table))
    scores = long_scores(runs)
    agreement = baseline_agreement(scores)
    if (agreement[COLUMNS].to_numpy() > 1e-6).any():
        print("WARNING: round 0 differs between arms of the same seed (nondeterminism):\n"
              + agreement.to_string(index=False), flush=True)
    arms = arm_table(scores)
    header = f"Seeds {args.seeds}, {threads} CPU threads per job.\n\n"
    write(args.prefix, "arms", arms, header + arm_markdown(arms))
    diffs = paired_differences(scores)
    write(args.prefix, "claims", diffs, header + claims_markdown(diffs))
    usage, conf = diagnostics_table(m_usage, confounding)
    write(args.prefix, "diagnostics", usage, header + diagnostics_markdown(usage, conf))
    per_class = per_class_over_seeds(default_per_class)
    write(args.prefix, "per_class", per_class, per_class_markdown(per_class))
    print(markdown(table))
    print(arm_markdown(arms))
    print(claims_markdown(diffs))


if __name__ == "__main__":
    main()

"""Run the paper's ablations (Table 1: Q1-Q4) side by side and combine them into one table.

    python workflow_scripts/ablations.py [--only q1,q3] [--seeds 0 1 2] [--cores N] [--dry-run]
                                         [-- extra snakemake arguments, e.g. --configfile presets/...]

Each setting is one Snakemake run with ``--config`` overrides into its own
``results/<prefix>_<setting>_s<seed>`` folder (so reruns resume and settings never share
files). The combined table is written to ``results/<prefix>_table1.md`` and ``.csv``
(and the default setting's per-class IoU over seeds to ``results/<prefix>_per_class.md``):
rows as in the paper (Baseline, Q1, Q2 rounds, Q3 blocks, Q4 confounder source),
columns CAM / Pseudo-Mask / Seg. Mask mIoU, as mean +- std over the seeds.

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
COLUMNS = ["cam_miou", "pseudo_mask_miou", "seg_miou"]

# setting name -> --config overrides (on top of the user's config)
SETTINGS = {
    "default": [],
    "q1_seg_mask": ["conta={mode: seg_mask}"],
    "q3_block2": ["conta={block: 2}"],
    "q3_block3": ["conta={block: 3}"],
    "q3_block4": ["conta={block: 4}"],
    "q3_dense": ["conta={block: dense}"],
    "q4_pseudo_mask": ["confounder={source: pseudo_mask}"],
}
GROUPS = {"q1": ["q1_seg_mask"], "q2": [], "q3": ["q3_block2", "q3_block3", "q3_block4", "q3_dense"],
          "q4": ["q4_pseudo_mask"]}


def run_setting(name: str, seed: int, prefix: str, cores: int, extra: list[str], dry_run: bool) -> Path:
    run = f"{prefix}_{name}_s{seed}"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--cores", str(cores),
           *extra, "--config", f"run={run}", f"seed={seed}", *SETTINGS[name]]
    if dry_run:
        cmd.append("-n")
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return Path("results") / run / "summary.csv"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="q1,q2,q3,q4", help="comma-separated groups among q1,q2,q3,q4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--prefix", default="ablation")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra snakemake arguments (after --)")
    args = parser.parse_args()
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown ablation group(s) {unknown}; choose from {sorted(GROUPS)}")
    names = ["default"] + [n for g in groups for n in GROUPS[g]]
    results: dict[str, list[pd.DataFrame]] = {}
    default_per_class: list[pd.DataFrame] = []
    for name in names:
        for seed in args.seeds:
            path = run_setting(name, seed, args.prefix, args.cores, args.extra, args.dry_run)
            if not args.dry_run:
                results.setdefault(name, []).append(pd.read_csv(path))
                if name == "default":
                    default_per_class.append(pd.read_csv(path.with_name("per_class.csv")))
    if args.dry_run:
        return
    table = table1(results)
    out = Path("results") / f"{args.prefix}_table1"
    table.to_csv(out.with_suffix(".csv"), index=False, float_format="%.2f")
    out.with_suffix(".md").write_text(markdown(table))
    per_class = per_class_over_seeds(default_per_class)
    out = Path("results") / f"{args.prefix}_per_class"
    per_class.to_csv(out.with_suffix(".csv"), index=False, float_format="%.2f")
    out.with_suffix(".md").write_text(per_class_markdown(per_class))
    print(markdown(table))


if __name__ == "__main__":
    main()

"""Collect every round's scores into summary.csv / summary.md (the paper's Table 1) and a plot.

summary.md also shows each round's diagnostics: whether M_t acts (M usage) and where each
class's CAM and pseudo-mask mass falls (confounding); their tables over all rounds are
written to m_usage.csv and confounding.csv.
"""
from pathlib import Path

import pandas as pd

from _common import parser

from conta_core.confounding import confounding_markdown
from conta_core.evaluate import per_class_markdown, plot_rounds, table1_markdown
from conta_core.report_html import markdown_to_html

M_USAGE_TITLES = {
    "cam_change_permuted_pct": "CAM change, permuted X_m (% of peak)",
    "cam_change_zero_pct": "CAM change, M = 0 (% of peak)",
    "cam_change_ceiling_pct": "CAM change, the two most different contexts of C (% of peak)",
    "m_change_permuted_pct": "M change, permuted X_m (% of the room C allows)",
    "cam_miou_own": "CAM mIoU own X_m (1 scale)",
    "cam_miou_permuted": "CAM mIoU permuted X_m",
    "cam_miou_zero": "CAM mIoU M = 0",
    "score_share_m_pct": "share of class score from M (%)",
    "alpha_entropy": "alpha entropy / log n (1 = uniform)",
    "alpha_rel_spread": "alpha spread over images (std / mean)",
    "m_rel_spread": "M spread over images (std / mean)",
    "w1_rel_change": "W1 moved in training (norm of W - W0 / norm of W0)",
    "w2_rel_change": "W2 moved in training",
    "threads": "CPU threads of the classifier",
}


def m_usage_markdown(table: pd.DataFrame) -> str:
    """Rows: the diagnostics; columns: CONTA rounds. A dead M path shows ~0 % changes."""
    rounds = table[table["mode"] != "baseline"].sort_values("round")
    if rounds.empty:
        return "### Does M_t act?\n\nNo round uses M_t (round 0 only, or conta.mode off).\n"
    lines = ["### Does M_t act? (M-usage diagnostic, training split)", "",
             "| | " + " | ".join(f"Round {int(r)}" for r in rounds["round"]) + " |",
             "|---|" + "---:|" * len(rounds)]
    for key, title in M_USAGE_TITLES.items():
        if key not in rounds:  # a run made before this diagnostic existed
            continue
        cells = [("" if pd.isna(v) else f"{v:.3g}") for v in rounds[key]]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--summaries", type=Path, nargs="+", required=True)
    p.add_argument("--per-class", type=Path, nargs="+", required=True)
    p.add_argument("--m-usage", type=Path, nargs="+", required=True)
    p.add_argument("--confounding", type=Path, nargs="+", required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-md", type=Path, required=True)
    p.add_argument("--out-html", type=Path, required=True)
    p.add_argument("--out-per-class", type=Path, required=True)
    p.add_argument("--out-plot", type=Path, required=True)
    p.add_argument("--out-m-usage", type=Path, required=True)
    p.add_argument("--out-confounding", type=Path, required=True)
    args = p.parse_args()
    s = args.settings
    summary = pd.concat([pd.read_csv(f) for f in args.summaries]).sort_values("round")
    per_class = pd.concat([pd.read_csv(f) for f in args.per_class])
    summary.to_csv(args.out_csv, index=False, float_format="%.2f")
    per_class.to_csv(args.out_per_class, index=False, float_format="%.2f")
    title = f"{s['run']}: {s['dataset']} / conta.mode {s['conta_mode']}"
    m_usage = pd.concat([pd.read_csv(f) for f in args.m_usage]).sort_values("round")
    confounding = pd.concat([pd.read_csv(f) for f in args.confounding])
    m_usage.to_csv(args.out_m_usage, index=False, float_format="%.4g")
    confounding.to_csv(args.out_confounding, index=False, float_format="%.4g")
    markdown = (table1_markdown(summary, title) + "\n" + m_usage_markdown(m_usage) + "\n"
                + confounding_markdown(confounding) + "\n" + per_class_markdown(per_class))
    args.out_md.write_text(markdown)
    args.out_html.write_text(markdown_to_html(markdown, title))  # what `snakemake --report` shows inline
    plot_rounds(summary, args.out_plot, title)
    print(summary.to_string(index=False))

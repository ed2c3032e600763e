"""Collect every round's scores into summary.csv / summary.md (the paper's Table 1) and a plot."""
from pathlib import Path

import pandas as pd

from _common import parser

from conta_core.evaluate import per_class_markdown, plot_rounds, table1_markdown

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--summaries", type=Path, nargs="+", required=True)
    p.add_argument("--per-class", type=Path, nargs="+", required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-md", type=Path, required=True)
    p.add_argument("--out-per-class", type=Path, required=True)
    p.add_argument("--out-plot", type=Path, required=True)
    args = p.parse_args()
    s = args.settings
    summary = pd.concat([pd.read_csv(f) for f in args.summaries]).sort_values("round")
    per_class = pd.concat([pd.read_csv(f) for f in args.per_class])
    summary.to_csv(args.out_csv, index=False, float_format="%.2f")
    per_class.to_csv(args.out_per_class, index=False, float_format="%.2f")
    title = f"{s['run']}: {s['dataset']} / conta.mode {s['conta_mode']}"
    args.out_md.write_text(table1_markdown(summary, title) + "\n" + per_class_markdown(per_class))
    plot_rounds(summary, args.out_plot, title)
    print(summary.to_string(index=False))

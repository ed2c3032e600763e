"""A round's diagnostics: does M_t act (CONTA rounds), and where each class's CAM and pseudo-mask mass falls.

Writes ``m_usage.csv`` (one row; NaN in rounds without M: round 0 and conta.mode off)
and ``confounding.csv`` (source, class, region, mass, share). Rounds without M import
no torch.
"""
import sys
import time
from pathlib import Path

import pandas as pd

from _common import round_parser, setup

from conta_core.confounding import mass_by_region
from conta_core.data.index import DatasetIndex
from conta_core.store import ShardedReader

M_USAGE_COLUMNS = ["round", "mode", "threads", "images", "cam_miou_own", "cam_miou_permuted", "cam_miou_zero",
                   "cam_change_permuted_pct", "cam_change_zero_pct", "cam_change_ceiling_pct",
                   "m_change_permuted_pct", "score_share_m_pct", "alpha_entropy",
                   "alpha_std", "alpha_rel_spread", "m_mean", "m_rel_spread", "w1_rel_change", "w2_rel_change",
                   "m_weight_norm_start", "m_weight_norm_end", "seconds"]


def m_usage_row(args, s, index) -> dict:
    from conta_core import methods
    from conta_core.classify import ConfounderInputs, load_model
    from conta_core.diagnostics import m_usage, subset

    device = setup(args)
    confounder = ConfounderInputs(args.confounder, index.classes)
    recipe = methods.get(s["method"])
    model = recipe.build_round_classifier.load()(s["classifier"], index.num_classes, s["conta"], args.round, confounder,
                             load_weights=False)
    meta = load_model(args.classifier, model)
    model.to(device).eval()
    usage = m_usage(model, index, subset(index.ids(s["train_split"])), confounder.x_m, s["seed"],
                    recipe.cam_labeller(s["cam"]), device)
    return {**usage, **meta.get("context_motion", {}), "threads": meta.get("threads")}


if __name__ == "__main__":
    p = round_parser(__doc__, out=False)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--confounder", type=Path, help="the confounder file the round's classifier read (CONTA rounds)")
    p.add_argument("--cams", type=Path, nargs="+", required=True)
    p.add_argument("--pseudo-masks", type=Path, nargs="+", required=True)
    p.add_argument("--out-m-usage", type=Path, required=True)
    p.add_argument("--out-confounding", type=Path, required=True)
    args = p.parse_args()
    s = args.settings
    start = time.time()
    index = DatasetIndex.load(args.index_dir)
    if args.confounder is not None:
        row = m_usage_row(args, s, index)
    else:
        setup(args, uses_torch=False)
        row = {}
    row.update({"round": args.round, "mode": s["conta"]["mode"] if args.round > 0 else "baseline",
                "seconds": time.time() - start})
    pd.DataFrame([row]).reindex(columns=M_USAGE_COLUMNS).to_csv(args.out_m_usage, index=False, float_format="%.4g")
    expect = {"class_names": index.classes, "round": args.round}
    with ShardedReader(args.cams, kind="cam", expect=expect) as cams, \
            ShardedReader(args.pseudo_masks, kind="pseudo_mask", expect=expect) as pseudo:
        table = mass_by_region(index, index.ids(s["train_split"]), cams, pseudo)
    table.insert(0, "round", args.round)
    table.to_csv(args.out_confounding, index=False, float_format="%.4g")
    print(pd.DataFrame([row]).reindex(columns=M_USAGE_COLUMNS).T.to_string(header=False), file=sys.stderr)
    print(f"[diagnose] round {args.round}: {time.time() - start:.1f} s", file=sys.stderr)

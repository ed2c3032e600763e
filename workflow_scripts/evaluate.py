"""Score one round: CAM and pseudo-mask mIoU on the training split, segmentation mIoU on the evaluation split."""
from pathlib import Path

from _common import round_parser, setup

from conta_core import methods
from conta_core.data.index import DatasetIndex
from conta_core.evaluate import round_tables, score_round
from conta_core.store import ShardedReader

if __name__ == "__main__":
    p = round_parser(__doc__, out=False)
    p.add_argument("--cams", type=Path, nargs="+", required=True)
    p.add_argument("--pseudo-masks", type=Path, nargs="+", required=True)
    p.add_argument("--seg-preds", type=Path, nargs="+", required=True)
    p.add_argument("--out-summary", type=Path, required=True)
    p.add_argument("--out-per-class", type=Path, required=True)
    args = p.parse_args()
    s = args.settings
    setup(args, uses_torch=False)
    index = DatasetIndex.load(args.index_dir)
    expect = {"class_names": index.classes, "round": args.round}
    with ShardedReader(args.cams, kind="cam", expect=expect) as cams, \
            ShardedReader(args.pseudo_masks, kind="pseudo_mask", expect=expect) as pseudo, \
            ShardedReader(args.seg_preds, kind="seg_pred", expect=expect) as seg:
        scores = score_round(index, index.ids(s["train_split"]), index.ids(s["eval_split"]), cams, pseudo, seg,
                             methods.get(s["method"]).cam_labeller(s["cam"]))
    summary, per_class = round_tables(scores, index.classes, args.round)
    summary.to_csv(args.out_summary, index=False, float_format="%.4f")
    per_class.to_csv(args.out_per_class, index=False, float_format="%.4f")
    print(summary.to_string(index=False))

"""Train a round's DeepLab-v2 on its pseudo-masks (255 ignored).

Resumable like train_classifier.py (``--checkpoint-dir``, ``--checkpoint-every``);
``--gpus`` > 1 trains with DDP.
"""
from pathlib import Path

from _common import add_training_args, checkpointing, round_parser, setup

from conta_core.classify import save_model
from conta_core.data.index import DatasetIndex
from conta_core.scalars import ScalarLog
from conta_core.segment import SEGMENTER_FORMAT, train_segmenter
from conta_core.store import ShardedReader

if __name__ == "__main__":
    p = round_parser(__doc__)
    p.add_argument("--pseudo-masks", type=Path, nargs="+", required=True)
    add_training_args(p)
    args = p.parse_args()
    s = args.settings
    device = setup(args)
    scalars = ScalarLog(str(args.tensorboard)) if args.tensorboard else None  # fails now if not installed
    index = DatasetIndex.load(args.index_dir)
    checkpoint = checkpointing(args, [args.index_dir / "index.csv", args.index_dir / "classes.json",
                                      *args.pseudo_masks])
    with ShardedReader(args.pseudo_masks, kind="pseudo_mask",
                       expect={"class_names": index.classes, "round": args.round}) as masks:
        ids = [i for i in index.ids(s["train_split"]) if i in masks]
        missing = len(index.ids(s["train_split"])) - len(ids)
        if missing:
            raise SystemExit(f"{missing} training images have no pseudo-mask in {args.pseudo_masks}")
        model, history = train_segmenter(index, ids, masks, s["segment"], s["seed"], device, args.round,
                                         world_size=max(1, args.gpus or 1), checkpoint=checkpoint,
                                         scalars=scalars)
    # What conta-predict needs to rebuild the model and read and colour images as the workflow does.
    save_model(args.out, model, {"format": SEGMENTER_FORMAT, "round": args.round, "settings": s,
                                 "config_digest": args.config_digest,
                                 "loss_history": history, "class_names": index.classes,
                                 "palette": index.palette, "void": index.void,
                                 "max_side": getattr(index, "max_side", None)})
    if checkpoint is not None:
        checkpoint.clear()

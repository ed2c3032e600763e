"""Train a round's AffinityNet (ResNet-38 affinity features) on the round's confident labels.

Resumable like the classifier (``--checkpoint-dir``); ``--gpus`` > 1 trains with DDP.
"""
from pathlib import Path

import torch

from _common import add_checkpoint_args, checkpointing, round_parser, setup

from conta_core.classify import save_model
from conta_core.data.index import DatasetIndex
from conta_core.expand.affinitynet_train import train_affinity_net
from conta_core.store import ShardedReader

if __name__ == "__main__":
    p = round_parser(__doc__)
    p.add_argument("--aff-labels", type=Path, nargs="+", required=True, help="the round's aff_label shards")
    p.add_argument("--classifier", type=Path, help="the round's classifier.pt (train.weights: classifier)")
    add_checkpoint_args(p)
    args = p.parse_args()
    s = args.settings
    device = setup(args)
    index = DatasetIndex.load(args.index_dir)
    cfg = {**s["expand"]["affinitynet"]["train"], "radius": s["expand"]["affinitynet"]["radius"]}
    if cfg["weights"] == "classifier" and args.classifier is None:
        raise SystemExit("expand.affinitynet.train.weights is 'classifier' but no --classifier was given")
    inputs = [args.index_dir / "index.csv", *args.aff_labels] + ([args.classifier] if args.classifier else [])
    checkpoint = checkpointing(args, inputs)
    ids = index.ids(s["train_split"])
    with ShardedReader(args.aff_labels, kind="aff_label",
                       expect={"class_names": index.classes, "round": args.round}) as labels:
        missing = [i for i in ids if i not in labels]
        if missing:
            raise SystemExit(f"{len(missing)} training images have no confident labels in {args.aff_labels} "
                             f"(e.g. {missing[:3]}): the label shards are stale")
        model, losses = train_affinity_net(index, ids, labels, cfg, s["seed"], device,
                                           classifier=args.classifier, world_size=max(1, args.gpus or 1),
                                           checkpoint=checkpoint)
    save_model(args.out, model, {"round": args.round, "settings": s, "config_digest": args.config_digest,
                                 "loss_history": losses, "class_names": index.classes,
                                 "threads": torch.get_num_threads()})
    if checkpoint is not None:
        checkpoint.clear()

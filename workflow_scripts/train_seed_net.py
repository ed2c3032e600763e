"""Train a round's SEC or DSRG network (expand.method sec | dsrg) on its seed maps.

SEC: seeding + expansion (GWRP) + constrain-to-boundary losses; DSRG: seeded region
growing during training + balanced seeding + constrain losses. The losses' dense CRFs
run over one worker process per thread. Resumable like train_classifier.py
(``--checkpoint-dir``, ``--checkpoint-every``); ``--gpus`` > 1 trains with DDP.
"""
import sys
from pathlib import Path

from _common import add_training_args, checkpointing, round_parser, setup

from conta_core.checkpoint import load_model_file
from conta_core.classify import save_model
from conta_core.data.index import DatasetIndex
from conta_core.expand.seed_net import train_seed_network
from conta_core.expand.seeds import SEED_KIND
from conta_core.scalars import ScalarLog
from conta_core.store import ShardedReader

if __name__ == "__main__":
    p = round_parser(__doc__)
    p.add_argument("--seeds", type=Path, nargs="+", required=True, help="the round's seeds shards")
    p.add_argument("--classifier", type=Path, help="the round's classifier.pt (train.weights: classifier)")
    add_training_args(p)
    args = p.parse_args()
    s = args.settings
    device = setup(args)
    scalars = ScalarLog(str(args.tensorboard)) if args.tensorboard else None
    method = s["expand"]["method"]
    section = s["expand"][method]
    index = DatasetIndex.load(args.index_dir)
    classifier_state = None
    inputs = [args.index_dir / "index.csv", args.index_dir / "classes.json", *args.seeds]
    if section["train"].get("weights") == "classifier":
        if args.classifier is None:
            raise SystemExit(f"expand.{method}.train.weights is 'classifier' but no --classifier was given")
        classifier_state = load_model_file(args.classifier)["model"]
        inputs.append(args.classifier)
    checkpoint = checkpointing(args, inputs)
    with ShardedReader(args.seeds, kind=SEED_KIND, expect={"class_names": index.classes, "round": args.round}) as seeds:
        ids = [i for i in index.ids(s["train_split"]) if i in seeds]
        missing = len(index.ids(s["train_split"])) - len(ids)
        if missing:
            raise SystemExit(f"{missing} training images have no seed map in {args.seeds}")
        model, history = train_seed_network(method, index, ids, seeds, section, s["seed"], device,
                                            threads=args.threads, classifier_state=classifier_state,
                                            world_size=max(1, args.gpus or 1), checkpoint=checkpoint,
                                            scalars=scalars, name=f"{method} network round {args.round}")
    save_model(args.out, model, {"round": args.round, "method": method, "settings": s,
                                 "config_digest": args.config_digest, "loss_history": history,
                                 "class_names": index.classes})
    print(f"[train_{method}] loss per epoch {[round(h, 4) for h in history]}", file=sys.stderr)
    if checkpoint is not None:
        checkpoint.clear()

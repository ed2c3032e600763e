"""Train a round's image-level classifier (Eq. 2), on [X, M_t] in CONTA rounds; the method's own
(``method``: its recipe's ``train_round_classifier``, e.g. SEAM's siamese training).

Resumable: with ``--checkpoint-dir`` the training state is saved every
``--checkpoint-every`` iterations and a restarted job continues from the
newest checkpoint of the same settings and inputs. ``--gpus`` > 1 trains with
DDP, one rank per device (gloo ranks on the CPU).
"""
import sys
from pathlib import Path

import torch

from _common import add_training_args, checkpointing, round_parser, setup

from conta_core import methods
from conta_core.classify import ConfounderInputs, save_model, uses_context
from conta_core.data.index import DatasetIndex
from conta_core.scalars import ScalarLog

if __name__ == "__main__":
    p = round_parser(__doc__)
    p.add_argument("--confounder", type=Path, help="previous round's confounder.h5 (CONTA rounds)")
    add_training_args(p)
    args = p.parse_args()
    s = args.settings
    device = setup(args)
    scalars = ScalarLog(str(args.tensorboard)) if args.tensorboard else None  # fails now if not installed
    index = DatasetIndex.load(args.index_dir)
    confounder = None
    inputs = [args.index_dir / "index.csv", args.index_dir / "classes.json"]
    if uses_context(s["conta"], args.round):
        confounder = ConfounderInputs(args.confounder, index.classes)
        inputs.append(args.confounder)
    checkpoint = checkpointing(args, inputs)
    train_classifier = methods.get(s["method"]).train_round_classifier.load()
    model, history, motion = train_classifier(index, index.ids(s["train_split"]), s["classifier"], s["conta"],
                                      args.round, s["seed"], device, confounder,
                                      world_size=max(1, args.gpus or 1), checkpoint=checkpoint,
                                      scalars=scalars)
    # threads: float results depend on the CPU thread count (reductions are split per thread),
    # so it is part of the artifact's provenance; the ablation runner refuses to mix counts.
    save_model(args.out, model, {"round": args.round, "settings": s, "config_digest": args.config_digest,
                                 "loss_history": history,
                                 "class_names": index.classes, "threads": torch.get_num_threads(),
                                 "context_motion": motion})
    for key, value in motion.items():
        print(f"[train_classifier] {key} {value:.4g}", file=sys.stderr)
    if checkpoint is not None:
        checkpoint.clear()

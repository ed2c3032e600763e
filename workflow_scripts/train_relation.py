"""Train a round's IRNet relation (class-boundary) network on the round's IR labels."""
from pathlib import Path

from _common import round_parser, setup

from conta_core.classify import save_model
from conta_core.data.index import DatasetIndex
from conta_core.expand.irnet import RelationNet, train_relation_net
from conta_core.expand.relation_data import RelationDataset, load_classifier_backbone

if __name__ == "__main__":
    p = round_parser(__doc__)
    p.add_argument("--ir-labels", type=Path, nargs="+", required=True, help="the round's ir_label shards")
    p.add_argument("--classifier", type=Path, help="the round's classifier.pt (train.weights: classifier)")
    args = p.parse_args()
    s = args.settings
    device = setup(args)
    index = DatasetIndex.load(args.index_dir)
    cfg = s["expand"]["irnet"]["train"]
    from_classifier = cfg["weights"] == "classifier"
    if from_classifier and args.classifier is None:
        raise SystemExit("expand.irnet.train.weights is 'classifier' but no --classifier was given")
    model = RelationNet(cfg["backbone"], cfg["output_stride"], "none" if from_classifier else cfg["weights"])
    if from_classifier:
        load_classifier_backbone(model, args.classifier)
    dataset = RelationDataset(index, index.ids(s["train_split"]), args.ir_labels, crop=cfg["crop"],
                              scale_range=tuple(cfg["scale_range"]), seed=s["seed"],
                              expect={"class_names": index.classes, "round": args.round})
    losses = train_relation_net(model, dataset, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                weight_decay=cfg["weight_decay"], momentum=cfg["momentum"],
                                poly_power=cfg["poly_power"], radius=cfg["radius"], num_workers=cfg["num_workers"],
                                device=device, seed=s["seed"], name=f"relation net round {args.round}")
    save_model(args.out, model, {"round": args.round, "settings": s, "config_digest": args.config_digest,
                                 "loss_history": losses,
                                 "class_names": index.classes})

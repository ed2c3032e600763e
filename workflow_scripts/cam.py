"""Multi-scale CAMs of one shard of the training split."""
import sys
from pathlib import Path

from tqdm import tqdm

from _common import parser, provenance, setup, shard_ids

from conta_core.cam import infer_cam
from conta_core.classify import ConfounderInputs, build_classifier, load_model, uses_context
from conta_core.data.index import DatasetIndex
from conta_core.store import MapWriter

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--index-dir", type=Path, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--confounder", type=Path)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    s = args.settings
    device = setup(args)
    index = DatasetIndex.load(args.index_dir)
    confounder = ConfounderInputs(args.confounder, index.classes) if uses_context(s["conta"], args.round) else None
    model = build_classifier(s["classifier"], index.num_classes, s["conta"], args.round, confounder,
                             load_weights=False)
    load_model(args.classifier, model)
    model.to(device).eval()
    ids = shard_ids(index.ids(s["train_split"]), args.shard, s["shards"])
    attrs = provenance("cam", args.round, s, index.classes, shard=args.shard, shards=s["shards"])
    with MapWriter(args.out, kind="cam", attrs=attrs) as writer:
        for image_id in tqdm(ids, desc=f"CAM shard {args.shard}", file=sys.stderr, mininterval=5.0):
            classes = index.labels(image_id)
            x_m = confounder.x_m(image_id) if confounder is not None else None
            cams = infer_cam(model, index.read_image(image_id), classes, s["cam"]["scales"], s["cam"]["flip"],
                             device, x_m)
            writer.put(image_id, cams.astype("float16"), classes=classes)

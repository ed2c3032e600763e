"""AffinityNet's confident labels of one CAM shard: dense-CRF-refined foreground at background power
alpha_low, background at alpha_high, 255 unsure (full resolution, so crops and flips apply)."""
import sys
from pathlib import Path

from tqdm import tqdm

from _common import provenance, round_parser, setup, shard_ids

from conta_core.data.index import DatasetIndex
from conta_core.expand.affinitynet import make_aff_label
from conta_core.store import MapReader, MapWriter

if __name__ == "__main__":
    p = round_parser(__doc__, shard=True)
    p.add_argument("--cam", type=Path, required=True)
    args = p.parse_args()
    s = args.settings
    setup(args)
    index = DatasetIndex.load(args.index_dir)
    cfg = s["expand"]["affinitynet"]
    ids = shard_ids(index.ids(s["train_split"]), args.shard, s["shards"])
    attrs = provenance("aff_label", args.round, s, index.classes, shard=args.shard, shards=s["shards"],
                       alpha_low=cfg["alpha_low"], alpha_high=cfg["alpha_high"])
    counts = {"fg": 0, "bg": 0, "unsure": 0}
    with MapReader(args.cam, kind="cam", expect={"class_names": index.classes, "round": args.round,
                                                  "shard": args.shard, "shards": s["shards"]}) as cams, \
            MapWriter(args.out, kind="aff_label", attrs=attrs) as writer:
        if set(cams.ids()) != set(ids):
            raise SystemExit(f"{args.cam} holds {len(cams)} images, shard {args.shard}/{s['shards']} of "
                             f"{s['train_split']} has {len(ids)}: the CAM file is stale")
        for image_id in tqdm(writer.pending(ids), desc=f"aff label shard {args.shard}", file=sys.stderr,
                             mininterval=5.0):
            classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
            cam = cams.get(image_id).astype("float32", copy=False)
            label = make_aff_label(index.read_image(image_id), cam, classes,
                                   alpha_low=cfg["alpha_low"], alpha_high=cfg["alpha_high"], crf=cfg["crf"])
            writer.put(image_id, label, classes=classes)
            counts["fg"] += int(((label != 0) & (label != 255)).sum())
            counts["bg"] += int((label == 0).sum())
            counts["unsure"] += int((label == 255).sum())
    total = max(sum(counts.values()), 1)
    print("confident label pixels (this run's images): "
          + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in counts.items()), file=sys.stderr)

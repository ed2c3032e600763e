"""AffinityNet's confident labels of one CAM shard: dense-CRF-refined foreground at background power
alpha_low, background at alpha_high, 255 unsure (full resolution, so crops and flips apply).

The two dense CRFs per image run in ``--threads`` worker processes (one when 1),
spawned: they import this script again, so its module-level imports stay
torch-free (conta_core.expand.aff_label is numpy + pydensecrf). The CAMs are read
here, in the main process (the store reader holds the open file), and the labels
are written in the shard's order whatever the number of workers.
"""
import sys
from pathlib import Path

from _common import provenance, round_parser, setup, shard_ids

from conta_core.expand.aff_label import make_aff_label


def label_task(image, cam, classes, cfg):
    """One image's confident labels (runs in a worker): the arguments are arrays and plain values."""
    return make_aff_label(image, cam, classes, alpha_low=cfg["alpha_low"], alpha_high=cfg["alpha_high"],
                          crf=cfg["crf"])


if __name__ == "__main__":
    from tqdm import tqdm

    from conta_core.data.index import DatasetIndex
    from conta_core.parallel import ProcessMap
    from conta_core.store import MapReader, MapWriter

    p = round_parser(__doc__, shard=True)
    p.add_argument("--cam", type=Path, required=True)
    args = p.parse_args()
    s = args.settings
    setup(args, uses_torch=False)
    index = DatasetIndex.load(args.index_dir)
    cfg = s["expand"]["affinitynet"]
    task_cfg = {k: cfg[k] for k in ("alpha_low", "alpha_high", "crf")}
    ids = shard_ids(index.ids(s["train_split"]), args.shard, s["shards"])
    attrs = provenance("aff_label", args.round, s, index.classes, shard=args.shard, shards=s["shards"],
                       alpha_low=cfg["alpha_low"], alpha_high=cfg["alpha_high"])
    counts = {"fg": 0, "bg": 0, "unsure": 0}
    with MapReader(args.cam, kind="cam", expect={"class_names": index.classes, "round": args.round,
                                                  "shard": args.shard, "shards": s["shards"]}) as cams, \
            MapWriter(args.out, kind="aff_label", attrs=attrs) as writer, \
            ProcessMap(max(1, args.threads)) as pool:
        if set(cams.ids()) != set(ids):
            raise SystemExit(f"{args.cam} holds {len(cams)} images, shard {args.shard}/{s['shards']} of "
                             f"{s['train_split']} has {len(ids)}: the CAM file is stale")
        todo = list(writer.pending(ids))  # a resumed shard keeps what its killed run wrote

        def tasks():
            # Read lazily: at most ``pending`` images' arrays are in flight (ProcessMap.ordered).
            for image_id in todo:
                classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
                cam = cams.get(image_id).astype("float32", copy=False)
                yield (image_id, classes), (index.read_image(image_id), cam, classes, task_cfg)

        for (image_id, classes), label in tqdm(pool.ordered(label_task, tasks()), total=len(todo),
                                               desc=f"aff label shard {args.shard}", file=sys.stderr,
                                               mininterval=5.0):
            writer.put(image_id, label, classes=classes)
            counts["fg"] += int(((label != 0) & (label != 255)).sum())
            counts["bg"] += int((label == 0).sum())
            counts["unsure"] += int((label == 255).sum())
    total = max(sum(counts.values()), 1)
    print("confident label pixels (this run's images): "
          + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in counts.items()), file=sys.stderr)

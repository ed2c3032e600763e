"""IRNet's inter-pixel relation labels of one CAM shard: CRF-refined confident fg/bg, 255 unsure.

The two dense CRFs per image run in ``--threads`` worker processes (one when 1),
spawned: they import this script again, so its module-level imports stay
torch-free (conta_core.expand.ir_label is numpy + pydensecrf). The CAMs are read
here, in the main process (the store reader holds the open file), and the labels
are written in the shard's order whatever the number of workers.
"""
import sys
from pathlib import Path

from _common import provenance, round_parser, setup, shard_ids

from conta_core.expand.ir_label import make_ir_label


def label_task(image, cam, classes, levels, cfg):
    """One image's IR label (runs in a worker): the arguments are arrays and plain values."""
    return make_ir_label(image, cam, classes, conf_fg=cfg["conf_fg"], conf_bg=cfg["conf_bg"],
                         gt_prob=cfg["gt_prob"], crf_params=cfg["crf"], levels=levels)


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
    cfg = s["expand"]["irnet"]["ir_label"]
    task_cfg = {k: cfg[k] for k in ("conf_fg", "conf_bg", "gt_prob", "crf")}
    ids = shard_ids(index.ids(s["train_split"]), args.shard, s["shards"])
    attrs = provenance("ir_label", args.round, s, index.classes, shard=args.shard, shards=s["shards"],
                       conf_fg=cfg["conf_fg"], conf_bg=cfg["conf_bg"])
    counts = {"fg": 0, "bg": 0, "unsure": 0}
    with MapReader(args.cam, kind="cam", expect={"class_names": index.classes, "round": args.round,
                                                  "shard": args.shard, "shards": s["shards"]}) as cams, \
            MapWriter(args.out, kind="ir_label", attrs=attrs) as writer, \
            ProcessMap(max(1, args.threads)) as pool:
        if set(cams.ids()) != set(ids):
            raise SystemExit(f"{args.cam} holds {len(cams)} images, shard {args.shard}/{s['shards']} of "
                             f"{s['train_split']} has {len(ids)}: the CAM file is stale")

        def tasks():
            # Read lazily: at most ``pending`` images' arrays are in flight (ProcessMap.ordered).
            for image_id in ids:
                classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
                # Thresholds and arg-max only: exact on the stored levels, which skip the float32 read.
                cam, levels = cams.get_levels(image_id) if cams.levels else (cams.get(image_id), None)
                yield (image_id, classes), (index.read_image(image_id), cam, classes, levels, task_cfg)

        for (image_id, classes), label in tqdm(pool.ordered(label_task, tasks()), total=len(ids),
                                               desc=f"IR label shard {args.shard}", file=sys.stderr,
                                               mininterval=5.0):
            writer.put(image_id, label, classes=classes)
            counts["fg"] += int(((label != 0) & (label != 255)).sum())
            counts["bg"] += int((label == 0).sum())
            counts["unsure"] += int((label == 255).sum())
    total = max(sum(counts.values()), 1)
    print("IR label pixels: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in counts.items()),
          file=sys.stderr)

"""Render one shard of COCO semantic masks (crowd = 255) into HDF5, as the index plans it."""
from pathlib import Path
import sys

from _common import parser

from conta_core.data.coco import annotation_file, planned_shard_ids, render_coco_masks
from conta_core.data.index import DatasetError, DatasetIndex

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--plan-dir", type=Path, required=True, help="folder of the planned index")
    p.add_argument("--root", type=Path, required=True, help="COCO root (annotations/, train2014/, ...)")
    p.add_argument("--split", required=True, choices=["train", "val"])
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    try:
        index = DatasetIndex.load(args.plan_dir)
        ids = planned_shard_ids(index, args.out)
        ann_file = annotation_file(args.root, args.split)
        print(f"{args.split} shard {args.shard}: {len(ids)} masks from {ann_file}", file=sys.stderr)
        render_coco_masks(ann_file, ids, args.out)
    except DatasetError as err:
        print(f"render_coco_masks: {err}", file=sys.stderr)
        sys.exit(1)

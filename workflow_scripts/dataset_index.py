"""Build and validate the dataset index (ids, splits, image-level labels, sizes).

Two modes:

- build (default): read and validate the dataset, write ``index.csv``,
  ``classes.json``, ``report.md`` (and, for VOC 2012 + SBD, ``sbd_masks.h5``)
  into ``--out-dir``. For COCO the mask column names HDF5 shards under
  ``--mask-dir`` that the ``render_coco_masks`` rule renders afterwards.
- ``--publish PLAN_DIR``: check the rendered COCO mask shards (``--mask-shards``)
  against the plan in PLAN_DIR, then copy the plan's index into ``--out-dir``,
  where every later step reads it.

A dataset that fails validation exits with status 1 and one message that
lists every bad item with its id and file(s); nothing is written then.
"""
import sys
import warnings
from pathlib import Path

from _common import parser

from conta_core.data.index import DatasetError, DatasetIndex, build_index, publish_index


def build(args) -> DatasetIndex:
    settings = dict(args.settings)
    if args.root is not None:
        settings["root"] = str(args.root)
    with warnings.catch_warnings(record=True) as caught:
        # The skip-mode summary ("skipped N bad item(s); see report.md") goes to the log as a plain line.
        warnings.simplefilter("always", UserWarning)
        index = build_index(settings, args.out_dir, args.mask_dir)
    for warning in caught:
        print(f"dataset_index: {warning.message}", file=sys.stderr)
    return index


def publish(args) -> DatasetIndex:
    from conta_core.data.coco import check_mask_shards

    plan = DatasetIndex.load(args.publish)
    check_mask_shards(plan, args.mask_shards)
    print(f"{len(args.mask_shards)} mask shard(s) match the plan in {args.publish}", file=sys.stderr)
    return publish_index(args.publish, args.out_dir)


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, help="dataset root (overrides settings.root)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--mask-dir", type=Path, default=None,
                   help="folder of masks rendered after indexing (COCO shards); default --out-dir")
    p.add_argument("--publish", type=Path, default=None, metavar="PLAN_DIR",
                   help="publish a finished plan (after its mask shards are rendered)")
    p.add_argument("--mask-shards", type=Path, nargs="*", default=[],
                   help="with --publish: the rendered mask shard files")
    args = p.parse_args()
    try:
        index = publish(args) if args.publish is not None else build(args)
    except DatasetError as err:
        print(f"dataset_index: {err}", file=sys.stderr)
        sys.exit(1)
    for split in index.splits():
        print(f"split {split}: {len(index.ids(split))} images")

"""Build and validate the dataset index (ids, splits, image-level labels, sizes)."""
from pathlib import Path

from _common import parser

from conta_core.data.index import build_index

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--root", type=Path, help="dataset root (overrides settings.root)")
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args()
    settings = dict(args.settings)
    if args.root is not None:
        settings["root"] = str(args.root)
    index = build_index(settings, args.out_dir)
    for split in index.splits():
        print(f"split {split}: {len(index.ids(split))} images")

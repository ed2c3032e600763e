"""Expand one shard's CAM seeds into pseudo-masks (method chosen by expand.method)."""
import sys
from pathlib import Path

from tqdm import tqdm

from _common import parser, provenance, setup

from conta_core.data.index import DatasetIndex
from conta_core.expand.crf import expand_crf
from conta_core.store import MapReader, MapWriter

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--index-dir", type=Path, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--cam", type=Path, required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    s = args.settings
    setup(args)
    index = DatasetIndex.load(args.index_dir)
    method = s["expand"]["method"]
    if method != "crf":
        raise SystemExit(f"expand.method {method!r} is not available in this step")
    crf = dict(s["expand"]["crf"])
    bg_threshold, bg_power = crf.pop("bg_threshold"), crf.pop("bg_power")
    attrs = provenance("expand", args.round, s, index.classes, method=method, shard=args.shard)
    with MapReader(args.cam, kind="cam", expect={"class_names": index.classes, "round": args.round}) as cams, \
            MapWriter(args.out, kind="pseudo_mask", attrs=attrs) as writer:
        for image_id in tqdm(cams.ids(), desc=f"expand shard {args.shard}", file=sys.stderr, mininterval=5.0):
            classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
            mask = expand_crf(index.read_image(image_id), cams.get(image_id).astype("float32"), classes,
                              bg_threshold=bg_threshold, bg_power=bg_power, crf=crf)
            writer.put(image_id, mask)

"""Seed maps of one CAM shard for SEC or DSRG (expand.method sec | dsrg).

Foreground: the top ``fg_fraction`` of each labelled class's CAM; background: SEC's
10 % least salient pixels of the round classifier's gradient saliency (needs
``--classifier``), or DSRG's saliency < 0.06 (``dataset.saliency_root`` maps, else the
OpenCV stand-in; no torch). See conta_core/seeds_step.py.
"""
import sys
from pathlib import Path

from tqdm import tqdm

from _common import provenance, round_parser, setup, shard_ids

from conta_core.data.index import DatasetIndex
from conta_core.expand.seeds import SEED_KIND
from conta_core.seeds_step import classifier_without_m, dsrg_background, make_seeds, sec_background
from conta_core.store import MapReader, MapWriter

if __name__ == "__main__":
    p = round_parser(__doc__, shard=True)
    p.add_argument("--cam", type=Path, required=True)
    p.add_argument("--classifier", type=Path, help="the round's classifier.pt (SEC's gradient saliency)")
    args = p.parse_args()
    s = args.settings
    method = s["expand"]["method"]
    cfg = s["expand"][method]["seeds"]
    gradient = method == "sec" and cfg.get("background", "gradient_saliency") == "gradient_saliency"
    device = setup(args, uses_torch=gradient)
    index = DatasetIndex.load(args.index_dir)
    if gradient:
        if args.classifier is None:
            raise SystemExit("expand.sec.seeds.background gradient_saliency needs --classifier (the round's classifier.pt)")
        background = sec_background(classifier_without_m(args.classifier, index.num_classes).to(device), device,
                                    cfg["bg_fraction"])
    elif method == "dsrg":
        background = dsrg_background(index, s.get("saliency_root"), cfg["saliency_threshold"])
    else:
        raise SystemExit(f"expand.method {method!r} has no seeds step")
    ids = shard_ids(index.ids(s["train_split"]), args.shard, s["shards"])
    attrs = provenance("seeds", args.round, s, index.classes, method=method, shard=args.shard, shards=s["shards"])
    with MapReader(args.cam, kind="cam", expect={"class_names": index.classes, "round": args.round,
                                                  "shard": args.shard, "shards": s["shards"]}) as cams, \
            MapWriter(args.out, kind=SEED_KIND, attrs=attrs) as writer:
        if set(cams.ids()) != set(ids):
            raise SystemExit(f"{args.cam} holds {len(cams)} images, shard {args.shard}/{s['shards']} of "
                             f"{s['train_split']} has {len(ids)}: the CAM file is stale")
        progress = tqdm(total=len(ids), desc=f"seeds ({method}) shard {args.shard}", file=sys.stderr, mininterval=5.0)
        shares = make_seeds(index, ids, cams, writer, background, fraction=cfg["fg_fraction"], rule=cfg["fg_rule"],
                            progress=progress)
        progress.close()
    print("[seeds] pixels: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items()), file=sys.stderr)

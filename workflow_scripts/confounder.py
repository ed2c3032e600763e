"""Build the confounder set C_{t+1} and the reduced masks X_m from a round's masks.

``conta.mode: permuted`` stores, for every image, the X_m of another image (a
derangement fixed by the seed); ``oracle`` builds C and X_m from the
ground-truth masks instead of the round's masks (research only).
"""
from pathlib import Path

from _common import provenance, round_parser, setup

from conta_core.confounder import build_confounder, derangement, reduce_foreground
from conta_core.data.index import DatasetIndex
from conta_core.store import MapWriter, ShardedReader

if __name__ == "__main__":
    p = round_parser(__doc__)
    p.add_argument("--masks", type=Path, nargs="+", required=True,
                   help="the round's predicted train masks (seg_mask) or pseudo-masks (pseudo_mask)")
    args = p.parse_args()
    s = args.settings
    setup(args, uses_torch=False)
    index = DatasetIndex.load(args.index_dir)
    source = s["confounder"]["source"]
    mode = s["conta"]["mode"]
    kind = {"seg_mask": "seg_pred", "pseudo_mask": "pseudo_mask"}[source]
    size = tuple(s["conta"]["map_size"])
    ids = index.ids(s["train_split"])
    with ShardedReader(args.masks, kind=kind, expect={"class_names": index.classes, "round": args.round}) as masks:
        missing = [i for i in ids if i not in masks]
        if missing:
            raise SystemExit(f"{len(missing)} training images have no mask in {args.masks}, e.g. {missing[:5]}")
        if mode == "oracle":
            print("[confounder] conta.mode oracle: C and X_m from the GROUND-TRUTH masks (research upper bound)")
            get_mask, x_m_source = index.read_mask, "ground_truth"
        else:
            get_mask, x_m_source = masks.get, source
        confounder, counts = build_confounder(((get_mask(i), index.labels(i)) for i in ids),
                                              index.num_classes, size)
        partner = derangement(ids, s["seed"]) if mode == "permuted" else {i: i for i in ids}
        attrs = provenance("confounder", args.round, s, index.classes, source=source, map_size=list(size),
                           x_m_source=x_m_source, x_m_pairing="permuted" if mode == "permuted" else "own")
        with MapWriter(args.out, kind="confounder", attrs=attrs) as writer:
            writer.put_array("confounder", confounder)
            writer.put_array("counts", counts)
            for image_id in ids:
                writer.put(image_id, reduce_foreground(get_mask(partner[image_id]), size, index.void))
    for name, count in zip(index.classes[1:], counts):
        print(f"c_{name}: {count} images, mean mask {confounder[index.classes.index(name) - 1].mean():.3f}")

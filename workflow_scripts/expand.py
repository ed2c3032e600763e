"""Expand one shard's CAM seeds into pseudo-masks (method chosen by expand.method: crf | irnet | sec | dsrg).

Each expand.method is an expander here, ``make(s, args, device, workers) -> (expand, batch_size)``
with ``expand(images, cams, classes) -> masks``, listed in EXPANDERS; a new method adds its
function and, for a network of its own, its argument (the rules pass it: rules/<method>.smk).
"""
import sys
from functools import partial
from pathlib import Path

from tqdm import tqdm

from _common import provenance, round_parser, setup, shard_ids

from conta_core.cam_labels import same_size_batches
from conta_core.data.index import DatasetIndex
from conta_core.parallel import ProcessMap
from conta_core.store import MapReader, MapWriter

CRF_BATCH = 32  # images handed to the CRF workers at once (and written together)


def crf_expander(s, args, device, workers: ProcessMap):
    """expand(images, cams, classes) -> masks, one dense CRF per image, spread over the workers."""
    from conta_core.expand.crf import expand_crf

    crf = dict(s["expand"]["crf"])
    bg_threshold, bg_power = crf.pop("bg_threshold"), crf.pop("bg_power")
    expand_one = partial(expand_crf, bg_threshold=bg_threshold, bg_power=bg_power, crf=crf)

    def expand(images, cams, classes):
        return workers(expand_one, images, cams, classes)
    return expand, CRF_BATCH


def irnet_expander(s, args, device, workers: ProcessMap):
    """Boundary maps of the round's relation network (same-sized images in one pass), then each
    image's random walk of its CAMs over them."""
    import torch

    from conta_core.checkpoint import load_model_file
    from conta_core.data.datasets import to_tensor
    from conta_core.expand.irnet import RelationNet, expand_irnet, predict_boundaries

    relation_net, round_index = args.relation_net, args.round
    if relation_net is None:
        raise SystemExit("expand.method irnet needs --relation-net (the round's relation_net.pt)")
    # The checkpoint's own settings say which network to build; built with random
    # weights (never a download), then the trained checkpoint is loaded over them.
    state = load_model_file(relation_net)  # verified: a damaged file is deleted for a rebuild
    meta = state["meta"]
    if meta.get("round") != round_index:
        raise SystemExit(f"{relation_net} is round {meta.get('round')}'s relation network, not round {round_index}'s")
    train = meta["settings"]["expand"]["irnet"]["train"]
    model = RelationNet(train["backbone"], train["output_stride"], "none")
    model.load_state_dict(state["model"])
    model.to(device).eval()
    walk = s["expand"]["irnet"]["walk"]
    print(f"relation network {relation_net}: trained with {train}; walk {walk}", file=sys.stderr)

    def expand(images, cams, classes):
        boundaries = predict_boundaries(model, torch.stack([to_tensor(image) for image in images]))
        return [expand_irnet(cam, boundary, cls, image_size=image.shape[:2], beta=walk["beta"],
                             exp_times=walk["exp_times"], radius=walk["radius"],
                             bg_threshold=walk["bg_threshold"], normalize=walk["normalize"], device=device)
                for image, cam, cls, boundary in zip(images, cams, classes, boundaries)]
    return expand, walk["batch_size"]


def affinitynet_expander(s, args, device, workers: ProcessMap):
    """Each image's AffinityNet features (padded to a multiple of 8), then the random walk of its
    CAMs over their affinities (SEAM's expansion)."""
    from conta_core.checkpoint import load_model_file
    from conta_core.data.datasets import to_tensor
    from conta_core.expand.affinitynet import expand_affinitynet, image_features
    from conta_core.expand.affinitynet_train import build_affinity_net

    if args.affinity_net is None:
        raise SystemExit("expand.method affinitynet needs --affinity-net (the round's affinity_net.pt)")
    state = load_model_file(args.affinity_net)  # verified: a damaged file is deleted for a rebuild
    meta = state["meta"]
    if meta.get("round") != args.round:
        raise SystemExit(f"{args.affinity_net} is round {meta.get('round')}'s affinity network, not round "
                         f"{args.round}'s")
    model = build_affinity_net(meta["settings"]["expand"]["affinitynet"]["train"], load_weights=False)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    cfg = s["expand"]["affinitynet"]
    walk = {key: cfg[key] for key in ("alpha", "beta", "steps", "radius")}
    print(f"affinity network {args.affinity_net}; walk {walk}", file=sys.stderr)

    def expand(images, cams, classes):
        return [expand_affinitynet(cam, image_features(model, to_tensor(image).to(device)), cls,
                                   image.shape[:2], **walk)
                for image, cam, cls in zip(images, cams, classes)]
    return expand, 1


def seed_net_expander(s, args, device, workers: ProcessMap):
    """SEC / DSRG: the round's network predicts each image (background + its classes), the dense
    CRF (expand.<method>.pseudo_mask.crf) refines it over the workers; the CAMs are not read."""
    from conta_core.checkpoint import load_model_file
    from conta_core.expand.seed_net import build_network, pseudo_masks

    method = s["expand"]["method"]
    if args.seed_net is None:
        raise SystemExit(f"expand.method {method} needs --seed-net (the round's {method}_net.pt)")
    state = load_model_file(args.seed_net)  # verified: a damaged file is deleted for a rebuild
    meta = state["meta"]
    if meta.get("round") != args.round or meta.get("method") != method:
        raise SystemExit(f"{args.seed_net} is round {meta.get('round')}'s {meta.get('method')} network, "
                         f"not round {args.round}'s {method} network")
    train = meta["settings"]["expand"][method]["train"]
    model = build_network(method, len(meta["class_names"]), train, load_weights=False)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    crf = s["expand"][method]["pseudo_mask"]["crf"]

    def expand(images, cams, classes):
        return pseudo_masks(model, images, classes, device, crf, workers)
    return expand, CRF_BATCH


EXPANDERS = {"crf": crf_expander, "irnet": irnet_expander, "sec": seed_net_expander, "dsrg": seed_net_expander}
EXPANDERS["affinitynet"] = affinitynet_expander
USES_TORCH = {"crf": False}  # the CRF is numpy and pydensecrf only
PARALLEL = {"crf", "sec", "dsrg"}  # spread their images (CRFs) over one worker process per thread


if __name__ == "__main__":
    p = round_parser(__doc__, shard=True)
    p.add_argument("--cam", type=Path, required=True)
    p.add_argument("--relation-net", type=Path, help="the round's relation_net.pt (method irnet)")
    p.add_argument("--affinity-net", type=Path, help="the round's affinity_net.pt (method affinitynet)")
    p.add_argument("--seed-net", type=Path, help="the round's sec_net.pt / dsrg_net.pt (methods sec, dsrg)")
    args = p.parse_args()
    s = args.settings
    method = s["expand"]["method"]
    if method not in EXPANDERS:
        raise SystemExit(f"expand.method {method!r} is not available in this step (expanders: {sorted(EXPANDERS)})")
    device = setup(args, uses_torch=USES_TORCH.get(method, True))
    index = DatasetIndex.load(args.index_dir)
    ids = shard_ids(index.ids(s["train_split"]), args.shard, s["shards"])
    attrs = provenance("expand", args.round, s, index.classes, method=method, shard=args.shard, shards=s["shards"])
    with MapReader(args.cam, kind="cam", expect={"class_names": index.classes, "round": args.round,
                                                  "shard": args.shard, "shards": s["shards"]}) as cams, \
            MapWriter(args.out, kind="pseudo_mask", attrs=attrs) as writer, \
            ProcessMap(args.threads if method in PARALLEL else 1) as workers:
        if set(cams.ids()) != set(ids):
            raise SystemExit(f"{args.cam} holds {len(cams)} images, shard {args.shard}/{s['shards']} of "
                             f"{s['train_split']} has {len(ids)}: the CAM file is stale")
        expand, batch_size = EXPANDERS[method](s, args, device, workers)
        todo = writer.pending(ids)  # a resumed shard keeps the pseudo-masks its killed run wrote
        progress = tqdm(total=len(todo), desc=f"expand ({method}) shard {args.shard}", file=sys.stderr,
                        mininterval=5.0)
        for batch in same_size_batches(todo, index.size, batch_size):
            classes = [[int(c) for c in cams.item_attrs(i)["classes"]] for i in batch]
            maps = [cams.get(i).astype("float32", copy=False) for i in batch]  # float32 already: no copy
            masks = expand([index.read_image(i) for i in batch], maps, classes)
            for image_id, mask in zip(batch, masks):
                writer.put(image_id, mask)
            progress.update(len(batch))
        progress.close()

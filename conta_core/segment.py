"""Step 3 of CONTA: DeepLab-v2 trained on the pseudo-masks, and its predictions."""
from __future__ import annotations

import sys
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .cam_labels import same_size_batches
from .checkpoint import CHECKSUM_KEY, payload_digest
from .crf import crf_labels
from .data.datasets import SegmentationDataset, to_tensor
from .data.images import resize_mask, working_size
from .models.backbone import build_resnet
from .models.deeplab import DeepLabV2, msc_loss
from .parallel import ProcessMap
from .scalars import ScalarLog
from .train import Checkpointing, TrainJob, TrainSettings, train_job


def build_segmenter(settings: dict, num_classes: int, *, load_weights: bool = True) -> DeepLabV2:
    backbone = build_resnet(settings["backbone"], settings["output_stride"],
                            settings["weights"] if load_weights else "none",
                            settings.get("freeze_bn", True), settings.get("freeze_conv1", True))
    return DeepLabV2(backbone, num_classes, settings["aspp_rates"], settings["msc_scales"])


# Written into segmenter.pt's meta by train_segmenter.py; a checkpoint without it is
# from before the mark (still loaded when its meta has what a segmenter needs).
SEGMENTER_FORMAT = "conta-segmenter/1"


class CheckpointError(ValueError):
    """A file that is not a loadable CONTA segmenter checkpoint."""


def load_segmenter(path) -> tuple[DeepLabV2, dict]:
    """The DeepLab of a ``segmenter.pt`` built from the checkpoint's own settings, and its meta
    (``class_names``, ``settings``, ``round``; since the format mark also ``palette``, ``void``,
    ``max_side``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign files (pickle, zip, magic number)
        raise CheckpointError(f"{path}: cannot be loaded as a torch checkpoint with weights_only=True "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a CONTA checkpoint (no 'model' and 'meta' entries; "
                              "a checkpoint of another tool?)")
    fmt = meta.get("format")
    segment = (meta.get("settings") or {}).get("segment")
    if fmt not in (None, SEGMENTER_FORMAT) or not isinstance(segment, dict) or not meta.get("class_names"):
        raise CheckpointError(f"{path}: a CONTA checkpoint but not a segmenter (format {fmt!r}; a "
                              "classifier.pt or relation_net.pt?); give results/<run>/round<T>/segmenter.pt")
    stored, actual = state.get(CHECKSUM_KEY), payload_digest(state)
    if stored != actual:  # never deleted here: the file may be the user's only copy
        raise CheckpointError(f"{path}: damaged or written by an older version ({CHECKSUM_KEY} "
                              f"{str(stored)[:12]}..., content hashes to {actual[:12]}...)")
    model = build_segmenter(segment, len(meta["class_names"]), load_weights=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the DeepLab its settings describe ({err})") from err
    return model.eval(), meta


SEGMENT_LOSSES = ("ce", "balanced_ce")


def _scale_terms(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, balanced: bool,
                 reduce=None) -> tuple[torch.Tensor, float]:
    """(numerator, denominator) of one scale's loss; the loss is their ratio.

    Labels are resized to the logits by nearest neighbour; n_c counts the
    non-ignored pixels of class c (``reduce`` sums the counts over DDP ranks).

    - ``ce``: sum_i CE_i / sum_c n_c, the mean over labelled pixels.
    - ``balanced_ce``: sum_i CE_i / n_{y_i} / |P|, with P = {c : n_c > 0} the
      classes present in the batch's pseudo-masks: the mean over the present
      classes of each class's mean pixel loss. A class that covers 2% of the
      batch weighs as much as the background that covers 70%; absent classes
      get no weight (no division by zero).
    """
    target = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    counts = torch.bincount(target[target != ignore_index], minlength=logits.shape[1]).to(torch.float64)
    if reduce is not None:
        reduce(counts)
    if not balanced:
        return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum"), counts.sum().item()
    present = counts > 0
    weight = torch.where(present, 1.0 / counts.clamp(min=1), torch.zeros_like(counts)).float()
    summed = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index, reduction="sum")
    return summed, present.sum().item()


def _segment_loss_global(model: DeepLabV2, batch: dict, *, ignore_index: int, ctx,
                         balanced: bool = False) -> torch.Tensor:
    """The segmentation loss for one DDP rank, normalised by *global* pixel counts.

    Each rank's sum is divided by the denominator over all ranks (labelled
    pixels; for ``balanced_ce`` the classes present and their counts) and
    multiplied by the world size, so that DDP's gradient average equals the
    gradient of the single-process loss over the global batch (a per-rank mean
    would weight ranks with few labelled pixels up).
    """
    total = 0.0
    for logits in model(batch["image"]):
        summed, norm = _scale_terms(logits, batch["label"], ignore_index, balanced, reduce=dist.all_reduce)
        total = total + summed * (ctx.world_size / max(norm, 1.0))
    return total


def _segment_loss(model: DeepLabV2, batch: dict, *, ignore_index: int, balanced: bool = False) -> torch.Tensor:
    if not balanced:
        return msc_loss(model(batch["image"]), batch["label"], ignore_index)
    total = 0.0
    for logits in model(batch["image"]):
        summed, norm = _scale_terms(logits, batch["label"], ignore_index, True)
        total = total + summed / max(norm, 1.0)
    return total


def _segmenter_job(index, ids: list[str], masks, settings: dict, seed: int, ctx) -> TrainJob:
    """Model, data, loss and optimizer groups of DeepLab (run in every DDP rank)."""
    torch.manual_seed(seed)
    model = build_segmenter(settings, index.num_classes)
    dataset = SegmentationDataset(index, ids, masks, crop=settings["crop"],
                                  scale_range=tuple(settings["scale_range"]), seed=seed, ignore_index=index.void)
    groups = model.param_groups()
    # DeepLab-v2: 10x lr on the ASPP weights, 20x and no weight decay on its biases.
    opt_groups = [{"params": groups["backbone"], "lr_mult": 1.0},
                  {"params": groups["aspp_weight"], "lr_mult": 10.0},
                  {"params": groups["aspp_bias"], "lr_mult": 20.0, "weight_decay": 0.0}]
    name = settings.get("loss", "ce")
    if name not in SEGMENT_LOSSES:
        raise ValueError(f"config key segment.loss must be one of {SEGMENT_LOSSES}, got {name!r}")
    if ctx.world_size > 1:
        loss = partial(_segment_loss_global, ignore_index=index.void, ctx=ctx, balanced=name == "balanced_ce")
    else:
        loss = partial(_segment_loss, ignore_index=index.void, balanced=name == "balanced_ce")
    return TrainJob(model, dataset, loss, opt_groups)


def train_segmenter(index, ids: list[str], masks, settings: dict, seed: int, device: torch.device,
                    round_index: int, *, world_size: int = 1, checkpoint: Checkpointing | None = None,
                    scalars: ScalarLog | None = None) -> tuple[DeepLabV2, list[float]]:
    """Train the round's DeepLab; ``world_size`` > 1 trains with DDP (see :func:`train_job`)."""
    build = partial(_segmenter_job, index, ids, masks, settings, seed)
    result = train_job(build, TrainSettings.from_config(settings, seed), device, f"segmenter round {round_index}",
                       world_size=world_size, checkpoint=checkpoint, scalars=scalars)
    model = build_segmenter(settings, index.num_classes, load_weights=False)
    model.load_state_dict(result.state_dict)
    return model.eval(), result.history


# The longest side DeepLab and the CRF predict at: a larger image is
# predicted downscaled and its mask scaled back by nearest neighbour, so the memory of a
# prediction is bounded whatever the image size (bench/predict_memory.py, numbers in
# bench/predict_memory.md).
PREDICT_MAX_SIDE = 1024


def _downscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _crf_task(labels: int):
    """The worker's function: the uint8 argmax of an image's refined probabilities
    (:func:`conta_core.crf.crf_labels`, torch-free, so spawned workers load no torch)."""
    return partial(crf_labels, labels=tuple(range(labels)), max_side=None)


@torch.no_grad()
def _network(model: DeepLabV2, images: list[np.ndarray], device: torch.device, crf: bool,
             max_side: int | None) -> tuple[list[np.ndarray], np.ndarray]:
    """(images at the working size, their softmax maps [N, L, h, w] float32 with ``crf``,
    else their uint8 argmax masks [N, h, w])."""
    height, width = images[0].shape[:2]
    size = working_size(height, width, max_side)
    if size != (height, width):
        images = [_downscale(image, *size) for image in images]
    logits = model.predict(torch.stack([to_tensor(image) for image in images]).to(device))
    if not crf:
        return images, logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
    return images, torch.softmax(logits, dim=1).cpu().numpy()


def predict_masks(model: DeepLabV2, images: list[np.ndarray], device: torch.device, crf: bool,
                  max_side: int | None = PREDICT_MAX_SIDE) -> list[np.ndarray]:
    """uint8 [H, W] masks of same-sized images, predicted in one pass; images with a side over
    ``max_side`` (None: no limit) are predicted at that size and their masks scaled back.
    The dense CRFs run here, one after another (a split's: :func:`predict_split`)."""
    height, width = images[0].shape[:2]
    small, out = _network(model, images, device, crf, max_side)
    if crf:
        task = _crf_task(out.shape[1])
        out = [task(image, p) for image, p in zip(small, out)]
    return [resize_mask(mask, height, width) for mask in out]


def oversized(ids: list, size_of, max_side: int | None, limit: str = "the prediction max side") -> str | None:
    """A warning naming the images predicted downscaled past ``max_side`` (None if there are none)."""
    big = [(i, size_of(i)) for i in ids if max_side and max(size_of(i)) > max_side]
    if not big:
        return None
    shown = ", ".join(f"{str(i)!r} ({w}x{h})" for i, (h, w) in big[:10])
    more = f" and {len(big) - 10} more" if len(big) > 10 else ""
    return (f"{len(big)} image(s) are larger than {limit} {max_side}: predicted at that "
            f"size (memory bound) and their masks scaled back by nearest neighbour: {shown}{more}")


def predict_split(model: DeepLabV2, index, ids: list[str], device: torch.device, crf: bool, writer,
                  batch_size: int, max_side: int | None = PREDICT_MAX_SIDE, workers: int = 1) -> None:
    """Predict ``ids`` into ``writer`` in batches of same-sized images, skipping images it
    already holds (a resumed shard); ``max_side``: see :func:`predict_masks`.

    With ``crf`` and ``workers`` > 1 the dense CRFs (one core each, 0.6-2 s for a VOC-size
    image with 21 labels, 25-70x the network's GPU time) run in that many spawned processes while
    the network predicts the next batches; at most 2 per worker are pending (a softmax map
    apiece: 16 MB for VOC). The masks are written in the same order and are the same
    whatever ``workers`` is (each image's CRF is computed alone, the same way).
    """
    model.to(device).eval()
    todo = writer.pending(ids)
    warning = oversized(todo, index.size, max_side)
    if warning:
        print(f"[predict] warning: {warning}", file=sys.stderr, flush=True)
    progress = tqdm(total=len(todo), desc="predict", file=sys.stderr, mininterval=5.0)

    def predicted():
        """((id, height, width), network output of one image), batch after batch."""
        for batch in same_size_batches(todo, index.size, batch_size):
            images = [index.read_image(i) for i in batch]
            small, out = _network(model, images, device, crf, max_side)
            height, width = images[0].shape[:2]
            del images
            for image_id, image, item in zip(batch, small, out):
                yield (image_id, height, width), (image, item)

    with ProcessMap(workers if crf else 1) as pool:
        if crf:  # one plane per output channel of the network
            masks = pool.ordered(_crf_task(model.aspp.branches[0].out_channels), predicted())
        else:
            masks = ((key, item) for key, (_, item) in predicted())
        for (image_id, height, width), mask in masks:
            writer.put(image_id, resize_mask(mask, height, width))
            progress.update(1)
    progress.close()

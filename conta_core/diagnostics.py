"""Does M_t act? The M-usage diagnostic of a CONTA round's classifier.

A dead context path looks exactly like a live one in the round's scores, so
every CONTA round measures, on its training images, what the classifier does
with its M_t against two controls:

* ``own``: the image's own X_m (what the round trains and infers with),
* ``permuted``: another image's X_m (a derangement fixed by the seed, salt 13:
  a different pairing from the ``permuted`` arm's),
* ``zero``: M = 0.

Reported: CAM mIoU under each; the mean absolute change of the raw CAM, own vs
permuted and own vs zero, per labelled class as a percentage of that CAM's peak;
the share of the class score that comes from M, |s(M) - s(0)| / (|s(0)| +
|s(M) - s(0)|); and for Eq. 3 the attention alpha: its entropy (divided by
log n: 1 = uniform) and its spread across images (std over images per class,
mean over classes, and relative to the class mean), and the spread of M across
images relative to its mean.

Why a change is small, for Eq. 3: M always lies in the convex hull of the
vertices v_i = M(alpha = e_i) (c_i, or P(c_i) c_i with ``m_scale: prior``), so
two contexts can differ at a location by at most the range of the v_i there.

* ``m_change_permuted_pct``: mean |M(own) - M(permuted)| as a percentage of the
  mean of that range (how much of the room the attention uses);
* ``cam_change_ceiling_pct``: the CAM change, as above, between the two most
  different vertices (the pair with the largest mean |v_a - v_b|): what a fully
  peaked alpha switching between the two most different contexts of the set
  would do to this classifier's CAMs. A permutation's change far below it is
  the attention's doing; a ceiling that is itself small is the confounder set's
  (similar class masks) and the classifier's (small gain on M).

The CAMs here are single-scale (1.0), unflipped, at feature resolution
upsampled to the image, on an evenly spaced subset of at most
:data:`MAX_IMAGES` training images (:func:`subset`): the diagnostic must cost
under 10 % of a round (all 240 demo images took 18 s, ~13 % of a round). Its
CAM mIoU is therefore not the round's multi-scale CAM mIoU; the comparison
between the three conditions is what counts.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .cam import normalise_by_max
from .cam_labels import cam_to_label, same_size_batches
from .confounder import derangement
from .data.datasets import to_tensor
from .metrics import ConfusionMatrix
from .models.classifier import BLOCKS, place_map

CONDITIONS = ("own", "permuted", "zero")
MAX_IMAGES = 96


def subset(ids: list[str], limit: int = MAX_IMAGES) -> list[str]:
    """Every k-th id, k the smallest step that leaves at most ``limit`` (deterministic)."""
    return ids[::max(1, math.ceil(len(ids) / limit))]


def _branch_features(model, images: torch.Tensor, ms: list[torch.Tensor]) -> list[torch.Tensor]:
    """Block-5 features for each M in ``ms``; the layers before the first fusion run once."""
    x = model.backbone.stem(images)
    stages = list(zip(BLOCKS, model.backbone.stages()))
    first = min(model.blocks)
    for block, stage in stages:
        if block >= first:
            break
        x = stage(x)
    outs = []
    for m in ms:
        y = x
        for block, stage in stages:
            if block < first:
                continue
            y = stage(y)
            if block in model.blocks:
                y = model.fusion[str(block)](y, place_map(m, None, y.shape[-2:]).to(y.dtype))
        outs.append(y)
    return outs


def _class_logits(model, images: torch.Tensor, ms: list[torch.Tensor]) -> list[torch.Tensor]:
    """The raw class maps for each M in ``ms`` (SEAM's: before PCM, one pass per M)."""
    if hasattr(model, "class_logits"):
        return [model.class_logits(images, m) for m in ms]
    return [model.classifier(f) for f in _branch_features(model, images, ms)]


def extreme_contexts(context) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(v_a, v_b, room): the two most different vertex maps of Eq. 3 ([1, 1, h, w] each) and the
    mean over locations of the vertices' range; None without Eq. 3 (``seg_mask``, ``off``)."""
    if context is None:
        return None
    n = context.confounder.shape[0]
    vertices = context.adjust(torch.eye(n, device=context.confounder.device))      # [n, 1, h, w]
    flat = vertices.flatten(1)
    distance = (flat[:, None] - flat[None]).abs().mean(dim=2)
    a, b = divmod(int(distance.argmax()), n)
    room = float((flat.max(dim=0).values - flat.min(dim=0).values).mean())
    return vertices[a:a + 1], vertices[b:b + 1], room


@torch.no_grad()
def m_usage(model, index, ids: list[str], x_m_of, seed: int, cam_labels: float | Callable, device: torch.device,
            batch_size: int = 32) -> dict[str, float]:
    """The diagnostic over ``ids`` (see the module doc); ``x_m_of(id)`` gives the image's X_m [h, w].
    ``cam_labels``: the method's ``label(cams, class_ids)`` of a max-normalised CAM, or the constant
    background score of :func:`cam_to_label`."""
    if not callable(cam_labels):
        cam_labels = partial(cam_to_label, bg_threshold=float(cam_labels))
    partner = derangement(ids, seed, salt=13)
    scores = {c: ConfusionMatrix(index.num_classes, index.void) for c in CONDITIONS}
    changes = {"permuted": [], "zero": []}
    shares, alphas, maps, m_changes, ceiling = [], [], [], [], []
    extremes = extreme_contexts(model.context)
    for batch in same_size_batches(ids, index.size, batch_size):
        images = torch.stack([to_tensor(index.read_image(i)) for i in batch]).to(device)
        own_x = torch.from_numpy(np.stack([x_m_of(i) for i in batch])).to(device)
        other_x = torch.from_numpy(np.stack([x_m_of(partner[i]) for i in batch])).to(device)
        m_own = model.context_map(own_x)
        m_other = model.context_map(other_x)
        if model.context is not None:
            alphas.append(model.context.attention(own_x).cpu())
        maps.append(m_own.flatten(1).cpu())
        ms = [m_own, m_other, torch.zeros_like(m_own)]
        if extremes is not None:
            ms += [v.expand_as(m_own).contiguous() for v in extremes[:2]]
            m_changes.append((m_own - m_other).abs().flatten(1).mean(dim=1).cpu() / max(extremes[2], 1e-12))
        outputs = _class_logits(model, images, ms)
        logits = dict(zip(CONDITIONS, outputs))
        vertex_cams = [F.relu(v) for v in outputs[len(CONDITIONS):]]
        score = {c: v.mean(dim=(2, 3)) for c, v in logits.items()}
        delta = (score["own"] - score["zero"]).abs()
        shares.append((delta / (score["zero"].abs() + delta).clamp_min(1e-12)).flatten().cpu())
        cams = {c: F.relu(v) for c, v in logits.items()}
        height, width = images.shape[-2:]
        for b, image_id in enumerate(batch):
            classes = [c - 1 for c in index.labels(image_id)]
            own = cams["own"][b, classes]
            peak = own.flatten(1).max(dim=1).values
            live = peak > 1e-6  # a class with no positive CAM has no peak to measure a change against
            for other in changes:
                diff = (own - cams[other][b, classes]).abs().flatten(1).mean(dim=1)
                changes[other].extend((100.0 * diff[live] / peak[live]).tolist())
            if vertex_cams:
                diff = (vertex_cams[0][b, classes] - vertex_cams[1][b, classes]).abs().flatten(1).mean(dim=1)
                ceiling.extend((100.0 * diff[live] / peak[live]).tolist())
            truth = index.read_mask(image_id)
            for condition in CONDITIONS:
                full = F.interpolate(cams[condition][b:b + 1, classes], size=(height, width), mode="bilinear",
                                     align_corners=False)[0]
                label = cam_labels(normalise_by_max(full).cpu().numpy(), index.labels(image_id))
                scores[condition].update(truth, label)
    out = {"images": len(ids)}
    for condition in CONDITIONS:
        out[f"cam_miou_{condition}"] = 100.0 * scores[condition].miou()
    for other, values in changes.items():
        out[f"cam_change_{other}_pct"] = float(np.mean(values)) if values else float("nan")
    out["cam_change_ceiling_pct"] = float(np.mean(ceiling)) if ceiling else float("nan")
    out["m_change_permuted_pct"] = 100.0 * float(torch.cat(m_changes).mean()) if m_changes else float("nan")
    out["score_share_m_pct"] = 100.0 * float(torch.cat(shares).mean())
    out.update(attention_stats(torch.cat(alphas).numpy() if alphas else None))
    m = torch.cat(maps).numpy()
    out["m_mean"] = float(m.mean())
    out["m_rel_spread"] = float(m.std(axis=0).mean() / max(abs(m.mean()), 1e-12))
    return out


def attention_stats(alpha: np.ndarray | None) -> dict[str, float]:
    """Entropy / log n (1: uniform) and spread over images of alpha ([N, n]); NaN without Eq. 3."""
    if alpha is None:
        return {"alpha_entropy": float("nan"), "alpha_std": float("nan"), "alpha_rel_spread": float("nan")}
    n = alpha.shape[1]
    entropy = -(alpha * np.log(np.clip(alpha, 1e-12, None))).sum(axis=1) / math.log(n)
    std = alpha.std(axis=0)
    return {"alpha_entropy": float(entropy.mean()), "alpha_std": float(std.mean()),
            "alpha_rel_spread": float((std / np.clip(alpha.mean(axis=0), 1e-12, None)).mean())}

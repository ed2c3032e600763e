"""SEAM's training objective, optimiser groups and CAM post-processing.

One step (Wang et al., CVPR 2020; the authors' ``train_SEAM.py``): the image
x1 and its copy x2 rescaled by 0.3 go through the same network
(:class:`~conta_core.models.seam.SeamClassifier`), each giving a CAM and a
PCM-refined CAM (with background channel). With y the labels (background
always 1), "norm" SEAM's per-map min-max normalisation (:func:`max_norm`) and
"down" the 0.3 bilinear rescale of view 1 onto view 2's grid:

    L_cls  = mean over views of the multi-label soft margin of the pooled CAM
           + mean over views of L_min (the smallest quarter of the max PCM
             foreground score of each pixel is pushed to 0; SEAM's
             adaptive_min_pooling_loss, which shifts the best background score)
    L_ER   = mean | down(norm(cam1)) y - norm(cam2) y |             (foreground channels)
    L_ECR  = top20%( | T(down(norm(cam2))) - down(norm(cam_rv1)) y | )
           + top20%( | T(down(norm(cam1))) - norm(cam_rv2) y | )
    L      = L_cls + L_ER + L_ECR

where T (:func:`ecr_target`) sets the background channel to 1 - max_c and keeps
only the strongest class per pixel, detached, and top20% is online hard
example mining: the mean of the largest 20 % of the pixel-channel losses of each
image. (As SEAM: ECR crosses the views, the plain CAM of one view supervising
the PCM output of the other.) CONTA's paper trains this with Adam, lr 0.01,
poly 0.9, batch 8 for 8 epochs (:data:`PAPER_SETTINGS`); the official SEAM code
uses its poly SGD with the same lr and the 1x/2x/10x/20x groups kept here.

Inference (:func:`infer_seam_cams`, the authors' ``infer_SEAM.py``): at every
scale the PIL-bicubic rescaled image and its mirror give PCM-refined CAMs; each
is resized straight to the image size, all are summed, and each class is
min-max normalised (:func:`min_max_normalise`). (IRNet's inference resizes its
stride-16 maps to the 16-rounded size and crops; a stride-8 map resized that way
would be shifted by up to a few pixels, so SEAM has its own.)
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from .cam import rescale_images
from .data.datasets import to_batch

SCALE = 0.3               # SEAM's rescale of the siamese view
OHEM_FRACTION = 0.2       # hard pixels kept by ECR
MIN_POOL_FRACTION = 0.25  # pixels in L_min
EPS = 1e-5
GROUP_LR_MULT = {"backbone": 1.0, "backbone_bias": 2.0, "new": 10.0, "new_bias": 20.0}
# Appendix 3.1 of the CONTA paper; crops 448 after rescaling the long side to [448, 768].
PAPER_SETTINGS = {"optimizer": "adam", "lr": 0.01, "poly_power": 0.9, "batch_size": 8, "epochs": 8,
                  "weight_decay": 5e-4, "crop": 448, "long_side": [448, 768], "scales": [0.5, 1.0, 1.5, 2.0]}


def max_norm(p: torch.Tensor) -> torch.Tensor:
    """SEAM's per-map normalisation of [B, C, H, W]: relu(p - min - eps) / (max - min + eps) after relu."""
    p = F.relu(p)
    flat = p.flatten(2)
    hi = flat.amax(dim=2)[..., None, None]
    lo = flat.amin(dim=2)[..., None, None]
    return F.relu(p - lo - EPS) / (hi - lo + EPS)


def with_background(labels: torch.Tensor) -> torch.Tensor:
    """[B, n] multi-hot -> [B, n+1, 1, 1] with the background label 1 in front."""
    return torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[..., None, None]


def classification_loss(cam: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin (Eq. 2's negative log) of the average-pooled foreground CAM."""
    return F.multilabel_soft_margin_loss(cam.mean(dim=(2, 3)), labels)


def min_pool_loss(cam_rv_fg: torch.Tensor) -> torch.Tensor:
    """Mean of relu of the smallest quarter of max_c cam_rv_c over each image's pixels."""
    b = cam_rv_fg.shape[0]
    peak = cam_rv_fg.amax(dim=1).reshape(b, -1)
    k = max(1, int(peak.shape[1] * MIN_POOL_FRACTION))
    return F.relu(torch.topk(peak, k, dim=1, largest=False).values).sum() / (k * b)


def er_loss(cam1_fg: torch.Tensor, cam2_fg: torch.Tensor) -> torch.Tensor:
    """Equivariant regularisation: mean |cam1 - cam2| over foreground channels (aligned, masked, normed)."""
    return (cam1_fg - cam2_fg).abs().mean()


def ecr_target(cam: torch.Tensor) -> torch.Tensor:
    """[B, n+1, h, w], background slot ignored: background := 1 - max_c, non-maximal classes := 0; detached."""
    cam = cam.detach()
    fg = cam[:, 1:]
    top = fg.amax(dim=1, keepdim=True)
    return torch.cat([1.0 - top, torch.where(fg != top, torch.zeros_like(fg), fg)], dim=1)


def ohem_mean(losses: torch.Tensor, fraction: float = OHEM_FRACTION) -> torch.Tensor:
    """Online hard example mining: mean of the top ``fraction`` of each image's entries, then over images."""
    flat = losses.reshape(losses.shape[0], -1)
    k = max(1, int(flat.shape[1] * fraction))
    return torch.topk(flat, k, dim=1).values.mean()


def ecr_loss(target: torch.Tensor, cam_rv: torch.Tensor, fraction: float = OHEM_FRACTION) -> torch.Tensor:
    """Equivariant cross regularisation of one direction: OHEM mean of |target - cam_rv|."""
    return ohem_mean((target - cam_rv).abs(), fraction)


def seam_losses(out: dict[str, torch.Tensor], labels: torch.Tensor, scale: float = SCALE,
                ohem_fraction: float = OHEM_FRACTION) -> dict[str, torch.Tensor]:
    """SEAM's loss terms from the siamese outputs (``cam``, ``cam_rv``, ``cam2``, ``cam_rv2``)."""
    y = with_background(labels).to(out["cam"].dtype)
    size = tuple(out["cam2"].shape[-2:])

    def down(t: torch.Tensor) -> torch.Tensor:  # view 1 onto view 2's grid (SEAM: scale_factor 0.3)
        return F.interpolate(t, size=size, mode="bilinear", align_corners=True)

    cls = (classification_loss(out["cam"], labels) + classification_loss(out["cam2"], labels)) / 2
    rvmin = (min_pool_loss((out["cam_rv"] * y)[:, 1:]) + min_pool_loss((out["cam_rv2"] * y)[:, 1:])) / 2
    zeros1 = torch.zeros_like(out["cam"][:, :1])
    zeros2 = torch.zeros_like(out["cam2"][:, :1])
    cam1 = down(max_norm(torch.cat([zeros1, out["cam"]], dim=1))) * y
    cam2 = max_norm(torch.cat([zeros2, out["cam2"]], dim=1)) * y
    rv1 = down(max_norm(out["cam_rv"])) * y
    rv2 = max_norm(out["cam_rv2"]) * y
    er = er_loss(cam1[:, 1:], cam2[:, 1:])
    ecr = ecr_loss(ecr_target(cam2), rv1, ohem_fraction) + ecr_loss(ecr_target(cam1), rv2, ohem_fraction)
    return {"cls": cls + rvmin, "er": er, "ecr": ecr, "total": cls + rvmin + er + ecr}


def seam_loss(model, batch: dict, *, scale: float = SCALE, ohem_fraction: float = OHEM_FRACTION,
              equivariance_weight: float = 1.0) -> torch.Tensor:
    """The training loop's loss: one siamese forward (second view rescaled by ``scale``),
    L = L_cls + w (L_ER + L_ECR) (ECR's hard-example share ``ohem_fraction``; w = 1 is SEAM).

    w < 1 is for training from random init: ER and ECR are also minimised by spatially flat
    CAMs (max-normalised, every view then agrees), which a network without pretrained features
    finds first (docs/methods.md, the CPU demo)."""
    x_m = batch["x_m"] if batch["x_m"].numel() else None
    out = model(batch["image"], x_m, batch["view"] if x_m is not None else None, rescale=scale)
    parts = seam_losses(out, batch["target"], scale, ohem_fraction)
    if equivariance_weight == 1.0:
        return parts["total"]
    return parts["cls"] + equivariance_weight * (parts["er"] + parts["ecr"])


def optimizer_groups(model, m_lr_mult: float = 10.0) -> list[dict]:
    """Groups for :func:`conta_core.train.build_optimizer`: SEAM's 1x/2x/10x/20x, no weight decay on biases."""
    params = model.param_groups()
    groups = [{"name": name, "params": params[name], "lr_mult": mult,
               **({"weight_decay": 0.0} if "bias" in name else {})} for name, mult in GROUP_LR_MULT.items()]
    return groups + [{"name": "context_m", "params": params["context_m"], "lr_mult": m_lr_mult}]


def min_max_normalise(cams: np.ndarray) -> np.ndarray:
    """SEAM's per-class normalisation of summed CAMs [K, H, W]: (x - min) / (max - min), clipped at 0.

    (SEAM sets values below min + 1e-5 to 0 before subtracting, leaving a few
    slightly negative pixels at the minimum; here those are 0.)
    """
    cams = np.maximum(cams, 0)
    lo = cams.min(axis=(1, 2), keepdims=True)
    hi = cams.max(axis=(1, 2), keepdims=True)
    return (np.maximum(cams - lo - EPS, 0) / (hi - lo + EPS)).astype(np.float32)


@torch.inference_mode()
def infer_seam_cams(model, images: np.ndarray, class_ids: list[list[int]], scales: list[float], flip: bool,
                    device: torch.device, x_m: np.ndarray | None = None, *, precision: str = "fp32"
                    ) -> list[np.ndarray]:
    """SEAM's CAMs of a batch of same-size images ([B, H, W, 3] uint8): per image float32 [K_b, H, W]
    of its ``class_ids[b]``, min-max normalised (the signature of :func:`conta_core.cam.infer_cams`)."""
    device = torch.device(device)
    batch, height, width = images.shape[:3]
    m = torch.from_numpy(np.ascontiguousarray(x_m, dtype=np.float32)).to(device) if x_m is not None else None
    total = None
    for scale in scales:
        x = to_batch(rescale_images(images, scale), device)
        ms, view = m, None
        if flip:
            x = torch.cat([x, x.flip(-1)])
            if m is not None:  # the mirrored copy sees M mirrored
                ms = torch.cat([m, m])
                view = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * batch + [[-1.0, 0.0, 1.0, 0.0]] * batch, device=device)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            cam = model.cam(x, ms, view).float()
        cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)
        cam = cam[:batch] + cam[batch:].flip(-1) if flip else cam
        total = cam if total is None else total + cam
    out = []
    for b, classes in enumerate(class_ids):
        maps = total[b, [c - 1 for c in classes]].cpu().numpy()
        out.append(min_max_normalise(maps) if len(classes) else maps.astype(np.float32))
    return out

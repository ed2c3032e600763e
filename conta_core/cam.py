"""Multi-scale, flipped CAM inference as IRNet's ``make_cam.py`` computes it
(decoding CAMs into labels: :mod:`conta_core.cam_labels`).

For every scale:

1. the uint8 image is resized with PIL's bicubic filter to ``(round(H s), round(W s))``
   (IRNet's ``pil_rescale``; scale 1 is the image itself) and normalised;
2. the image and its mirror go through the classifier as one batch, the mirrored
   CAM is flipped back and added (``x[0] + x[1].flip(-1)``);
3. that raw map (stride 16 of the scaled image) is resized bilinearly to the
   full-resolution grid rounded up to a multiple of 16 (``get_strided_up_size``) and,
   when asked, to the stride-4 grid ``ceil(H/4) x ceil(W/4)`` (``get_strided_size``).

The maps are summed over scales, the full-resolution sum is cropped to H x W, the
image's classes are kept and each map is divided by its maximum (+ 1e-5), so the
present classes' maps lie in [0, 1]. tests/test_cam_irnet.py checks this against a
re-derivation of IRNet's steps.

Speed: :func:`prepare_for_inference` folds BatchNorm into the convolutions; the
batch goes to the device as uint8 and is normalised there, in channels-last layout; images of one size are inferred together; only the image's
classes are resampled; ``precision`` ``bf16`` runs the network under bf16 autocast
(``auto``: bf16 where the hardware has it natively, CUDA or a CPU with AVX512-BF16/AMX,
else fp32: :func:`conta_core.devices.resolve_precision`; config ``cam.precision``).
"""
from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data.datasets import to_batch
from .devices import resolve_precision

EPS = 1e-5
UP_STRIDE = 16   # IRNet: the full-resolution map is resized to the size rounded up to a multiple of 16
LOW_STRIDE = 4   # IRNet: the random walk's CAMs are at stride 4


def prepare_for_inference(model: torch.nn.Module, precision: str = "fp32",
                          device: torch.device | str = "cpu") -> torch.nn.Module:
    """An inference copy of a CAM classifier on ``device``: eval mode, no gradients, BatchNorm
    folded into the convolutions (:func:`conta_core.models.resnet.fold_batchnorm`),
    channels-last weights, and bf16 weights where ``precision`` resolves to bf16 (autocast
    would cast them again at every call). Same CAMs up to float rounding; the caller's model
    is left as it is. Infer with the same ``precision``."""
    from .models.resnet import fold_batchnorm

    copy_ = copy.deepcopy(model).eval()
    for p in copy_.parameters():
        p.requires_grad_(False)
    copy_ = fold_batchnorm(copy_).to(device, memory_format=torch.channels_last)
    if resolve_precision(precision, torch.device(device), "cam.precision") == "bf16":
        copy_ = copy_.to(torch.bfloat16)
    return copy_


def normalise_by_max(cams: torch.Tensor) -> torch.Tensor:
    """Divide each map ([K, H, W]) by its maximum; all-zero maps stay zero."""
    peak = cams.flatten(1).max(dim=1).values.clamp_min(0)
    return cams / (peak[:, None, None] + EPS)


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """IRNet's ``pil_rescale`` size: ``(round(H s), round(W s))`` (round half to even), at least 1."""
    return max(1, int(np.round(height * scale))), max(1, int(np.round(width * scale)))


def rescale_images(images: np.ndarray, scale: float) -> np.ndarray:
    """uint8 [B, H, W, 3] resized by ``scale`` with PIL's bicubic filter (IRNet's input pyramid)."""
    if scale == 1.0:
        return images
    h, w = scaled_size(images.shape[1], images.shape[2], scale)
    return np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BICUBIC)) for im in images])


def _strided(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


@torch.inference_mode()
def infer_cams(model, images: np.ndarray, class_ids: list[list[int]], scales: list[float], flip: bool,
               device: torch.device, x_m: np.ndarray | None = None, *, precision: str = "fp32",
               strided: bool = False) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
    """CAMs of a batch of same-size images ([B, H, W, 3] uint8).

    Returns, per image, float32 [K_b, H, W]: the full-resolution, max-normalised
    CAMs of that image's ``class_ids[b]`` (foreground indices 1..C-1). With
    ``strided``, also the stride-4 maps [K_b, ceil(H/4), ceil(W/4)] (IRNet's ``cam``,
    the random walk's input), as a second list.
    """
    device = torch.device(device)
    precision = resolve_precision(precision, device, "cam.precision")
    weights = next(model.parameters(), None) if hasattr(model, "parameters") else None
    if weights is not None and weights.dtype == torch.bfloat16 and precision != "bf16":
        raise ValueError("the model has bf16 weights (prepare_for_inference with precision bf16): "
                         f"infer with precision bf16, not {precision!r}")
    batch, height, width = images.shape[:3]
    up_size = (_strided(height, UP_STRIDE) * UP_STRIDE, _strided(width, UP_STRIDE) * UP_STRIDE)
    low_size = (_strided(height, LOW_STRIDE), _strided(width, LOW_STRIDE))
    chosen = [torch.as_tensor([c - 1 for c in classes], dtype=torch.long, device=device) for classes in class_ids]
    m = torch.from_numpy(np.ascontiguousarray(x_m, dtype=np.float32)).to(device) if x_m is not None else None
    # an image without labelled classes keeps empty maps
    high = [None if len(c) else torch.zeros(0, *up_size, device=device) for c in chosen]
    low = [None if len(c) else torch.zeros(0, *low_size, device=device) for c in chosen]
    for scale in scales:
        x = to_batch(rescale_images(images, scale), device).contiguous(memory_format=torch.channels_last)
        ms, view = m, None
        if flip:
            x = torch.cat([x, x.flip(-1)])
            if m is not None:
                # The mirrored copy sees M mirrored: x = -u over the whole image.
                ms = torch.cat([m, m])
                view = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * batch + [[-1.0, 0.0, 1.0, 0.0]] * batch,
                                    device=device)
        with _autocast(precision, device):
            cam = model.cam(x, ms, view)
        cam = cam.float()
        cam = cam[:batch] + cam[batch:].flip(-1) if flip else cam
        for b in range(batch):
            if not len(chosen[b]):
                continue
            raw = cam[b:b + 1, chosen[b]]  # only the image's classes are resampled
            up = F.interpolate(raw, size=up_size, mode="bilinear", align_corners=False)[0]
            high[b] = up if high[b] is None else high[b] + up
            if strided:
                down = F.interpolate(raw, size=low_size, mode="bilinear", align_corners=False)[0]
                low[b] = down if low[b] is None else low[b] + down
    full = [normalise_by_max(h[:, :height, :width]).cpu().numpy() for h in high]
    if not strided:
        return full
    return full, [normalise_by_max(lo).cpu().numpy() for lo in low]


def infer_cam(model, image: np.ndarray, class_ids: list[int], scales: list[float], flip: bool,
              device: torch.device, x_m: np.ndarray | None = None, *, precision: str = "fp32") -> np.ndarray:
    """Full-resolution CAMs of one image: float32 [K, H, W]."""
    return infer_cams(model, image[None], [class_ids], scales, flip, device,
                      None if x_m is None else x_m[None], precision=precision)[0]

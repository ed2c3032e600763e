"""Multi-scale, flipped CAM inference (decoding CAMs into labels: :mod:`conta_core.cam_labels`).

For every scale the image and its mirror go through the classifier together;
the mirrored CAM is flipped back and added. Each scale's map is resized to the
full image size and summed over scales; each class map is then divided by its
maximum, so the present classes' maps lie in [0, 1].
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from .data.datasets import to_tensor

EPS = 1e-5


def normalise_by_max(cams: torch.Tensor) -> torch.Tensor:
    """Divide each map ([K, H, W]) by its maximum; all-zero maps stay zero."""
    peak = cams.flatten(1).max(dim=1).values.clamp_min(0)
    return cams / (peak[:, None, None] + EPS)


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"cam precision must be 'fp32' or 'bf16', got {precision!r}")


@torch.inference_mode()
def infer_cams(model, images: np.ndarray, class_ids: list[list[int]], scales: list[float], flip: bool,
               device: torch.device, x_m: np.ndarray | None = None, *, precision: str = "fp32") -> list[np.ndarray]:
    """CAMs of a batch of same-size images ([B, H, W, 3] uint8).

    Returns, per image, float32 [K_b, H, W]: the full-resolution, max-normalised
    CAMs of that image's ``class_ids[b]`` (foreground indices 1..C-1).
    ``precision``: ``bf16`` runs the network under bf16 autocast (maps are summed in float32).
    """
    batch, height, width = images.shape[:3]
    # channels-last: the layout the CPU and cuDNN convolutions run fastest on
    x = torch.stack([to_tensor(im) for im in images]).to(device).contiguous(memory_format=torch.channels_last)
    m = torch.from_numpy(x_m).to(device) if x_m is not None else None
    total = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if scale != 1.0 else x
        ms, view = m, None
        if flip:
            xs = torch.cat([xs, xs.flip(-1)])
            if m is not None:
                # The mirrored copy sees M mirrored: x = -u over the whole image.
                ms = torch.cat([m, m])
                view = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * batch + [[-1.0, 0.0, 1.0, 0.0]] * batch,
                                    device=device)
        with _autocast(precision, device):
            cam = model.cam(xs, ms, view)
        cam = cam.float()
        cam = cam[:batch] + cam[batch:].flip(-1) if flip else cam
        cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)
        total = cam if total is None else total + cam
    out = []
    for b, classes in enumerate(class_ids):
        chosen = total[b, [c - 1 for c in classes]]
        out.append(normalise_by_max(chosen).cpu().numpy().astype(np.float32))
    return out


def infer_cam(model, image: np.ndarray, class_ids: list[int], scales: list[float], flip: bool,
              device: torch.device, x_m: np.ndarray | None = None, *, precision: str = "fp32") -> np.ndarray:
    """Full-resolution CAMs of one image: float32 [K, H, W]."""
    return infer_cams(model, image[None], [class_ids], scales, flip, device,
                      None if x_m is None else x_m[None], precision=precision)[0]

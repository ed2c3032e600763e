"""Multi-scale, flipped CAM inference and CAM-to-label decoding.

For every scale the image and its mirror go through the classifier together;
the mirrored CAM is flipped back and added. Each scale's map is resized to the
full image size and summed over scales; each class map is then divided by its
maximum, so the present classes' maps lie in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data.datasets import to_tensor

EPS = 1e-5


def normalise_by_max(cams: torch.Tensor) -> torch.Tensor:
    """Divide each map ([K, H, W]) by its maximum; all-zero maps stay zero."""
    peak = cams.flatten(1).max(dim=1).values.clamp_min(0)
    return cams / (peak[:, None, None] + EPS)


@torch.no_grad()
def infer_cam(model, image: np.ndarray, class_ids: list[int], scales: list[float], flip: bool,
              device: torch.device, x_m: np.ndarray | None = None) -> np.ndarray:
    """Full-resolution CAMs of ``class_ids`` (foreground indices 1..C-1): float32 [K, H, W]."""
    height, width = image.shape[:2]
    x = to_tensor(image)[None].to(device)
    m = torch.from_numpy(x_m)[None].to(device) if x_m is not None else None
    channels = torch.tensor([c - 1 for c in class_ids], device=device)
    total = torch.zeros(len(class_ids), height, width, device=device)
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if scale != 1.0 else x
        if flip:
            xs = torch.cat([xs, xs.flip(-1)])
        cam = model.cam(xs, None if m is None else m.expand(xs.shape[0], -1, -1))[:, channels]
        cam = cam[0] + cam[1].flip(-1) if flip else cam[0]
        total += F.interpolate(cam[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return normalise_by_max(total).cpu().numpy().astype(np.float32)


def cam_to_label(cams: np.ndarray, class_ids: list[int], bg_threshold: float) -> np.ndarray:
    """Seed labels: argmax over [bg_threshold, CAM_1..CAM_K], mapped to class indices."""
    height, width = cams.shape[1:]
    scores = np.concatenate([np.full((1, height, width), bg_threshold, np.float32), cams])
    lookup = np.array([0] + list(class_ids), dtype=np.uint8)
    return lookup[scores.argmax(axis=0)]

"""Inter-pixel relation labels for IRNet's boundary branch.

An IR label map (uint8, 0 background, c > 0 a confident class, ``ignore_index``
unsure) is reduced to stride 4 (:func:`reduce_label`); every pair of pixels
closer than ``radius`` (IRNet's half-neighbourhood :func:`pair_offsets`, so each
unordered pair once) then gets one of three labels, or none:

* ``bg_pos``: both pixels background (0);
* ``fg_pos``: both pixels the same foreground class;
* ``neg``: the two labels differ (background vs class, or two classes);
* none of them: a pixel is ``ignore_index``, or the pair leaves the map.

This is IRNet's ``GetAffinityLabelFromIndices``, except that every in-map pair
is used (IRNet drops sources within ``radius - 1`` of the left/right border).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .random_walk import pair_offsets

__all__ = ["affinity_labels", "reduce_label"]


def reduce_label(label: np.ndarray, stride: int = 4, ignore_index: int = 255) -> np.ndarray:
    """Nearest-neighbour reduction of a ``[H, W]`` label map to ``[ceil(H/s), ceil(W/s)]``.

    Takes the pixel at the centre of each ``stride x stride`` cell (what PIL's
    nearest resize by 1/stride does in IRNet); the map is first padded with
    ``ignore_index`` to a multiple of ``stride`` so the result matches the size of
    the network's stride-4 output.
    """
    label = np.asarray(label)
    height, width = label.shape
    ph, pw = -height % stride, -width % stride
    if ph or pw:
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore_index)
    return np.ascontiguousarray(label[stride // 2::stride, stride // 2::stride])


def affinity_labels(label_map, radius: int, ignore_index: int = 255
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(bg_pos, fg_pos, neg)`` bool tensors ``[..., P, H, W]`` for ``label_map [..., H, W]``.

    Entry ``[..., k, y, x]`` is the pair ``(y, x) -> (y + dy_k, x + dx_k)`` with
    ``(dy_k, dx_k) = pair_offsets(radius)[k]`` (the order :func:`path_affinity` uses).
    """
    labels = torch.as_tensor(np.asarray(label_map) if not torch.is_tensor(label_map) else label_map)
    labels = labels.long()
    height, width = labels.shape[-2:]
    lead = labels.shape[:-2]
    rf = radius - 1
    padded = F.pad(labels.reshape(-1, height, width), (rf, rf, 0, rf), value=ignore_index)
    padded = padded.reshape(*lead, height + rf, width + 2 * rf)
    src_valid = labels != ignore_index
    bg, fg, neg = [], [], []
    for dy, dx in pair_offsets(radius):
        dst = padded[..., dy:dy + height, rf + dx:rf + dx + width]
        valid = src_valid & (dst != ignore_index)
        same = labels == dst
        bg.append(valid & same & (labels == 0))
        fg.append(valid & same & (labels != 0))
        neg.append(valid & ~same)
    return torch.stack(bg, -3), torch.stack(fg, -3), torch.stack(neg, -3)

"""Torch datasets for the training steps, on top of :class:`DatasetIndex`.

Augmentation randomness is drawn from a generator seeded by (seed, epoch,
item), never from global state: a sample looks the same however the loader
is parallelised and when training resumes in the middle of an epoch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
import torch.nn.functional as F

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 RGB -> ImageNet-normalised float [3, H, W], channels-last in memory.

    The result is a [3, H, W] view of the H x W x 3 array: convolutions (CPU and
    cuDNN) run fastest on channels-last input, and a batch made with
    :func:`to_batch` or ``torch.stack(...).contiguous(memory_format=torch.channels_last)``
    keeps that layout (a plain ``torch.stack`` copies it into NCHW).
    """
    x = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


def to_batch(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float [B, 3, H, W] on ``device``, channels-last.

    The uint8 images travel to the device (a quarter of the float bytes) and are
    normalised there; the values equal :func:`to_tensor`'s.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True).float()
    mean = torch.from_numpy(MEAN).to(x.device)
    std = torch.from_numpy(STD).to(x.device)
    return ((x / 255.0 - mean) / std).permute(0, 3, 1, 2)


def _resize(x: torch.Tensor, size: tuple[int, int], nearest: bool) -> torch.Tensor:
    mode = "nearest" if nearest else "bilinear"
    kwargs = {} if nearest else {"align_corners": False}
    return F.interpolate(x[None].float(), size=size, mode=mode, **kwargs)[0]


def random_scale_flip_crop(image: torch.Tensor, label: torch.Tensor | None, crop: int,
                           scale_range: tuple[float, float], rng: np.random.Generator,
                           ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Rescale by a random factor, flip with p = 0.5, random crop with padding.

    Padding is 0 for the normalised image (the mean colour) and ``ignore_index``
    for the label, as in DeepLab and IRNet. Also returns the view (a_x, b_x, a_y,
    b_y): the crop's normalised coordinates u in [-1, 1] sit at a u + b in the
    whole image's (see :func:`conta_core.models.classifier.place_map`).
    """
    _, h, w = image.shape
    scale = rng.uniform(*scale_range)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    image = _resize(image, size, nearest=False)
    if label is not None:
        label = _resize(label[None], size, nearest=True)[0].long()
    flipped = rng.random() < 0.5
    if flipped:
        image = image.flip(-1)
        label = label.flip(-1) if label is not None else None
    h, w = size
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        if label is not None:
            label = F.pad(label, (0, pw, 0, ph), value=ignore_index)
    h, w = image.shape[-2:]
    top = int(rng.integers(0, h - crop + 1))
    left = int(rng.integers(0, w - crop + 1))
    image = image[:, top:top + crop, left:left + crop]
    if label is not None:
        label = label[top:top + crop, left:left + crop]
    sh, sw = size
    a_x, b_x = crop / sw, (2 * left + crop) / sw - 1
    if flipped:
        a_x, b_x = -a_x, -b_x
    view = torch.tensor([a_x, b_x, crop / sh, (2 * top + crop) / sh - 1], dtype=torch.float32)
    return image.contiguous(), (label.contiguous() if label is not None else None), view


class _EpochSeeded(Dataset):
    def __init__(self, seed: int):
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, item: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, item])


class ClassificationDataset(_EpochSeeded):
    """(image crop, multi-hot foreground labels, reduced mask X_m, crop view) for Eq. 2.

    ``x_m`` maps image id -> reduced mask [h, w] for CONTA rounds; ``None`` in
    the baseline round, where a zero-size placeholder is returned.
    """

    def __init__(self, index, ids: list[str], *, crop: int, scale_range: tuple[float, float], seed: int,
                 x_m: Callable[[str], np.ndarray] | None = None):
        super().__init__(seed)
        self.index, self.ids, self.crop, self.scale_range, self.x_m = index, ids, crop, scale_range, x_m
        self.num_foreground = index.num_classes - 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: int) -> dict:
        image_id = self.ids[item]
        image, _, view = random_scale_flip_crop(to_tensor(self.index.read_image(image_id)), None, self.crop,
                                                self.scale_range, self.rng(item))
        target = torch.zeros(self.num_foreground)
        for cls in self.index.labels(image_id):
            target[cls - 1] = 1.0
        x_m = torch.from_numpy(self.x_m(image_id)) if self.x_m is not None else torch.zeros(0)
        return {"image": image, "target": target, "x_m": x_m, "view": view}


class SegmentationDataset(_EpochSeeded):
    """(image crop, pseudo-mask crop) for DeepLab training; 255 is ignored."""

    def __init__(self, index, ids: list[str], masks, *, crop: int, scale_range: tuple[float, float],
                 seed: int, ignore_index: int = 255):
        super().__init__(seed)
        self.index, self.ids, self.masks = index, ids, masks
        self.crop, self.scale_range, self.ignore_index = crop, scale_range, ignore_index

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: int) -> dict:
        image_id = self.ids[item]
        label = torch.from_numpy(self.masks.get(image_id).astype(np.int64))
        image, label, _ = random_scale_flip_crop(to_tensor(self.index.read_image(image_id)), label, self.crop,
                                                 self.scale_range, self.rng(item), self.ignore_index)
        return {"image": image, "label": label}

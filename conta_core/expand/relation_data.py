"""Training data of IRNet's relation (boundary) network: image crops and stride-4 IR labels.

IRNet's ``VOC12AffinityDataset`` rescales the image (and its IR label, nearest),
flips it, takes a random crop (padding: 0 for the normalised image, 255 for the
label), and reduces the label crop to the network's stride-4 output with a
nearest resize by 1/4. :class:`RelationDataset` does the same on top of the
project's :class:`~conta_core.data.index.DatasetIndex` and the ``ir_label``
shard files of a round, with the project's augmentation
(:func:`~conta_core.data.datasets.random_scale_flip_crop`) and
:func:`~conta_core.expand.affinity.reduce_label`.

Randomness is drawn from ``(seed, epoch, item)`` (``set_epoch`` is called by
:func:`~conta_core.expand.irnet.train_relation_net`), so a sample does not depend
on how the loader is parallelised. The HDF5 files are opened lazily in the
process that reads them (h5py handles do not survive a fork into DataLoader
workers).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.datasets import random_scale_flip_crop, to_tensor
from .affinity import reduce_label

__all__ = ["RelationDataset", "load_classifier_backbone"]


class RelationDataset(Dataset):
    """Items ``(image [3, crop, crop] float, label [ceil(crop/4), ceil(crop/4)] int64)``.

    index: a :class:`DatasetIndex`; ids: the training images; label_files: the
    round's ``ir_label`` shards (every id must be in one of them); expect: root
    attributes the label files must carry (e.g. class names and round).
    """

    def __init__(self, index, ids: Sequence[str], label_files: Sequence[str | os.PathLike], *, crop: int,
                 scale_range: tuple[float, float] = (1.0, 1.0), seed: int = 0, expect: dict | None = None,
                 ignore_index: int = 255, stride: int = 4):
        if crop < stride:
            raise ValueError(f"crop {crop} is smaller than the label stride {stride}")
        self.index = index
        self.ids = list(ids)
        self.label_files = [str(p) for p in label_files]
        self.crop, self.scale_range = int(crop), tuple(scale_range)
        self.seed, self.epoch = int(seed), 0
        self.expect = dict(expect or {})
        self.ignore_index, self.stride = ignore_index, stride
        self._reader = None
        self._reader_pid = None
        # Fail now, in the main process, if a file is stale or an id has no label.
        reader = self._open()
        missing = [i for i in self.ids if i not in reader]
        if missing:
            raise ValueError(f"{len(missing)} training images have no IR label in {self.label_files} "
                             f"(first: {missing[:3]})")

    def _open(self):
        from ..store import ShardedReader

        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = ShardedReader(self.label_files, kind="ir_label", expect=self.expect)
            self._reader_pid = os.getpid()
        return self._reader

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"], state["_reader_pid"] = None, None
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_id = self.ids[item]
        label = torch.from_numpy(self._open().get(image_id).astype(np.int64))
        image = to_tensor(self.index.read_image(image_id))
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise ValueError(f"IR label of {image_id!r} is {tuple(label.shape)}, the image {tuple(image.shape[-2:])}")
        rng = np.random.default_rng([self.seed, self.epoch, item])
        image, label, _ = random_scale_flip_crop(image, label, self.crop, self.scale_range, rng, self.ignore_index)
        small = reduce_label(label.numpy(), self.stride, self.ignore_index)
        return image, torch.from_numpy(small.astype(np.int64))


def load_classifier_backbone(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Copy the backbone of a classifier checkpoint (``classifier.pt``) into ``model.backbone``.

    For runs without pretrained weights (the CPU demo): IRNet's boundary branch
    reads a *frozen* backbone, and the round's trained classifier is the only
    trained ResNet there is. Depth and output stride must match the classifier's.
    """
    from ..checkpoint import load_model_file

    state = load_model_file(path)["model"]  # verified: a damaged file is deleted for a rebuild
    own = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not own:
        raise ValueError(f"{path}: no backbone.* weights in the checkpoint")
    missing, unexpected = model.backbone.load_state_dict(own, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: backbone does not match the relation network's (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}); set expand.irnet.train.backbone to the classifier's depth")

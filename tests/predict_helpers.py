"""Shared by the prediction tests (test_batched_steps, test_predict_workers): a tiny DeepLab with a
trained-looking head, an in-memory dataset index and an in-memory mask writer."""
import numpy as np
import torch

from conta_core.segment import build_segmenter

SEGMENT = {"backbone": 18, "weights": "none", "output_stride": 8, "freeze_bn": False, "freeze_conv1": False,
           "aspp_rates": [2, 4], "msc_scales": [1.0]}


def tiny_segmenter(num_classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_segmenter(SEGMENT, num_classes, load_weights=False).eval()
    with torch.no_grad():  # a trained-looking head: ASPP's 0.01-std init gives near-ties everywhere
        for branch in model.aspp.branches:
            branch.weight.normal_(0, 0.2)
    return model


class FakeIndex:
    def __init__(self, images: dict[str, np.ndarray]):
        self.images = images

    def size(self, image_id):
        return self.images[image_id].shape[:2]

    def read_image(self, image_id):
        return self.images[image_id]


class DictWriter(dict):
    def put(self, image_id, array):
        self[image_id] = array

    def pending(self, ids):
        return [i for i in ids if i not in self]

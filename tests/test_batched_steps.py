"""Batching and worker processes change only the speed of prediction and CRF expansion."""
from functools import partial

import numpy as np
import torch

from conta_core.expand.crf import expand_crf
from conta_core.parallel import ProcessMap
from conta_core.segment import predict_split

from predict_helpers import DictWriter, FakeIndex, tiny_segmenter

def test_batched_prediction_equals_one_image_at_a_time():
    rng = np.random.default_rng(0)
    shapes = [(40, 48), (40, 48), (32, 32), (40, 48), (32, 32), (40, 48), (40, 48)]
    images = {f"im{k}": rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for k, shape in enumerate(shapes)}
    index = FakeIndex(images)
    model = tiny_segmenter()
    one_by_one, batched = DictWriter(), DictWriter()
    predict_split(model, index, list(images), torch.device("cpu"), False, one_by_one, batch_size=1)
    predict_split(model, index, list(images), torch.device("cpu"), False, batched, batch_size=3)
    assert sorted(batched) == sorted(images)
    for image_id, image in images.items():
        assert batched[image_id].shape == image.shape[:2] and batched[image_id].dtype == np.uint8
        np.testing.assert_array_equal(batched[image_id], one_by_one[image_id])
    assert len(np.unique(np.concatenate([m.ravel() for m in batched.values()]))) > 1
    # A resumed shard: images already written are not predicted again.
    partial_writer = DictWriter(im0=np.zeros((40, 48), np.uint8))
    predict_split(model, index, list(images), torch.device("cpu"), False, partial_writer, batch_size=4)
    assert partial_writer["im0"].max() == 0
    np.testing.assert_array_equal(partial_writer["im1"], one_by_one["im1"])


def test_crf_expansion_in_worker_processes_equals_serial():
    rng = np.random.default_rng(1)
    images, cams, classes = [], [], []
    for k in range(5):
        image = rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)
        image[:, 14:] = 200  # an edge for the bilateral term
        cam = rng.random((2, 24, 28)).astype(np.float32)
        cam[0, :, 14:] += 0.8
        images.append(image), cams.append(cam / cam.max(axis=(1, 2), keepdims=True)), classes.append([1, 3 + k % 2])
    expand_one = partial(expand_crf, bg_threshold=0.5, bg_power=None, crf={"iterations": 5})
    serial = [expand_one(*args) for args in zip(images, cams, classes)]
    with ProcessMap(2) as workers:
        pooled = workers(expand_one, images, cams, classes)
    assert len(pooled) == len(serial)
    for a, b, cls in zip(pooled, serial, classes):
        np.testing.assert_array_equal(a, b)
        assert set(np.unique(a)) <= {0, *cls}
    with ProcessMap(1) as inline:
        assert all(np.array_equal(a, b) for a, b in zip(inline(expand_one, images, cams, classes), serial))

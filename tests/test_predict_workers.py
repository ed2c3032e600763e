"""Dense CRFs of prediction in worker processes: same masks, same order, bounded, torch-free workers."""
import operator
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from conta_core.crf import dense_crf
from conta_core.parallel import ProcessMap, loaded
from conta_core.segment import predict_split

from predict_helpers import DictWriter, FakeIndex, tiny_segmenter

REPO = Path(__file__).resolve().parents[1]
class OrderWriter(DictWriter):
    def __init__(self):
        super().__init__()
        self.order = []

    def put(self, image_id, array):
        self.order.append(image_id)
        super().put(image_id, array)


def _model_and_images():
    rng = np.random.default_rng(3)
    shapes = [(40, 48), (32, 36), (40, 48), (40, 48), (32, 36), (40, 48), (40, 48)]
    images = {}
    for k, shape in enumerate(shapes):
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        image[:, shape[1] // 2:] //= 4  # an edge for the bilateral term
        images[f"im{k}"] = image
    model = tiny_segmenter()
    return model, images


def test_crf_masks_in_workers_equal_the_serial_path():
    model, images = _model_and_images()
    index = FakeIndex(images)
    # Independent reference: the network's softmax, then dense_crf here, image by image.
    expected = {}
    with torch.no_grad():
        for image_id, image in images.items():
            from conta_core.data.datasets import to_tensor
            probs = torch.softmax(model.predict(to_tensor(image)[None]), dim=1)[0].numpy()
            expected[image_id] = dense_crf(image, probs, max_side=None).argmax(axis=0).astype(np.uint8)
    written = {}
    for workers in (1, 2):
        writer = OrderWriter()
        predict_split(model, index, list(images), torch.device("cpu"), True, writer, batch_size=2, workers=workers)
        written[workers] = writer
    one, two = written[1], written[2]
    assert one.order == two.order and sorted(one.order) == sorted(images)
    for image_id, image in images.items():
        assert two[image_id].dtype == np.uint8 and two[image_id].shape == image.shape[:2]
        np.testing.assert_array_equal(two[image_id], one[image_id])
        np.testing.assert_array_equal(one[image_id], expected[image_id])
    labels = np.unique(np.concatenate([m.ravel() for m in two.values()]))
    assert len(labels) > 1 and labels.max() < 4
    # The CRF changed something: the masks are not the network's argmax everywhere.
    plain = OrderWriter()
    predict_split(model, index, list(images), torch.device("cpu"), False, plain, batch_size=2, workers=2)
    assert any(not np.array_equal(plain[i], two[i]) for i in images)


def _stream(n, pulled):
    for k in range(n):
        pulled.append(k)
        yield k, (k, 100)


def test_ordered_keeps_the_order_and_bounds_pending_tasks():
    for processes in (1, 3):
        pulled, got, ahead = [], [], []
        with ProcessMap(processes) as pool:
            for key, value in pool.ordered(operator.add, _stream(40, pulled)):
                ahead.append(len(pulled) - len(got))  # tasks pulled and not yet handed back
                got.append((key, value))
        assert got == [(k, k + 100) for k in range(40)]
        # 2 per worker submitted, plus the one in hand that waits for room
        assert max(ahead) == 2 * processes + 1
    with ProcessMap(2) as pool:
        assert [v for _, v in pool.ordered(operator.add, _stream(5, []), pending=1)] == [100, 101, 102, 103, 104]


def test_workers_load_no_torch(tmp_path):
    assert "torch" in sys.modules  # here it is: the workers below start fresh (spawn)
    with ProcessMap(2) as pool:
        assert pool(loaded, ["torch", "torch", "conta_core.parallel"]) == [False, False, True]
    # As in a predict job: the workers import the job's script (predict.py) again.
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO / 'workflow_scripts')!r}, {str(REPO)!r}]
        import predict  # noqa: F401  (what a spawned worker of a predict job imports)
        from conta_core.crf import crf_labels  # noqa: F401  (the CRF task's module)
        from conta_core.parallel import ProcessMap, loaded

        if __name__ == "__main__":
            import torch  # noqa: F401  (the job's own process has it)
            with ProcessMap(2) as pool:
                print(pool(loaded, ["torch", "predict", "conta_core.crf"]))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[False, True, True]"

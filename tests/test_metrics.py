import numpy as np
import pytest

from conta_core.metrics import ConfusionMatrix, iou_table


def test_miou_against_hand_computed_confusion_matrix():
    truth = np.array([[0, 0, 1, 1],
                      [0, 2, 2, 255],
                      [1, 1, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 0, 2],
                     [1, 255, 2, 0]], dtype=np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(truth, pred)
    # rows = truth, cols = pred (+ a column for void/unsure predictions); void truth ignored.
    expected = np.array([[2, 1, 0, 0],
                         [0, 3, 0, 1],
                         [1, 0, 2, 0]])
    np.testing.assert_array_equal(cm.matrix, expected)
    # IoU_c = TP / (row sum + col sum - TP)
    iou = [2 / (3 + 3 - 2), 3 / (4 + 4 - 3), 2 / (3 + 2 - 2)]
    np.testing.assert_allclose(cm.iou(), iou)
    assert cm.miou() == pytest.approx(np.mean(iou))
    assert cm.pixel_accuracy() == pytest.approx(7 / 10)


def test_absent_class_is_nan_and_skipped_in_mean():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1]]), np.array([[0, 1]]))
    iou = cm.iou()
    assert np.isnan(iou[2])
    assert cm.miou() == 1.0


def test_accumulates_over_images_and_table():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 1]]), np.array([[0, 0]]))
    cm.update(np.array([[1, 1]]), np.array([[1, 1]]))
    np.testing.assert_allclose(cm.iou(), [1 / 2, 2 / 3])
    table = iou_table(cm, ["background", "thing"])
    assert list(table["class"]) == ["background", "thing"]
    np.testing.assert_allclose(table["iou"], [50.0, 200 / 3])
    assert list(table["gt_pixels"]) == [1, 3]


def test_label_outside_classes_is_an_error():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.array([[3]]), np.array([[0]]))

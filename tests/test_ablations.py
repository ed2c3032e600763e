import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SPEC = importlib.util.spec_from_file_location(
    "ablations", Path(__file__).resolve().parents[1] / "workflow_scripts" / "ablations.py")
ablations = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ablations)


def frame(rows):
    return pd.DataFrame(rows, columns=["round", "cam_miou", "pseudo_mask_miou", "seg_miou"])


def test_table1_rows_and_seed_statistics():
    default = [frame([[0, 10, 20, 30], [1, 12, 22, 32], [2, 14, 24, 34]]),
               frame([[0, 12, 22, 32], [1, 14, 24, 34], [2, 16, 26, 36]])]
    q1 = [frame([[0, 10, 20, 30], [2, 9, 19, 29]]), frame([[0, 12, 22, 32], [2, 11, 21, 31]])]
    table = ablations.table1({"default": default, "q1_seg_mask": q1})
    assert list(table["setting"]) == ["Baseline", "(Q1) M_t <- Seg. Mask", "(Q2) Round = 1", "(Q2) Round = 2",
                                      "(Q3) Block-5", "(Q4) C_Seg. Mask"]
    base = table.set_index("setting").loc["Baseline"]
    assert base["cam_miou"] == pytest.approx(11.0) and base["cam_miou_std"] == pytest.approx(1.0)
    q1_row = table.set_index("setting").loc["(Q1) M_t <- Seg. Mask"]
    assert q1_row["seg_miou"] == pytest.approx(30.0)      # the last round of each seed: 29 and 31
    assert table.set_index("setting").loc["(Q3) Block-5", "pseudo_mask_miou"] == pytest.approx(25.0)
    assert "11.0 ± 1.0" in ablations.markdown(table)


def test_per_class_over_seeds():
    columns = ["round", "step", "class", "iou", "gt_pixels", "pred_pixels"]
    seed0 = pd.DataFrame([[0, "cam", "rider", 10.0, 5, 5], [1, "cam", "rider", 14.0, 5, 5],
                          [0, "seg", "rider", 20.0, 5, 5]], columns=columns)
    seed1 = pd.DataFrame([[0, "cam", "rider", 12.0, 5, 5], [1, "cam", "rider", 18.0, 5, 5],
                          [0, "seg", "rider", 30.0, 5, 5]], columns=columns)
    table = ablations.per_class_over_seeds([seed0, seed1]).set_index(["step", "class", "round"])
    assert table.loc[("cam", "rider", 1), "iou"] == pytest.approx(16.0)
    assert table.loc[("cam", "rider", 1), "iou_std"] == pytest.approx(2.0)
    assert table.loc[("seg", "rider", 0), "iou"] == pytest.approx(25.0)
    assert table.loc[("seg", "rider", 0), "seeds"] == 2
    text = ablations.per_class_markdown(table.reset_index())
    assert "### cam" in text and "| rider | 11.0 ± 1.0 | 16.0 ± 2.0 |" in text
    assert "| rider | 25.0 ± 5.0 |  |" in text  # seg has no round 1 here: an empty cell

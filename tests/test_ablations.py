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


def test_t_interval_by_hand():
    from conta_core.ablation_stats import t_interval, verdict

    mean, low, high, k = t_interval([1.0, 2.0, 3.0])
    # sd 1, t_{0.975, 2} = 4.3027: half width 4.3027 / sqrt(3) = 2.4841
    assert (mean, k) == (2.0, 3) and low == pytest.approx(-0.4841, abs=1e-3) and high == pytest.approx(4.4841, abs=1e-3)
    assert verdict(low, high) == "within noise"
    mean, low, high, _ = t_interval([2.0, 2.1, 1.9, 2.0, 2.0])
    # sd 0.070711, t_{0.975, 4} = 2.7764: half width 0.08780
    assert low == pytest.approx(2.0 - 0.0878, abs=1e-4) and verdict(low, high) == "higher"
    assert verdict(*t_interval([-3.0, -3.5, -2.5])[1:3]) == "lower"
    assert verdict(*t_interval([1.0])[1:3]).startswith("n/a")


def test_paired_differences_to_baseline_and_to_permuted():
    from conta_core.ablation_stats import arm_table, baseline_agreement, long_scores, paired_differences

    runs = {}
    for seed, (base, adjust, permuted) in enumerate([(40, 41, 40.5), (38, 39.2, 38.1), (42, 43.1, 42.2)]):
        runs["adjust", seed] = frame([[0, base, 50, 30], [1, adjust, 50, 30]])
        runs["permuted", seed] = frame([[0, base, 50, 30], [1, permuted, 50, 30]])
    scores = long_scores(runs)
    assert (baseline_agreement(scores)[["cam_miou"]].to_numpy() == 0).all()
    diffs = paired_differences(scores).set_index(["arm", "round", "versus", "score"])
    row = diffs.loc[("adjust", 1, "baseline", "cam_miou")]
    assert row["diff"] == pytest.approx((1 + 1.2 + 1.1) / 3) and row["verdict"] == "higher"
    row = diffs.loc[("adjust", 1, "permuted", "cam_miou")]
    assert row["diff"] == pytest.approx((0.5 + 1.1 + 0.9) / 3) and row["seeds"] == 3
    assert diffs.loc[("adjust", 1, "baseline", "seg_miou"), "verdict"] == "within noise"  # all differences 0
    assert ("permuted", 1, "permuted", "cam_miou") not in diffs.index      # no self-comparison
    arms = arm_table(scores).set_index(["arm", "round"])
    assert arms.loc[("adjust", 1), "cam_miou"] == pytest.approx((41 + 39.2 + 43.1) / 3)
    assert arms.loc[("adjust", 1), "seeds"] == 3


def test_runs_with_different_thread_counts_are_refused():
    usage = {("default", 0): pd.DataFrame({"threads": [float("nan"), 2.0]}),
             ("default", 1): pd.DataFrame({"threads": [float("nan"), 1.0]})}
    with pytest.raises(SystemExit, match="different CPU thread counts"):
        ablations.check_threads(usage, allow_mixed=False)
    assert ablations.check_threads(usage, allow_mixed=True) is None
    assert ablations.check_threads({("default", 0): pd.DataFrame({"threads": [2.0]})}, False) == 2

"""The tiny run's HTML report (snakemake --report) and conta-predict on its model.

The session's tiny run (tests/conftest.py, shared with tests/test_workflow.py) has the
segmenter trained 4 epochs instead of 1, so that its masks are not one class everywhere and
"conta-predict equals the workflow" means something, and logging.tensorboard on.
"""
import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from workflow_helpers import run_snakemake

from conta_core.store import MapReader

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def report_run(tiny_run):
    workdir = tiny_run.fresh()  # read only by the tests below
    return workdir, workdir / "results" / "tiny"


def test_report_shows_summary_plot_tables_and_overlays(tiny_run, report_run):
    workdir, results = report_run
    html_path = results / "report.html"
    run_snakemake(workdir, *tiny_run.args, "--report", str(html_path))
    html = html_path.read_text()
    # Every registered result is an entry (keyed by its path) with its caption rendered.
    entries = {
        "results/tiny/summary.csv": "Table 1 for this run: mIoU (%) per round",
        "results/tiny/miou_over_rounds.png": "mIoU (%) of CAM, pseudo-mask and segmentation over the rounds",
        "results/tiny/summary.html": "The whole summary, readable here: Table 1",
        "results/tiny/per_class.csv": "IoU (%) of every class, for every round and step",
        "results/tiny/round0/metrics/per_class.csv": "IoU (%) of every class in this round",
        "results/tiny/round1/metrics/per_class.csv": "IoU (%) of every class in this round",
        "results/tiny/round0/overlays.png": "Masks of this round for a fixed sample of images",
        "results/tiny/round1/overlays.png": "Masks of this round for a fixed sample of images",
    }
    for path, caption in entries.items():
        match = re.search(re.escape(f'"{path}": {{') + r'"name".{0,300}?"caption": "(.{0,2000}?)"', html)
        assert match, f"{path} is not an entry of the report"
        assert caption in match.group(1), f"{path}: caption {match.group(1)[:200]!r}"
    for category in ("1. Summary (Table 1)", "2. Per-class IoU", "3. Mask overlays", "round 0", "round 1"):
        assert category in html
    assert "Causal Intervention for Weakly-Supervised Semantic Segmentation" in html  # report/workflow.rst
    # Table 1 as HTML (shown inline; the CSV and Markdown files are downloads only).
    summary_page = (results / "summary.html").read_text()
    assert "<h3>" in summary_page and summary_page.count("<table>") >= 2 and "Round = 1" in summary_page
    # The overlay sheets themselves are embedded, byte for byte.
    embedded = {base64.b64decode(data) for data in re.findall(
        r"data:image/png;charset=utf8;filename=overlays\.png;base64,([A-Za-z0-9+/=]+)", html)}
    assert embedded == {(results / f"round{t}" / "overlays.png").read_bytes() for t in (0, 1)}


def test_overlay_sheet_has_a_row_per_sampled_image(report_run):
    _, results = report_run
    sheet = Image.open(results / "round0" / "overlays.png")
    # 4 training + 4 evaluation rows (report.overlay_count 4) of 14 + 14 + 128 + 4 px, plus title and legend.
    rows_height = 8 * (14 + 14 + 128 + 4)
    assert rows_height + 18 < sheet.height < rows_height + 18 + 80
    assert sheet.width >= 4 + 7 * (128 + 4)  # image, truth, >= 1 CAM, seeds, pseudo-mask, prediction


def test_conta_predict_equals_the_workflow_predictions(report_run, tmp_path):
    _, results = report_run
    script = Path(sys.executable).parent / "conta-predict"  # one thread, as the workflow jobs (tiny.yaml)
    assert script.exists(), "conta-predict is not installed: pip install -e ."
    ids = [f"val_{k:04d}" for k in (0, 1, 2, 5, 7)]
    images = [results / "dataset" / "synthetic" / "JPEGImages" / f"{i}.jpg" for i in ids]
    out = tmp_path / "masks"
    subprocess.run([str(script), "--model", str(results / "round1" / "segmenter.pt"), *map(str, images),
                    "--out", str(out), "--threads", "1", "--overlay"], check=True, capture_output=True, text=True)
    with MapReader(results / "round1" / "seg_pred" / "val" / "shard0.h5", kind="seg_pred") as workflow:
        masks = {i: np.asarray(Image.open(out / f"{i}.png")) for i in ids}
        for image_id in ids:
            np.testing.assert_array_equal(masks[image_id], workflow.get(image_id), err_msg=image_id)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i}.png" for i in ids)
    assert len(np.unique(np.concatenate([m.ravel() for m in masks.values()]))) >= 2  # not a constant model


def test_tensorboard_scalars_of_every_training_job(report_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, results = report_run
    for t in (0, 1):
        for step, iterations in (("train_classifier", 3), ("train_segmenter", 12)):  # 24 images / batch 8
            acc = EventAccumulator(str(results / "tensorboard" / f"round{t}" / step))
            acc.Reload()
            assert set(acc.Tags()["scalars"]) == {"loss/iteration", "lr/iteration", "loss/epoch", "lr/epoch"}
            assert [e.step for e in acc.Scalars("loss/iteration")] == list(range(1, iterations + 1)), (t, step)

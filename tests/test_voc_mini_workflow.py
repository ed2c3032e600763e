"""Real VOC images through the workflow (dataset.kind voc_layout).

- ../shared/data/voc_mini (18 real VOC 2012 pairs): labels and void as read by
  the index, and an end-to-end tiny snakemake run on them (skipped when the
  folder is absent).
- A voc_layout tree with broken items: the dataset_index rule fails before any
  training job with a log naming every bad id and file; with
  ``dataset.on_bad_item: skip`` the run goes past indexing.
"""
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conta_core.data.index import DatasetIndex, build_index
from conta_core.data.palette import save_index_png
from conta_core.data.voc import VOC_CLASSES
from workflow_helpers import planned_jobs, run_snakemake

REPO = Path(__file__).resolve().parents[1]
VOC_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_mini"

needs_voc_mini = pytest.mark.skipif(not VOC_MINI.is_dir(), reason=f"{VOC_MINI} is not available")


def tiny_voc_layout_config(root: Path, run: str, rounds: int = 0, **dataset) -> dict:
    """tests/configs/tiny.yaml's sizes for a voc_layout dataset of ~500x375 images.

    Full-resolution DeepLab prediction (~1 s per 500x375 image on 2 shared cores)
    dominates, so the end-to-end run is the baseline round only by default.
    """
    return {
        "run": run,
        "rounds": rounds,
        "dataset": {"kind": "voc_layout", "root": str(root), "classes": VOC_CLASSES, "void": 255,
                    "splits": {"train": "all.txt", "val": "all.txt"}, "train_split": "train",
                    "eval_split": "val", **dataset},
        "classifier": {"crop": 64, "batch_size": 6, "epochs": 1, "warmup_iters": 0},
        "cam": {"scales": [0.25], "flip": False},
        "expand": {"crf": {"iterations": 1}},
        "conta": {"map_size": [4, 4]},
        # Output stride 32: full-resolution prediction of 18 x 2 images is what dominates.
        "segment": {"crop": 64, "batch_size": 6, "epochs": 1, "msc_scales": [1.0], "warmup_iters": 0,
                    "output_stride": 32},
    }


def snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "test_config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return run_snakemake(workdir, "--configfile", str(configfile), *args, check=check)




# ------------------------------------------------------------------ voc_mini as voc_layout


@needs_voc_mini
def test_voc_mini_labels_masks_and_void(tmp_path):
    index = build_index({"kind": "voc_layout", "root": str(VOC_MINI), "classes": VOC_CLASSES,
                         "void": 255, "splits": {"train": "all.txt", "val": "all.txt"},
                         "train_split": "train", "eval_split": "val"}, tmp_path / "index")
    expected = json.loads((VOC_MINI / "image_labels.json").read_text())
    listed = (VOC_MINI / "ImageSets/Segmentation/all.txt").read_text().split()
    assert index.ids("train") == listed == index.ids("val") and len(listed) == 18
    assert index.classes == VOC_CLASSES and index.void == 255
    voids = 0
    for image_id in listed:
        names = [VOC_CLASSES[c] for c in index.labels(image_id)]
        assert names == sorted(expected[image_id], key=VOC_CLASSES.index), image_id
        mask = index.read_mask(image_id)
        raw = np.asarray(Image.open(VOC_MINI / "SegmentationClass" / f"{image_id}.png"))
        assert mask.dtype == np.uint8 and np.array_equal(mask, raw)  # index values, not colours
        assert set(np.unique(mask).tolist()) <= set(range(21)) | {255}
        voids += int((mask == 255).any())
        assert mask.shape == index.size(image_id) == index.read_image(image_id).shape[:2]
    assert voids == 18  # every VOC mask has its void border, and it is kept
    assert index.read_mask("2011_000006")[index.read_mask("2011_000006") != 255].max() == 18  # sofa
    # The source folder is read in place, never written to.
    assert not any(p.name in ("index.csv", "report.md") for p in VOC_MINI.rglob("*"))


@needs_voc_mini
@pytest.mark.workflow
def test_voc_mini_end_to_end(tmp_path):
    work = tmp_path / "work"
    config = tiny_voc_layout_config(VOC_MINI, "voc_mini")
    snakemake(work, config)
    results = work / "results" / "voc_mini"
    index = DatasetIndex.load(results / "dataset")
    assert len(index.ids("train")) == 18
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary["round"]) == [0]
    values = summary[["cam_miou", "pseudo_mask_miou", "seg_miou"]].to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 100)).all()
    per_class = pd.read_csv(results / "per_class.csv")
    assert set(per_class["step"]) == {"cam", "pseudo_mask", "seg"}
    for folder in ("cam", "pseudo_mask", "seg_pred/val"):
        assert (results / "round0" / folder / "shard0.h5").exists()
    # Nothing reads the last round's training-split prediction: it is not made.
    assert not (results / "round0" / "seg_pred" / "train").exists()
    again = snakemake(work, config, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


# ------------------------------------------------------------------ broken items


def make_voc_layout(root: Path, good: int = 6) -> list[str]:
    """A small valid voc_layout tree (VOC class list); returns the ids."""
    rng = np.random.default_rng(0)
    ids = [f"img{i:02d}" for i in range(good)]
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for number, image_id in enumerate(ids):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        mask = np.zeros((40, 48), np.uint8)
        mask[8:30, 10:40] = 1 + number % 20
        mask[7, 9:41] = 255
        save_index_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    (root / "ImageSets/Segmentation/all.txt").write_text("\n".join(ids) + "\n")
    return ids


def break_items(root: Path) -> dict[str, Path]:
    """Three bad items: a truncated JPEG, a missing mask, a mask of the wrong size."""
    truncated = root / "JPEGImages/img01.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    missing = root / "SegmentationClass/img02.png"
    missing.unlink()
    resized = root / "SegmentationClass/img03.png"
    save_index_png(resized, np.ones((20, 20), np.uint8))
    return {"img01": truncated, "img02": missing, "img03": resized}


@pytest.mark.workflow
def test_bad_items_stop_the_run_at_dataset_index(tmp_path):
    root = tmp_path / "data"
    make_voc_layout(root)
    bad = break_items(root)
    work = tmp_path / "work"
    config = tiny_voc_layout_config(root, "broken")
    result = snakemake(work, config, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Error in rule dataset_index" in output
    # No training (or any later) job was started.
    for rule in ("train_classifier", "cam", "expand", "train_segmenter"):
        assert f"rule {rule}:" not in output
    assert not (work / "results/broken/round0").exists()
    log = (work / "results/broken/logs/dataset_index.log").read_text()
    assert "3 problems" in log and "on_bad_item: skip" in log
    for image_id, path in bad.items():
        assert f"id {image_id!r}" in log and str(path) in log
    assert "cannot be decoded" in log and "mask file is missing" in log and "20x20" in log
    assert "Traceback" not in log  # one readable message, not a stack trace
    assert not (work / "results/broken/dataset/index.csv").exists()

    # Skipping bad items: indexing succeeds, the report lists them, training is next.
    config["dataset"]["on_bad_item"] = "skip"
    config["dataset"]["max_skip_fraction"] = 0.5  # 3 of 6 training images are bad on purpose
    snakemake(work, config, "--until", "dataset_index")
    index = DatasetIndex.load(work / "results/broken/dataset")
    assert index.ids("train") == ["img00", "img04", "img05"]
    report = (work / "results/broken/dataset/report.md").read_text()
    assert "## Skipped items (3)" in report
    for image_id in bad:
        assert image_id in report
    assert "skipped" in (work / "results/broken/logs/dataset_index.log").read_text()
    plan = planned_jobs(snakemake(work, config, "-n").stdout)
    # rounds 0: predictions of the eval split only (nothing reads the training split's)
    assert "dataset_index" not in plan and plan["train_classifier"] == 1 and plan["predict"] == 1

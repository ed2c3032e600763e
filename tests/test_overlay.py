"""Mask overlays (conta_core.overlay): colours, heat maps, blending, the sheet's layout, sampling."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conta_core.overlay import (VOID_COLOUR, Row, Tile, blend, classes_in, colorize, heat_colours, image_row,
                                render_sheet, sample_ids)

PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [10, 20, 30]]


def test_colorize_maps_indices_to_palette_and_void_to_cream():
    mask = np.array([[0, 1], [3, 255]], np.uint8)
    rgb = colorize(mask, PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 1].tolist() == [128, 0, 0] and rgb[1, 0].tolist() == [10, 20, 30]
    assert rgb[1, 1].tolist() == list(VOID_COLOUR)


def test_heat_colours_run_from_blue_to_red_and_clip():
    low, mid, high = heat_colours(np.array([0.0, 0.5, 1.0]))
    assert low.tolist() == [0, 0, 128]       # dark blue
    assert mid.tolist() == [128, 255, 128]   # green-ish centre of the ramp
    assert high.tolist() == [128, 0, 0]      # dark red
    assert heat_colours(np.array([-3.0, 7.0, np.nan])).tolist() == [[0, 0, 128], [128, 0, 0], [0, 0, 128]]


def test_blend_is_the_weighted_mean():
    image = np.full((1, 1, 3), 100, np.uint8)
    colours = np.array([[[200, 0, 50]]], np.uint8)
    assert blend(image, colours, 0.25)[0, 0].tolist() == [125, 75, 88]  # 0.25*c + 0.75*100, rounded
    with pytest.raises(ValueError, match="differ in shape"):
        blend(image, np.zeros((2, 1, 3), np.uint8), 0.5)


def test_classes_in_skips_void_and_missing_masks():
    assert classes_in([np.array([[0, 3], [255, 3]], np.uint8), None, np.array([[1]], np.uint8)]) == [0, 1, 3]


def test_sheet_places_tiles_in_rows_and_draws_the_legend():
    image = np.full((8, 8, 3), 40, np.uint8)
    mask = np.ones((8, 8), np.uint8)               # all class 1
    row = image_row("train a", image, ["bg", "one", "two", "three"], PALETTE, gt=mask,
                    cams=np.ones((1, 8, 8), np.float32), cam_classes=[2], seeds=mask, pseudo_mask=None,
                    prediction=mask)
    assert [t.title for t in row.tiles] == ["image", "ground truth", "CAM two", "seeds", "pseudo-mask", "prediction"]
    assert row.tiles[4].rgb is None                # no pseudo-mask: an "n/a" tile
    short = image_row("val b", image, ["bg", "one"], PALETTE, gt=mask, prediction=mask, with_training_columns=False)
    assert [t.title for t in short.tiles] == ["image", "ground truth", "prediction"]
    sheet = np.asarray(render_sheet([row, short], title="t", legend_classes=[1], class_names=["bg", "one"],
                                    palette=PALETTE, tile=32))
    # Width: 6 tiles of 32 px with 4 px gaps (at least 480); first tile at x = 4, y = 14 + 4 + 28.
    assert sheet.shape[1] == max(4 + 6 * 36, 480)
    top = 14 + 4 + 28
    assert sheet[top + 16, 4 + 16].tolist() == [40, 40, 40]                     # the image, enlarged
    expected_gt = blend(image, colorize(mask, PALETTE), 0.6)[0, 0].tolist()     # class 1 over the image
    assert sheet[top + 16, 4 + 36 + 16].tolist() == expected_gt
    assert sheet[top + 4, 4 + 4 * 36 + 4].tolist() == [200, 200, 200]           # n/a tile (off its text)
    # Second row: three tiles, nothing drawn where the first row has its fourth.
    second = top + 14 + 14 + 32 + 4
    assert sheet[second + 16, 4 + 2 * 36 + 16].tolist() == expected_gt          # its prediction
    assert sheet[second + 16, 4 + 3 * 36 + 16].tolist() == [255, 255, 255]
    # The legend's swatch of class 1 is below the rows.
    legend = sheet[second + 32 + 4:]
    assert (legend == np.array(PALETTE[1], np.uint8)).all(axis=-1).sum() >= 100


def test_row_rejects_mismatched_cams_and_sizes():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="CAMs for classes"):
        image_row("x", image, ["bg", "a"], PALETTE, cams=np.zeros((2, 8, 8), np.float32), cam_classes=[1])
    with pytest.raises(ValueError, match="differ in size"):
        image_row("x", image, ["bg", "a"], PALETTE, gt=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="at least one row"):
        render_sheet([], title="t", legend_classes=[], class_names=[], palette=PALETTE)
    assert Row("r", [Tile("t", None)]).tiles[0].rgb is None


def test_sample_ids_is_fixed_by_the_seed_and_keeps_order():
    ids = [f"i{k:02d}" for k in range(20)]
    first = sample_ids(ids, 4, seed=3)
    assert first == sample_ids(ids, 4, seed=3) and len(set(first)) == 4
    assert first == sorted(first, key=ids.index)
    assert first != sample_ids(ids, 4, seed=4)
    assert sample_ids(ids[:3], 5, seed=0) == ids[:3]


def test_overlay_step_loads_no_torch():
    scripts = Path(__file__).resolve().parents[1] / "workflow_scripts"
    code = f"import sys; sys.path.insert(0, {str(scripts)!r}); import overlays; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_overlay_ids_override_the_sample_and_unknown_ids_are_named(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "workflow_scripts"))
    from overlays import chosen_ids

    class Index:
        def ids(self, split):
            return {"train": ["t0", "t1", "t2", "t3"], "val": ["v0", "v1", "v2"]}[split]

    s = {"train_split": "train", "eval_split": "val",
         "report": {"overlay_count": 2, "overlay_seed": 5, "overlay_ids": []}}
    train, evaluation = chosen_ids(Index(), s)
    assert train == sample_ids(["t0", "t1", "t2", "t3"], 2, 5) and evaluation == sample_ids(["v0", "v1", "v2"], 2, 6)
    s["report"]["overlay_ids"] = ["v2", "t1"]
    assert chosen_ids(Index(), s) == (["t1"], ["v2"])
    s["report"]["overlay_ids"] = ["t1", "nope"]
    with pytest.raises(SystemExit, match=r"report.overlay_ids: \['nope'\]"):
        chosen_ids(Index(), s)

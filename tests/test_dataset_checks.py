"""Issue 10, dataset side: class-list diagnosis, skip cap, classes.json schema, list files,
safe run names, EXIF orientation, max_side, sanity checks and the label map.

Each test builds a tiny dataset in a temporary folder (or damages a copy of the
synthetic one); voc_mini is used where present and skipped cleanly otherwise.
"""
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conta_core.data.index import DatasetError, DatasetIndex, build_index
from conta_core.data.palette import save_index_png
from conta_core.data.synthetic import CLASSES, DEFAULT_PARAMS, generate_synthetic

REPO = Path(__file__).resolve().parents[1]
VOC_MINI = REPO.parent / "shared/data/voc_mini"
ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "syn"
    generate_synthetic(root, **dict(DEFAULT_PARAMS, num_train=12, num_val=6))
    return root


@pytest.fixture
def syn(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "data"))


def cfg(root: Path, **extra) -> dict:
    return dict({"kind": "voc_layout", "root": str(root), "splits": {"train": "train.txt", "val": "val.txt"},
                 "train_split": "train", "on_bad_item": "error"}, **extra)


def build_error(root: Path, tmp_path: Path, **extra) -> str:
    with pytest.raises(DatasetError) as info:
        build_index(cfg(root, **extra), tmp_path / "index")
    assert not (tmp_path / "index" / "index.csv").exists()
    return str(info.value)


def make_dataset(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                 splits: dict[str, list[str]], exif: dict[str, int] | None = None) -> Path:
    """A VOC-layout folder: RGB arrays as JPEGs (optionally with an EXIF orientation), masks as PNGs."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    for image_id, rgb in images.items():
        image = Image.fromarray(rgb)
        if exif and image_id in exif:
            tags = Image.Exif()
            tags[ORIENTATION] = exif[image_id]
            image.save(root / "JPEGImages" / f"{image_id}.jpg", quality=95, exif=tags.tobytes())
        else:
            image.save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
    for image_id, mask in masks.items():
        save_index_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    for split, ids in splits.items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


# ------------------------------------------------------------------ 5: class list vs bad images


def test_short_class_list_is_named_as_a_class_list_problem(syn, tmp_path):
    (syn / "classes.json").unlink()
    short = CLASSES[:3]  # masks use 0..5: values 3, 4, 5 are beyond this list
    message = build_error(syn, tmp_path, classes=short, on_bad_item="skip")
    assert "class-list problem" in message
    assert "the class list has 3 names (indices 0..2)" in message
    masks = [np.asarray(Image.open(p)) for p in sorted((syn / "SegmentationClass").glob("*.png"))]
    beyond = sum(bool(set(np.unique(m).tolist()) & {3, 4, 5}) for m in masks)
    assert f"{beyond} of {len(masks)} masks hold values beyond the class list" in message
    for value in (3, 4, 5):
        count = sum(value in m for m in masks)
        assert f"{value} ({count} masks)" in message
    assert "on_bad_item: skip" not in message  # not offered as the fix
    assert "(1 problem)" in message and "For example: id '" in message  # one cause, not a list of ids


def test_voc_mini_with_five_names_is_a_class_list_problem(tmp_path):
    if not VOC_MINI.is_dir():
        pytest.skip(f"{VOC_MINI} is not available")
    names = ["background", "aeroplane", "bicycle", "bird", "boat"]
    with pytest.raises(DatasetError) as info:
        build_index({"kind": "voc_layout", "root": str(VOC_MINI), "classes": names,
                     "splits": {"all": "all.txt"}, "train_split": "all", "on_bad_item": "skip"},
                    tmp_path / "index")
    message = str(info.value)
    assert "class-list problem" in message and "of 18 masks hold values beyond" in message
    assert "15 (5 masks)" in message  # person: 5 of the 18 images
    assert "the class list has 5 names" in message


def test_one_bad_mask_is_still_an_item_problem(syn, tmp_path):
    path = syn / "SegmentationClass/train_0004.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[:3, :3] = 9
    save_index_png(path, mask)
    message = build_error(syn, tmp_path)
    assert "id 'train_0004': mask has values [9]" in message and "class-list problem" not in message


def test_skip_never_drops_more_than_max_skip_fraction(syn, tmp_path):
    for i in (2, 7):
        (syn / f"JPEGImages/train_{i:04d}.jpg").unlink()
    message = build_error(syn, tmp_path, on_bad_item="skip")  # default 0.05
    assert "would drop 2 of 12 images of split 'train' (17%)" in message
    assert "dataset.max_skip_fraction 0.05" in message and "'train_0002'" in message
    with pytest.warns(UserWarning, match="skipped 2 bad item"):
        index = build_index(cfg(syn, on_bad_item="skip", max_skip_fraction=0.2), tmp_path / "ok")
    assert len(index.ids("train")) == 10


# ------------------------------------------------------------------ 7: classes.json schema


@pytest.mark.parametrize("content, expected", [
    (json.dumps(CLASSES), "must hold a JSON object"),
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary", "is not UTF-8 text"),
    (json.dumps({"names": CLASSES, "void": "none"}), "void must be an integer 0..255"),
    (json.dumps({"names": CLASSES, "void": True}), "void must be an integer 0..255"),
    (json.dumps({"names": ["background", 3, None]}), "every class name must be a non-empty string"),
    (json.dumps({"names": "background horse"}), "must be a non-empty list of strings"),
    (json.dumps({"names": ["background", "horse", "horse"]}), "class names repeat: ['horse']"),
    (json.dumps({"names": CLASSES, "palete": []}), "unknown key(s) ['palete']"),
    (json.dumps({"names": CLASSES, "palette": [[1, 2]]}), "palette must be a list of [r, g, b]"),
    ('{"names": ["background",', "is not valid JSON (line 1"),
])
def test_malformed_classes_json_is_one_clear_error(syn, tmp_path, content, expected):
    path = syn / "classes.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    message = build_error(syn, tmp_path, kind="synthetic")
    assert expected in message and str(path) in message


def test_config_class_names_must_be_strings(syn, tmp_path):
    (syn / "classes.json").unlink()
    message = build_error(syn, tmp_path, classes=["background", False, "rider"])
    assert "dataset.classes" in message and "#1 False" in message


# ------------------------------------------------------------------ 8: ids, run names, root


def test_id_with_a_space_is_refused_naming_file_and_line(syn, tmp_path):
    listing = syn / "ImageSets/Segmentation/train.txt"
    lines = listing.read_text().splitlines()
    lines.insert(4, "train 0099")
    listing.write_text("\n".join(lines) + "\n")
    message = build_error(syn, tmp_path, on_bad_item="skip")
    assert f"line 5: 'train 0099'" in message and str(listing) in message
    assert "'train'" not in message.replace("split 'train'", "")  # never the cut id


def test_two_path_tokens_per_line_still_read(syn, tmp_path):
    listing = syn / "ImageSets/Segmentation/train.txt"
    ids = listing.read_text().split()
    listing.write_text("".join(f"/JPEGImages/{i}.jpg /SegmentationClass/{i}.png\n" for i in ids))
    index = build_index(cfg(syn), tmp_path / "index")
    assert index.ids("train") == ids


def test_root_that_is_a_file_says_so(tmp_path):
    root = tmp_path / "dataset.zip"
    root.write_bytes(b"PK")
    message = build_error(root, tmp_path)
    assert f"{root} is a file, not a folder" in message


def test_damaged_index_classes_json_is_named(syn, tmp_path):
    build_index(cfg(syn), tmp_path / "index")
    path = tmp_path / "index/classes.json"
    for content in ('["background", "horse"]', '{"names": ["background", "horse"], "void": "none"}',
                    "\x00\x01 not json"):
        path.write_text(content)
        with pytest.raises(DatasetError, match=re.escape(str(path))):
            DatasetIndex.load(tmp_path / "index")


def test_run_name_is_a_safe_folder_name():
    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())
    pattern = schema["properties"]["run"]["pattern"]
    for good in ("demo", "voc12_irnet", "run-1.2", "2024"):
        assert re.search(pattern, good), good
    for evil in ("..", ".", ".hidden", "a/b", "", "-x", "a b"):
        assert not re.search(pattern, evil), evil


# ------------------------------------------------------------------ 9: EXIF orientation, max_side


def quadrants(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image with a red top-left quadrant and its mask (class 1 there, 0 elsewhere)."""
    rgb = np.full((height, width, 3), 30, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    rgb[:height // 2, :width // 2] = (230, 20, 20)
    mask[:height // 2, :width // 2] = 1
    return rgb, mask


def test_exif_rotated_square_photo_is_read_upright(tmp_path):
    upright, mask = quadrants(64, 64)
    # Orientation 6: the viewer turns the stored pixels 90 degrees clockwise, so the
    # stored pixels are the upright image turned 90 degrees counter-clockwise.
    stored = np.rot90(upright, k=1).copy()
    root = make_dataset(tmp_path / "d", {"a": stored}, {"a": mask}, {"train": ["a"]}, exif={"a": 6})
    with pytest.warns(UserWarning, match="'a': EXIF orientation 6"):
        index = build_index(cfg(root, classes=["background", "thing"], splits={"train": "train.txt"},
                                eval_split=None), tmp_path / "index")
    image = index.read_image("a").astype(int)
    red = (image[..., 0] > 150) & (image[..., 1] < 100)
    assert np.array_equal(red, index.read_mask("a") == 1)  # aligned with its mask
    assert "EXIF orientation applied to 1 image(s)" in (tmp_path / "index/report.md").read_text()


def test_mask_matching_only_the_unrotated_photo_is_refused(tmp_path):
    upright, mask = quadrants(80, 60)  # upright: 60 wide, 80 high
    stored = np.rot90(upright, k=1).copy()  # stored: 80 wide, 60 high
    root = make_dataset(tmp_path / "d", {"a": stored, "b": stored}, {"a": np.rot90(mask, k=1).copy(),
                        "b": mask}, {"train": ["a", "b"]}, exif={"a": 6, "b": 6})
    message = build_error(root, tmp_path, classes=["background", "thing"], splits={"train": "train.txt"})
    assert "id 'a': mask is 80x60, the size of the image's stored pixels" in message
    assert "EXIF orientation (6" in message and "'b'" not in message
    (root / "ImageSets/Segmentation/train.txt").write_text("b\n")
    with pytest.warns(UserWarning, match=r"EXIF orientation applied to 1 image\(s\).*'b'"):
        index = build_index(cfg(root, classes=["background", "thing"], splits={"train": "train.txt"}),
                            tmp_path / "index")
    assert index.size("b") == (80, 60) and index.read_image("b").shape == (80, 60, 3)


def test_max_side_downscales_images_and_masks_alike(tmp_path):
    rgb, mask = quadrants(200, 300)
    mask[:6, :] = 255  # void band, 2 rows after downscaling
    small, small_mask = quadrants(40, 30)
    root = make_dataset(tmp_path / "d", {"big": rgb, "small": small},
                        {"big": mask, "small": small_mask}, {"train": ["big", "small"]})
    settings = cfg(root, classes=["background", "thing"], splits={"train": "train.txt"}, max_side=100)
    with pytest.warns(UserWarning, match=r"larger than dataset.max_side 100 .*'big' \(300x200\)"):
        index = build_index(settings, tmp_path / "index")
    assert index.original_size("big") == (200, 300)
    assert index.size("big") == (67, 100)  # 200 * 100/300 = 66.7
    image, small_mask_read = index.read_image("big"), index.read_mask("big")
    assert image.shape == (67, 100, 3) and small_mask_read.shape == (67, 100)
    assert set(np.unique(small_mask_read).tolist()) == {0, 1, 255}  # nearest: no new values
    assert (small_mask_read[:2] == 255).all() and (small_mask_read[3:33, :50] == 1).all() and small_mask_read[34:, 51:].max() == 0
    assert image[20, 20, 0] > 150 and image[50, 80, 0] < 100  # the red quadrant stays on class 1
    assert index.size("small") == (40, 30) and np.array_equal(index.read_mask("small"), small_mask)
    assert json.loads((tmp_path / "index/classes.json").read_text())["max_side"] == 100


def test_oversized_image_named_at_indexing_without_max_side(tmp_path):
    rgb, mask = quadrants(8, 2100)
    root = make_dataset(tmp_path / "d", {"wide": rgb}, {"wide": mask}, {"train": ["wide"]})
    with pytest.warns(UserWarning, match=r"side over 2048 px: 'wide' \(2100x8\).*dataset.max_side"):
        build_index(cfg(root, classes=["background", "thing"], splits={"train": "train.txt"}),
                    tmp_path / "index")


# ------------------------------------------------------------------ 10: sanity, label_map

CAMVID = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
          "Pedestrian", "Bicyclist"]  # 11 classes, void 11


@pytest.fixture
def camvid(tmp_path) -> Path:
    """24 CamVid-like masks: classes 0..10 in blocks, void 11 on every border."""
    rng = np.random.default_rng(0)
    images, masks = {}, {}
    for n in range(24):
        mask = np.zeros((16, 16), np.uint8)
        for block in range(4):
            top, left = divmod(block, 2)
            mask[top * 8:top * 8 + 8, left * 8:left * 8 + 8] = rng.integers(0, 11)
        mask[0, :] = 11
        images[f"f{n:02d}"] = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        masks[f"f{n:02d}"] = mask
    ids = list(images)
    return make_dataset(tmp_path / "camvid", images, masks, {"train": ids[:20], "val": ids[20:]})


def test_camvid_off_by_one_class_list_stops_with_an_explanation(camvid, tmp_path):
    message = build_error(camvid, tmp_path, classes=["background"] + CAMVID, void=255)
    assert "class 11 'Bicyclist' is in 20 of 20 images of the training split 'train'" in message
    assert "declared void 255 never occurs" in message and "dataset.void: 11" in message
    with pytest.warns(UserWarning, match="class 11 'Bicyclist'"):
        build_index(cfg(camvid, classes=["background"] + CAMVID, void=255, sanity="warn"),
                    tmp_path / "warned")
    report = (tmp_path / "warned/report.md").read_text()
    assert "## Warnings (1)" in report and "class 11 'Bicyclist' is in 20 of 20" in report


def test_label_map_brings_camvid_in_without_rewriting_masks(camvid, tmp_path):
    before = {p.name: p.read_bytes() for p in (camvid / "SegmentationClass").iterdir()}
    index = build_index(cfg(camvid, classes=CAMVID, void=255, label_map={"11": "void", 10: 9}),
                        tmp_path / "index")
    raw = np.asarray(Image.open(camvid / "SegmentationClass/f00.png"))
    mapped = index.read_mask("f00")
    assert np.array_equal(mapped == 255, raw == 11) and not (mapped == 10).any()
    assert np.array_equal(mapped[(raw != 11) & (raw != 10)], raw[(raw != 11) & (raw != 10)])
    assert (mapped[raw == 10] == 9).all()
    assert all(10 not in index.labels(i) for i in index.ids("train"))
    assert {p.name: p.read_bytes() for p in (camvid / "SegmentationClass").iterdir()} == before
    assert "label map" in (tmp_path / "index/report.md").read_text()


@pytest.mark.parametrize("label_map, expected", [
    ({"11": 12}, "dataset.label_map[11] = 12 is neither a class index 0..10"),
    ({"300": "void"}, "dataset.label_map key '300' is not a mask value"),
    ({"x": 1}, "dataset.label_map key 'x'"),
])
def test_bad_label_map_is_named(camvid, tmp_path, label_map, expected):
    assert expected in build_error(camvid, tmp_path, classes=CAMVID, void=255, label_map=label_map)


def test_class_in_every_training_image_is_flagged(tmp_path):
    rng = np.random.default_rng(1)
    images, masks = {}, {}
    for n in range(20):
        mask = np.full((12, 12), 1, np.uint8)  # "road" everywhere
        mask[6:, 6:] = 2 + n % 2
        mask[0] = 255
        images[f"i{n}"], masks[f"i{n}"] = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), mask
    root = make_dataset(tmp_path / "d", images, masks, {"train": list(images)})
    message = build_error(root, tmp_path, classes=["background", "road", "car", "bus"],
                          splits={"train": "train.txt"})
    assert "class 1 'road' is in 20 of 20 images" in message and "no image without it" in message
    assert "'car'" not in message

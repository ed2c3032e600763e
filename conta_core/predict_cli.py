"""``conta-predict``: a trained round's segmenter on your own images.

    conta-predict --model results/<run>/round<T>/segmenter.pt IMAGES... --out DIR
                  [--overlay] [--crf | --no-crf] [--batch-size N] [--device auto] [--threads N]

Writes ``DIR/<name>.png`` per image: a palette PNG whose pixel values are class
indices (as VOC's SegmentationClass), coloured with the run's palette, the class
names in its ``conta_classes`` text chunk, and ``DIR/classes.json`` (names, void,
palette). ``--overlay`` adds ``DIR/overlays/<name>.png``: image, prediction over
the image, and a legend. IMAGES may be files or folders (their .jpg/.jpeg/.png).

The prediction is the workflow's: images read the same way (EXIF orientation,
the run's ``dataset.max_side``), same-sized images batched, and
:func:`conta_core.segment.predict_masks` with the checkpoint's own settings
(dense CRF with ``--crf``; a run with ``segment.crf: true`` predicted with it, and
checkpoints that do not record that setting need the flag). A mask predicted
on an image read downscaled past ``max_side`` is scaled back to the image's size
by nearest neighbour. Memory: an image whose longer side (as read) exceeds
``--max-side`` (default 1024, :data:`conta_core.segment.PREDICT_MAX_SIDE`) is
predicted at that side and named in a warning, so a 4000x3000 photo needs no
more memory than a 1024x768 one (bench/predict_memory.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class PredictError(RuntimeError):
    """A bad checkpoint, image or output folder: the message says which and why."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conta-predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--model", type=Path, required=True, help="a round's segmenter.pt")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--overlay", action="store_true", help="also write overlays/<name>.png")
    crf = p.add_mutually_exclusive_group()
    crf.add_argument("--crf", dest="crf", action="store_true", default=None,
                     help="dense-CRF post-processing, as a run with segment.crf: true (default: what the "
                          "checkpoint records, else off)")
    crf.add_argument("--no-crf", dest="crf", action="store_false")
    p.add_argument("--batch-size", type=int, default=None,
                   help="same-sized images predicted together (default: the run's segment.predict_batch_size)")
    p.add_argument("--max-side", type=int, default=None,
                   help="predict images with a longer side over this downscaled, masks scaled back "
                        "(default 1024; 0: never; memory grows with the image's pixels)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their images, sorted. Output names must be unique."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not inside:
                raise PredictError(f"{path}: folder holds no {'/'.join(IMAGE_SUFFIXES)} images")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise PredictError(f"{path}: no such file or folder")
    seen: dict[str, Path] = {}
    for path in found:
        if path.stem in seen:
            raise PredictError(f"{seen[path.stem]} and {path} would both be written as {path.stem}.png; "
                               "rename one or predict them into different --out folders")
        seen[path.stem] = path
    return found


def image_sizes(paths: list[Path], max_side: int | None) -> dict[Path, tuple[int, int]]:
    """(height, width) each image is predicted at; every unreadable image named at once."""
    from PIL import Image, UnidentifiedImageError

    from .data.images import orientation, upright_size, working_size

    sizes, bad = {}, []
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = upright_size(image.size, orientation(image))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            bad.append(f"  {path}: {err}")
            continue
        sizes[path] = working_size(height, width, max_side)
    if bad:
        raise PredictError(f"{len(bad)} of {len(paths)} images cannot be read as images:\n" + "\n".join(bad))
    return sizes


def _read(path: Path, max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as the workflow reads it, and its full upright (height, width)."""
    from PIL import Image

    from .data.images import orientation, read_rgb, upright_size

    try:
        with Image.open(path) as image:
            width, height = upright_size(image.size, orientation(image))
        return read_rgb(path, max_side), (height, width)
    except (OSError, ValueError) as err:  # e.g. a truncated file: its header read, its pixels not
        raise PredictError(f"{path}: cannot decode the image ({err})") from err


def _write_outputs(out: Path, name: str, image: np.ndarray, mask: np.ndarray, meta: dict,
                   overlay: bool) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from .data.palette import voc_colormap
    from .overlay import classes_in, mask_tile, render_sheet, Row, Tile

    palette = meta.get("palette") or voc_colormap(256)
    flat = [channel for colour in palette for channel in colour][:768]
    png = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    png.putpalette(flat + [0] * (768 - len(flat)))
    text = PngInfo()
    text.add_text("conta_classes", json.dumps(meta["class_names"]))
    png.save(out / f"{name}.png", format="PNG", pnginfo=text)
    if overlay:
        names, void = meta["class_names"], int(meta.get("void", 255))
        row = Row(name, [Tile("image", image), mask_tile("prediction", image, mask, palette, void)])
        side = max(image.shape[:2])
        sheet = render_sheet([row], title=f"{name}: {meta.get('run', 'conta')} round {meta.get('round')}",
                             legend_classes=classes_in([mask], void), class_names=names, palette=palette,
                             tile=min(max(side, 160), 512))
        sheet.save(out / "overlays" / f"{name}.png", format="PNG")


def predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cam_labels import same_size_batches
    from .data.images import resize_mask
    from .devices import resolve_device, set_threads, use_deterministic_algorithms
    from .segment import PREDICT_MAX_SIDE, CheckpointError, load_segmenter, oversized, predict_masks

    paths = collect_images(args.images)
    try:
        model, meta = load_segmenter(args.model)
    except CheckpointError as err:
        raise PredictError(str(err)) from err
    settings = meta["settings"]["segment"]
    max_side = meta.get("max_side")
    crf = bool(settings.get("crf", False)) if args.crf is None else args.crf
    if args.crf is None and "crf" not in settings:
        print("conta-predict: the checkpoint does not record segment.crf; predicting without the dense CRF "
              "(pass --crf for a run with segment.crf: true)", file=sys.stderr)
    batch_size = args.batch_size or int(settings.get("predict_batch_size", 16))
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    sizes = image_sizes(paths, max_side)
    predict_side = PREDICT_MAX_SIDE if args.max_side is None else (args.max_side or None)
    if predict_side is not None and predict_side < 32:
        raise PredictError(f"--max-side must be 0 (no limit) or >= 32, got {args.max_side}")
    warning = oversized(paths, sizes.__getitem__, predict_side, "--max-side")
    if warning:
        print(f"conta-predict: warning: {warning}", file=sys.stderr)
    if args.threads is not None:
        set_threads(args.threads)
    use_deterministic_algorithms()  # as the workflow's predict step
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise PredictError(f"--device {args.device}: {err}") from err
    model.to(device).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.overlay:
        (args.out / "overlays").mkdir(exist_ok=True)
    classes = {"names": meta["class_names"], "void": int(meta.get("void", 255)), "palette": meta.get("palette")}
    (args.out / "classes.json").write_text(json.dumps(classes, indent=1) + "\n")
    print(f"conta-predict: {len(paths)} images, {args.model} (round {meta.get('round')}, "
          f"{len(meta['class_names'])} classes), device {device}, crf {crf}, batch {batch_size}",
          file=sys.stderr, flush=True)
    progress = tqdm(total=len(paths), desc="conta-predict", file=sys.stderr, disable=args.quiet)
    for batch in same_size_batches(paths, sizes.__getitem__, batch_size):
        read = [_read(path, max_side) for path in batch]
        masks = predict_masks(model, [image for image, _ in read], device, crf, predict_side)
        for path, (image, full), mask in zip(batch, read, masks):
            if mask.shape != full:  # read downscaled past max_side: back to the image's size
                mask, image = resize_mask(mask, *full), _read(path, None)[0] if args.overlay else image
            _write_outputs(args.out, path.stem, image, np.ascontiguousarray(mask), meta, args.overlay)
        progress.update(len(batch))
    progress.close()
    print(f"conta-predict: wrote {len(paths)} masks to {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return predict(args)
    except PredictError as err:
        print(f"conta-predict: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Mask overlays for people: image, ground truth, CAMs, seeds, pseudo-mask and prediction side by side.

numpy and pillow only (the overlay job loads no torch). Masks are drawn with the
dataset's palette (the colours of its palette PNGs) and void (255) in VOC's cream;
CAM heat maps go from dark blue (0) through green and yellow to red (1). Each row is
one image; rows may have different numbers of tiles (an image has one CAM per
labelled class; evaluation images have no CAM, seeds or pseudo-mask). A legend of the
classes that appear in the sheet's masks is drawn under the rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VOID_COLOUR = (224, 224, 192)   # VOC's void border
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
MISSING = (200, 200, 200)
PAD = 4                          # pixels between tiles
CAPTION_H = 14                   # caption line above each tile (pillow's default font is ~11 px)


@dataclass
class Tile:
    title: str
    rgb: np.ndarray | None       # uint8 HxWx3; None: drawn as a grey "n/a" tile


@dataclass
class Row:
    label: str                   # e.g. "train 0007 (horse, person)"
    tiles: list[Tile] = field(default_factory=list)


def colorize(mask: np.ndarray, palette: list[list[int]], void: int = 255) -> np.ndarray:
    """uint8 HxW class indices -> uint8 HxWx3 in the palette's colours (void in cream)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    lut = np.zeros((256, 3), np.uint8)
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    lut[:len(colours)] = colours
    lut[void] = VOID_COLOUR
    return lut[mask.astype(np.uint8)]


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB, a jet-like ramp (clipped outside [0, 1])."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return (np.stack([r, g, b], axis=-1) * 255.0 + 0.5).astype(np.uint8)


def blend(image: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * colours + (1 - alpha) * image, both uint8 HxWx3."""
    if image.shape != colours.shape:
        raise ValueError(f"image {image.shape} and overlay {colours.shape} differ in shape")
    mixed = alpha * colours.astype(np.float32) + (1.0 - alpha) * image.astype(np.float32)
    return (mixed + 0.5).astype(np.uint8)


def mask_tile(title: str, image: np.ndarray, mask: np.ndarray | None, palette, void: int = 255,
              alpha: float = 0.6) -> Tile:
    """A mask in palette colours over the dimmed image (None: an "n/a" tile)."""
    if mask is None:
        return Tile(title, None)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"{title}: mask {mask.shape} and image {image.shape[:2]} differ in size")
    return Tile(title, blend(image, colorize(mask, palette, void), alpha))


def cam_tile(title: str, image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> Tile:
    """One class's CAM ([H, W], max-normalised) as a heat map over the image."""
    if cam.shape != image.shape[:2]:
        raise ValueError(f"{title}: CAM {cam.shape} and image {image.shape[:2]} differ in size")
    return Tile(title, blend(image, heat_colours(cam), alpha))


def classes_in(masks, void: int = 255) -> list[int]:
    """Sorted class indices that occur in any of ``masks`` (void left out)."""
    found: set[int] = set()
    for mask in masks:
        if mask is not None:
            found.update(int(c) for c in np.unique(mask) if int(c) != void)
    return sorted(found)


def _fit(rgb: np.ndarray, size: int) -> Image.Image:
    """Scale so the longer side is ``size`` (nearest: masks keep crisp borders when enlarged)."""
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.NEAREST if scale >= 1 else Image.BILINEAR
    return Image.fromarray(rgb).resize(target, resample)


def _legend(class_ids: list[int], names: list[str], palette, width: int, font) -> Image.Image:
    """Swatches with class names, wrapped to ``width``."""
    swatch, gap = 12, 10
    items = []
    for c in class_ids:
        name = names[c] if c < len(names) else f"class {c}"
        colour = tuple(int(x) for x in palette[c]) if c < len(palette) else MISSING
        items.append((f"{c} {name}", colour))
    items.append(("void / ignored", VOID_COLOUR))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [swatch + 4 + int(probe.textlength(text, font=font)) + gap for text, _ in items]
    lines, x = [[]], 0
    for item, w in zip(items, widths):
        if x + w > width and lines[-1]:
            lines.append([])
            x = 0
        lines[-1].append((item, w))
        x += w
    line_h = swatch + 6
    legend = Image.new("RGB", (width, CAPTION_H + line_h * len(lines) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(legend)
    draw.text((PAD, 0), "Classes (mask colours):", fill=TEXT, font=font)
    for row, line in enumerate(lines):
        x, y = PAD, CAPTION_H + row * line_h
        for (text, colour), w in line:
            draw.rectangle([x, y, x + swatch, y + swatch], fill=colour, outline=TEXT)
            draw.text((x + swatch + 4, y), text, fill=TEXT, font=font)
            x += w
    return legend


def render_sheet(rows: list[Row], *, title: str, legend_classes: list[int], class_names: list[str],
                 palette, tile: int = 128) -> Image.Image:
    """All rows as one RGB image: a title, then per row its label and tiles, then the legend."""
    if not rows:
        raise ValueError("render_sheet needs at least one row")
    font = ImageFont.load_default()
    columns = max(len(row.tiles) for row in rows)
    width = max(PAD + columns * (tile + PAD), 480)
    row_h = CAPTION_H + CAPTION_H + tile + PAD   # row label, tile titles, tiles
    legend = _legend(legend_classes, class_names, palette, width, font)
    height = CAPTION_H + PAD + len(rows) * row_h + legend.height
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 2), title, fill=TEXT, font=font)
    y = CAPTION_H + PAD
    for row in rows:
        draw.text((PAD, y), row.label, fill=TEXT, font=font)
        for k, t in enumerate(row.tiles):
            x = PAD + k * (tile + PAD)
            draw.text((x, y + CAPTION_H), _clip_text(draw, t.title, tile, font), fill=TEXT, font=font)
            top = y + 2 * CAPTION_H
            if t.rgb is None:
                draw.rectangle([x, top, x + tile - 1, top + tile - 1], fill=MISSING)
                draw.text((x + tile // 2 - 8, top + tile // 2 - 6), "n/a", fill=TEXT, font=font)
            else:
                sheet.paste(_fit(t.rgb, tile), (x, top))
        y += row_h
    sheet.paste(legend, (0, y))
    return sheet


def _clip_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def sample_ids(ids: list[str], count: int, seed: int) -> list[str]:
    """``count`` ids drawn without replacement by ``seed``, in their original order (all if fewer)."""
    if count >= len(ids):
        return list(ids)
    chosen = np.random.default_rng(seed).choice(len(ids), size=count, replace=False)
    return [ids[i] for i in sorted(chosen)]


def image_row(label: str, image: np.ndarray, class_names: list[str], palette, void: int = 255, *,
              gt: np.ndarray | None = None, cams: np.ndarray | None = None, cam_classes: list[int] = (),
              seeds: np.ndarray | None = None, pseudo_mask: np.ndarray | None = None,
              prediction: np.ndarray | None = None, with_training_columns: bool = True) -> Row:
    """One image's row: image, ground truth, one CAM per labelled class, seeds, pseudo-mask, prediction.

    ``with_training_columns`` False (evaluation images, which have no CAM, seeds or
    pseudo-mask) leaves those columns out instead of drawing "n/a" tiles.
    """
    tiles = [Tile("image", image), mask_tile("ground truth", image, gt, palette, void)]
    if with_training_columns:
        if cams is not None:
            if len(cams) != len(cam_classes):
                raise ValueError(f"{label}: {len(cams)} CAMs for classes {list(cam_classes)}")
            for cam, c in zip(cams, cam_classes):
                name = class_names[c] if c < len(class_names) else str(c)
                tiles.append(cam_tile(f"CAM {name}", image, cam))
        tiles.append(mask_tile("seeds", image, seeds, palette, void))
        tiles.append(mask_tile("pseudo-mask", image, pseudo_mask, palette, void))
    tiles.append(mask_tile("prediction", image, prediction, palette, void))
    return Row(label, tiles)

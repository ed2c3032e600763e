"""A generated, deliberately confounded dataset in VOC layout.

Why: the default run must need no download, yet every step (CAM, pseudo-mask,
segmentation, confounder) must be scorable against known ground truth, and
the data must contain the three problems CONTA is about (paper, Figure 2), each
behind its own knob so their effect can be switched off (0) or maxed out (1).

Classes (index: name): 0 background, 1 horse, 2 rider, 3 boat, 4 bird, 5 car.
Objects are simple shapes made of parts, each part with a class-specific
colour and texture (period 4-8 px): horse = brown dappled body, legs, neck,
head; rider = skin head, red striped torso, blue legs; boat = orange hull,
white sail, mast; bird = yellow spotted body + head (the discriminative core)
and two broad wings (about half of the bird); car = green checked body, grey
windows, black wheels. Each image holds 1-3 object groups (distinct classes,
random size and position) on a background and always has a foreground label.

Knobs, all in [0, 1], 0 = no confounding:

``ambiguity`` (object ambiguity, Fig. 2a)
    When a horse or a rider is drawn, with this probability it is a
    "rider on horse" group: the rider sits on the horse's back, its legs over
    the horse's body, so the two masks touch. Otherwise the one drawn appears
    alone and its partner is kept out of the image. 0: riders and horses never
    share an image; 1: they never appear apart.
``background_context`` (incomplete background, Fig. 2b)
    "Water" (blue wavy stripes below a horizon, labelled background) appears
    in boat images with probability ``b + (1 - b) * k`` and in other images
    with ``b * (1 - k)`` (base rate ``b`` = :data:`CONTEXT_BASE_RATE`); boats
    then float on it. 0: water is independent of boats; 1: every boat image
    and no other image has water.
``foreground_context`` (incomplete foreground, Fig. 2c)
    With this probability a bird image is drawn under a "sky" (light blue
    gradient with clouds, above the horizon, labelled background) and the
    bird's wings take the sky's texture (slightly darker), so only the core
    looks like a bird. Otherwise the wings have the bird's own wing texture and
    sky appears at the base rate; non-bird images get sky with ``b * (1 - k)``.
``noise``
    Per-pixel Gaussian noise, standard deviation ``noise * 50`` grey levels,
    plus per-object colour jitter of ``10 + 20 * noise``.
``layout``: ``free`` (default) | ``structured``
    Where objects go. ``free``: anywhere, except boats on water and camouflaged
    birds in the sky. ``structured`` (the strong-context demo, issue 11): every
    class has its own part of the image, so the class-average masks differ and
    the foreground map X_m tells which context an image has: birds always fly in
    the sky above the horizon (which is then always drawn), boats always sit
    just below it (sails above it), horses and riders stand below it in the left
    half (riders on horses sit above them), cars at the bottom of the right half. ``free`` output is
    byte-identical to the generator before this option existed.

Layout written under ``root`` (VOC-like): ``JPEGImages/<id>.jpg`` (JPEG
quality 95 without chroma subsampling, like VOC's JPEGs but with fewer colour
artefacts), ``SegmentationClass/<id>.png`` (palette PNG, pixel = class index,
255 = a 2 px void band along every object boundary, as VOC draws it),
``ImageSets/Segmentation/{train,val}.txt``, ``classes.json``,
``image_labels.json`` ({id: [class names]}, derived from the masks) and
``synthetic.json`` (the parameters and, per image, which contexts were drawn,
for analysis; tests measure the knobs from pixels, not from this file).

Same seed and parameters give byte-identical files: every image has its own
random generator seeded by (seed, split, index), so the val images do not
depend on ``num_train``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .palette import save_index_png, voc_colormap

CLASSES = ["background", "horse", "rider", "boat", "bird", "car"]
VOID = 255
CONTEXT_BASE_RATE = 0.2
DEFAULT_PARAMS = {
    "seed": 0,
    "num_train": 240,
    "num_val": 80,
    "image_size": 96,
    "ambiguity": 0.8,
    "background_context": 0.8,
    "foreground_context": 0.8,
    "noise": 0.3,
    "layout": "free",
}
LAYOUTS = ("free", "structured")

_GROUP_COUNT_PROBS = [0.5, 0.35, 0.15]
_SPLIT_CODES = {"train": 0, "val": 1}


def generate_synthetic(root: Path, *, seed: int, num_train: int, num_val: int,
                       image_size: int, ambiguity: float, background_context: float,
                       foreground_context: float, noise: float, layout: str = "free") -> None:
    """Write the dataset under ``root`` atomically (temp dir beside it, then rename).

    An existing ``root`` is replaced as a whole, so a half-written dataset is
    never visible under the final name.
    """
    params = {"seed": seed, "num_train": num_train, "num_val": num_val,
              "image_size": image_size, "ambiguity": ambiguity,
              "background_context": background_context,
              "foreground_context": foreground_context, "noise": noise}
    if layout != "free":  # recorded only when set: the default output stays byte-identical
        params["layout"] = layout
    if layout not in LAYOUTS:
        raise ValueError(f"synthetic dataset: layout must be one of {LAYOUTS}, got {layout!r}")
    for name in ("ambiguity", "background_context", "foreground_context", "noise"):
        if not 0.0 <= params[name] <= 1.0:
            raise ValueError(f"synthetic dataset: {name} must be in [0, 1], got {params[name]}")
    if image_size < 32:
        raise ValueError(f"synthetic dataset: image_size must be >= 32, got {image_size}")
    if num_train < 1 or num_val < 0:
        raise ValueError(f"synthetic dataset: need num_train >= 1 and num_val >= 0, "
                         f"got {num_train}, {num_val}")

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp / sub).mkdir(parents=True)

    palette = voc_colormap()
    image_labels: dict[str, list[str]] = {}
    contexts: dict[str, dict[str, bool]] = {}
    for split, count in (("train", num_train), ("val", num_val)):
        width = max(4, len(str(count - 1)))
        ids = [f"{split}_{i:0{width}d}" for i in range(count)]
        for i, image_id in enumerate(ids):
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
            image, mask, drawn = _render_image(rng, image_size, ambiguity, background_context,
                                               foreground_context, noise, layout == "structured")
            Image.fromarray(image).save(tmp / "JPEGImages" / f"{image_id}.jpg", format="JPEG",
                                        quality=95, subsampling=0)
            save_index_png(tmp / "SegmentationClass" / f"{image_id}.png", mask, palette)
            present = sorted(set(np.unique(mask).tolist()) - {0, VOID})
            image_labels[image_id] = [CLASSES[c] for c in present]
            contexts[image_id] = drawn
        (tmp / "ImageSets/Segmentation" / f"{split}.txt").write_text(
            "".join(f"{image_id}\n" for image_id in ids))

    _write_json(tmp / "classes.json", {"names": CLASSES, "void": VOID,
                                       "palette": palette[:len(CLASSES)]})
    _write_json(tmp / "image_labels.json", image_labels)
    _write_json(tmp / "synthetic.json", {"generator": __name__, "params": params,
                                         "images": contexts})

    if root.exists():
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        os.rename(root, old)
        os.rename(tmp, root)
        shutil.rmtree(old)
    else:
        os.rename(tmp, root)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- scene


def _render_image(rng: np.random.Generator, size: int, ambiguity: float,
                  background_context: float, foreground_context: float,
                  noise: float, structured: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, bool]]:
    """One image, its index mask and which contexts were drawn.

    Redraws (with the same generator, so still deterministic) in the rare case
    that occlusion and void borders leave no foreground pixel.
    """
    while True:
        groups = _sample_groups(rng, ambiguity)
        classes = {c for group in groups for c in group.split("+")}
        water = rng.random() < _context_probability("boat" in classes, background_context)
        if "bird" in classes:
            # P(sky | bird) = k + (1 - k) * base, the same law as the water.
            camouflaged = rng.random() < foreground_context
            sky = camouflaged or rng.random() < CONTEXT_BASE_RATE or structured
        else:
            camouflaged = False
            sky = rng.random() < _context_probability(False, foreground_context)
        canvas = _Canvas(size, rng, noise)
        horizon = rng.uniform(0.4, 0.6) * size
        canvas.background(horizon, sky=sky, water=water)
        place = _place_structured if structured else _place
        for group, (cx, cy, scale) in zip(groups, place(rng, groups, size, horizon, water, camouflaged)):
            _DRAW[group](canvas, cx, cy, scale, camouflaged=camouflaged)
        image, mask = canvas.finish()
        if set(np.unique(mask).tolist()) - {0, VOID}:
            return image, mask, {"water": bool(water), "sky": bool(sky),
                                 "camouflaged_wings": bool(camouflaged),
                                 "rider_on_horse": "horse+rider" in groups}


def _context_probability(has_class: bool, knob: float) -> float:
    """P(context | class present) rises to 1 and P(context | absent) falls to 0 with the knob."""
    base = CONTEXT_BASE_RATE
    return base + (1.0 - base) * knob if has_class else base * (1.0 - knob)


def _sample_groups(rng: np.random.Generator, ambiguity: float) -> list[str]:
    """1-3 object groups of distinct classes; horse/rider become one group or exclude each other.

    Horse and rider are drawn at 0.6 the weight of the other classes so that,
    counted as images, the five classes stay roughly balanced.
    """
    pool = ["horse", "rider", "boat", "bird", "car"]
    count = int(rng.choice(3, p=_GROUP_COUNT_PROBS)) + 1
    groups = []
    for _ in range(count):
        weights = np.array([0.6 if c in ("horse", "rider") else 1.0 for c in pool])
        name = pool[int(rng.choice(len(pool), p=weights / weights.sum()))]
        if name in ("horse", "rider"):
            if rng.random() < ambiguity:
                name = "horse+rider"
            pool = [c for c in pool if c not in ("horse", "rider")]
        else:
            pool = [c for c in pool if c != name]
        groups.append(name)
    return groups


def _place(rng: np.random.Generator, groups: list[str], size: int, horizon: float,
           water: bool, camouflaged: bool) -> list[tuple[float, float, float]]:
    """Centre and scale per group: boats on the water, camouflaged birds in the sky,
    others anywhere; a few tries to keep groups from covering each other."""
    placed: list[tuple[float, float, float]] = []
    for group in groups:
        scale = rng.uniform(0.5, 0.75) * size
        for _ in range(30):
            cx = rng.uniform(0.35 * scale, size - 0.35 * scale)
            if group == "boat" and water:
                cy = rng.uniform(horizon, max(horizon, size - 0.22 * scale))
            elif group == "bird" and camouflaged:
                cy = rng.uniform(min(0.3 * scale, horizon - 0.3 * scale), horizon - 0.3 * scale)
            elif group == "horse+rider":
                cy = rng.uniform(0.55 * scale, size - 0.45 * scale)
            else:
                cy = rng.uniform(0.35 * scale, size - 0.35 * scale)
            if all(np.hypot(cx - x, cy - y) > 0.4 * (scale + s) for x, y, s in placed):
                break
        placed.append((cx, cy, scale))
    return placed


def _place_structured(rng: np.random.Generator, groups: list[str], size: int, horizon: float,
                      water: bool, camouflaged: bool) -> list[tuple[float, float, float]]:
    """``layout: structured``: birds above the horizon, boats just below it, horses and riders below
    it on the left, cars at the bottom on the right (ranges clipped so the shapes stay in the image)."""
    placed: list[tuple[float, float, float]] = []
    half = size / 2.0
    for group in groups:
        scale = rng.uniform(0.5, 0.75) * size

        def span(low: float, high: float) -> float:
            return rng.uniform(low, max(low, high))

        for _ in range(30):
            if group == "bird":
                cx, cy = span(0.35 * scale, size - 0.35 * scale), span(0.3 * scale, horizon - 0.3 * scale)
            elif group == "boat":  # deck just below the horizon, sail above it
                cx, cy = span(0.5 * scale, size - 0.5 * scale), span(horizon, min(horizon + 0.1 * size,
                                                                                  size - 0.22 * scale))
            elif group in ("horse", "rider", "horse+rider"):
                top = max(horizon, 0.55 * scale) if group != "rider" else max(horizon, 0.75 * scale)
                cx, cy = span(0.45 * scale, half), span(top, size - 0.45 * scale)
            else:  # car: at the bottom, on the right
                bottom = size - 0.26 * scale
                cx, cy = span(half, size - 0.5 * scale), span(max(horizon, bottom - 0.1 * size), bottom)
            if all(np.hypot(cx - x, cy - y) > 0.4 * (scale + s) for x, y, s in placed):
                break
        placed.append((cx, cy, scale))
    return placed


# ------------------------------------------------------------------------ drawing


class _Canvas:
    """Image, instance map and class map painted together, part by part."""

    def __init__(self, size: int, rng: np.random.Generator, noise: float):
        self.size = size
        self.rng = rng
        self.noise = noise
        self.yy, self.xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.image = np.zeros((size, size, 3), np.float32)
        self.instances = np.zeros((size, size), np.int32)
        self.classes = np.zeros((size, size), np.uint8)
        self.sky_texture = None
        self._count = 0

    # -- textures (full-size float arrays; parts copy the pixels they cover)

    def colour(self, rgb) -> np.ndarray:
        jitter = 10 + 20 * self.noise
        return np.clip(np.asarray(rgb, np.float32) + self.rng.uniform(-jitter, jitter, 3), 0, 255)

    def stripes(self, rgb_a, rgb_b, period: float, angle_deg: float) -> np.ndarray:
        theta = np.deg2rad(angle_deg)
        phase = self.rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (self.xx * np.cos(theta) + self.yy * np.sin(theta))
                               / period + phase)
        return self._mix(self.colour(rgb_a), self.colour(rgb_b), t)

    def spots(self, rgb_base, rgb_spot, period: float) -> np.ndarray:
        px, py = self.rng.uniform(0, 2 * np.pi, 2)
        t = (np.sin(2 * np.pi * self.xx / period + px) * np.sin(2 * np.pi * self.yy / period + py)) > 0.5
        return self._mix(self.colour(rgb_base), self.colour(rgb_spot), t.astype(np.float32))

    def checker(self, rgb_a, rgb_b, period: int) -> np.ndarray:
        ox, oy = self.rng.integers(0, period, 2)
        t = (((self.xx + ox) // period + (self.yy + oy) // period) % 2).astype(np.float32)
        return self._mix(self.colour(rgb_a), self.colour(rgb_b), t)

    def flat(self, rgb) -> np.ndarray:
        return np.broadcast_to(self.colour(rgb), (self.size, self.size, 3))

    @staticmethod
    def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        return a * (1.0 - t[..., None]) + b * t[..., None]

    # -- background

    def background(self, horizon: float, *, sky: bool, water: bool) -> None:
        """Generic (never blue) ground everywhere, then sky above / water below the horizon."""
        r, g = self.rng.uniform(80, 180, 2)
        base = np.array([r, g, min(r, g) - self.rng.uniform(0, 30)], np.float32)
        wobble = np.zeros((self.size, self.size), np.float32)
        for _ in range(3):
            fx, fy = self.rng.uniform(0.5, 2.0, 2) * 2 * np.pi / self.size
            wobble += np.sin(fx * self.xx + fy * self.yy + self.rng.uniform(0, 2 * np.pi))
        self.image[:] = base + 8.0 * wobble[..., None]
        if sky:
            self.sky_texture = self._sky(horizon)
            above = self.yy < horizon
            self.image[above] = self.sky_texture[above]
        if water:
            wave = 0.5 + 0.5 * np.sin(2 * np.pi * (self.yy / 5.0 + 0.25 * np.sin(
                2 * np.pi * self.xx / 20.0 + self.rng.uniform(0, 2 * np.pi))))
            texture = self._mix(self.colour((25, 70, 150)), self.colour((80, 140, 205)), wave)
            below = self.yy >= horizon
            self.image[below] = texture[below]

    def _sky(self, horizon: float) -> np.ndarray:
        t = np.clip(self.yy / max(horizon, 1.0), 0, 1)
        sky = self._mix(self.colour((140, 190, 235)), self.colour((190, 220, 245)), t)
        clouds = np.zeros((self.size, self.size), np.float32)
        for _ in range(int(self.rng.integers(1, 4))):
            cx, cy = self.rng.uniform(0, self.size), self.rng.uniform(0, horizon)
            rx, ry = self.rng.uniform(0.08, 0.2, 2) * self.size * np.array([1.5, 0.6])
            clouds = np.maximum(clouds, np.exp(-(((self.xx - cx) / rx) ** 2 + ((self.yy - cy) / ry) ** 2)))
        return self._mix(sky, np.full(3, 245, np.float32), 0.8 * clouds)

    # -- objects

    def paint(self, class_index: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """One object instance: ``parts`` are (bool mask, texture), painted in order."""
        self._count += 1
        for region, texture in parts:
            self.image[region] = texture[region]
            self.instances[region] = self._count
            self.classes[region] = class_index

    def shape(self, *, ellipses=(), polygons=(), rectangles=()) -> np.ndarray:
        layer = Image.new("L", (self.size, self.size), 0)
        draw = ImageDraw.Draw(layer)
        for box in ellipses:
            draw.ellipse(_box(box), fill=1)
        for points in polygons:
            draw.polygon([(float(x), float(y)) for x, y in points], fill=1)
        for box in rectangles:
            draw.rectangle(_box(box), fill=1)
        return np.asarray(layer, dtype=bool)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Add pixel noise; void the 2 px band where the instance id changes (VOC style)."""
        image = self.image + self.rng.normal(0.0, 50.0 * self.noise, self.image.shape)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        padded = np.pad(self.instances, 1, mode="edge")
        boundary = np.zeros(self.instances.shape, bool)
        n = self.size
        for dy in range(3):
            for dx in range(3):
                boundary |= padded[dy:dy + n, dx:dx + n] != self.instances
        mask = self.classes.copy()
        mask[boundary] = VOID
        return image, mask


def _box(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _draw_horse(c: _Canvas, cx: float, cy: float, s: float, **_) -> float:
    """Body, four legs, neck and head, facing left or right; returns the facing sign."""
    d = 1.0 if c.rng.random() < 0.5 else -1.0
    texture = c.spots((140, 90, 45), (90, 55, 25), period=7)
    body = c.shape(ellipses=[(cx - 0.42 * s, cy - 0.2 * s, cx + 0.42 * s, cy + 0.2 * s)])
    legs = c.shape(rectangles=[(cx + o * s - 0.035 * s, cy + 0.05 * s, cx + o * s + 0.035 * s,
                                cy + 0.45 * s) for o in (-0.3, -0.14, 0.14, 0.3)])
    neck = c.shape(polygons=[[(cx + d * 0.25 * s, cy - 0.12 * s), (cx + d * 0.4 * s, cy - 0.05 * s),
                              (cx + d * 0.55 * s, cy - 0.38 * s), (cx + d * 0.42 * s, cy - 0.45 * s)]],
                   ellipses=[(cx + d * 0.45 * s, cy - 0.5 * s, cx + d * 0.68 * s, cy - 0.34 * s)])
    c.paint(CLASSES.index("horse"), [(legs, texture), (body, texture), (neck, texture)])
    return d


def _draw_rider(c: _Canvas, cx: float, cy: float, s: float, *, seated: bool = False, **_) -> None:
    """A person: standing (hip at ``cy``) or seated astride (legs hanging over a horse's body)."""
    r = 0.8 * s
    hip = cy if seated else cy + 0.05 * r
    head = c.shape(ellipses=[(cx - 0.12 * r, hip - 0.78 * r, cx + 0.12 * r, hip - 0.54 * r)])
    torso = c.shape(rectangles=[(cx - 0.14 * r, hip - 0.55 * r, cx + 0.14 * r, hip)])
    if seated:
        legs = c.shape(polygons=[[(cx - 0.12 * r, hip - 0.05 * r), (cx + 0.12 * r, hip - 0.05 * r),
                                  (cx + 0.14 * r, hip + 0.38 * r), (cx - 0.02 * r, hip + 0.38 * r)]])
    else:
        legs = c.shape(rectangles=[(cx + o * r - 0.05 * r, hip, cx + o * r + 0.05 * r, hip + 0.5 * r)
                                   for o in (-0.07, 0.07)])
    c.paint(CLASSES.index("rider"), [(legs, c.flat((40, 50, 125))),
                                     (torso, c.stripes((205, 40, 50), (150, 20, 45), 4, 0)),
                                     (head, c.flat((235, 190, 160)))])


def _draw_horse_and_rider(c: _Canvas, cx: float, cy: float, s: float, **_) -> None:
    """The rider sits on the horse's back: its legs overlap the horse's body."""
    d = _draw_horse(c, cx, cy, s)
    _draw_rider(c, cx - d * c.rng.uniform(0.0, 0.12) * s, cy - 0.1 * s, 0.85 * s, seated=True)


def _draw_boat(c: _Canvas, cx: float, cy: float, s: float, **_) -> None:
    """Hull with its deck line at ``cy``, mast and sail above."""
    hull = c.shape(polygons=[[(cx - 0.5 * s, cy), (cx + 0.5 * s, cy), (cx + 0.35 * s, cy + 0.2 * s),
                              (cx - 0.35 * s, cy + 0.2 * s)]])
    mast = c.shape(rectangles=[(cx - 0.025 * s, cy - 0.6 * s, cx + 0.025 * s, cy)])
    sail = c.shape(polygons=[[(cx + 0.04 * s, cy - 0.58 * s), (cx + 0.04 * s, cy - 0.06 * s),
                              (cx + 0.4 * s, cy - 0.06 * s)]])
    c.paint(CLASSES.index("boat"), [(hull, c.stripes((225, 115, 30), (120, 50, 20), 6, 90)),
                                    (mast, c.flat((70, 50, 40))),
                                    (sail, c.flat((240, 240, 232)))])


def _draw_bird(c: _Canvas, cx: float, cy: float, s: float, *, camouflaged: bool = False, **_) -> None:
    """Seen from above: a spotted core (body + head) and two wings that, when
    camouflaged, wear the sky's texture instead of the bird's own."""
    d = 1.0 if c.rng.random() < 0.5 else -1.0
    wings = c.shape(polygons=[[(cx - 0.17 * s, cy), (cx + 0.17 * s, cy), (cx - d * 0.05 * s, cy + e * 0.52 * s),
                               (cx - d * 0.2 * s, cy + e * 0.5 * s)] for e in (-1.0, 1.0)])
    core = c.shape(ellipses=[(cx - 0.26 * s, cy - 0.1 * s, cx + 0.26 * s, cy + 0.1 * s),
                             (cx + d * 0.18 * s, cy - 0.1 * s, cx + d * 0.38 * s, cy + 0.1 * s)])
    if camouflaged:
        wing_texture = c.sky_texture * 0.9
    else:
        wing_texture = c.stripes((165, 125, 40), (115, 80, 25), 5, 45)
    c.paint(CLASSES.index("bird"), [(wings, wing_texture),
                                    (core, c.spots((235, 205, 50), (130, 80, 20), period=6))])


def _draw_car(c: _Canvas, cx: float, cy: float, s: float, **_) -> None:
    """Checked body, cabin with grey windows, black wheels."""
    body = c.shape(rectangles=[(cx - 0.5 * s, cy - 0.1 * s, cx + 0.5 * s, cy + 0.15 * s)],
                   polygons=[[(cx - 0.32 * s, cy - 0.1 * s), (cx - 0.2 * s, cy - 0.36 * s),
                              (cx + 0.2 * s, cy - 0.36 * s), (cx + 0.32 * s, cy - 0.1 * s)]])
    windows = c.shape(polygons=[[(cx - 0.24 * s, cy - 0.13 * s), (cx - 0.16 * s, cy - 0.31 * s),
                                 (cx + 0.16 * s, cy - 0.31 * s), (cx + 0.24 * s, cy - 0.13 * s)]])
    wheels = c.shape(ellipses=[(cx + o * s - 0.11 * s, cy + 0.04 * s, cx + o * s + 0.11 * s, cy + 0.26 * s)
                               for o in (-0.3, 0.3)])
    c.paint(CLASSES.index("car"), [(body, c.checker((40, 155, 70), (25, 105, 45), 5)),
                                   (windows, c.flat((200, 210, 215))),
                                   (wheels, c.flat((25, 25, 25)))])


_DRAW = {"horse": _draw_horse, "rider": _draw_rider, "horse+rider": _draw_horse_and_rider,
         "boat": _draw_boat, "bird": _draw_bird, "car": _draw_car}

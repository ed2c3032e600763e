"""Where does a class's CAM and pseudo-mask go? Confounding diagnostics (numpy only).

The paper's Figure 2 problems, measured directly: for every class k and every
training image labelled with k, the mass of k's CAM (the sum of its
max-normalised values) and of k's pseudo-mask (its pixel count) is split by
the ground-truth label under it: the object itself (GT = k), the background
(GT = 0), each other class j (co-occurring objects: a rider's CAM on the
horse), and void (object boundaries). Shares are percentages of k's total mass
over the split, so each (source, class) sums to 100. A confounded class shows
a large share on background (boat on water) or on its partner class (rider on
horse); CONTA should move mass back onto the object.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SOURCES = ("cam", "pseudo_mask")


def mass_by_region(index, ids: list[str], cams, pseudo_masks) -> pd.DataFrame:
    """Long table: source, class, region, mass, share (%). ``cams`` / ``pseudo_masks``: readers by id."""
    names = index.classes
    regions = ["object", "background", *names[1:], "void"]
    totals = {(s, k): np.zeros(len(regions)) for s in SOURCES for k in range(1, len(names))}

    def region_of(truth: np.ndarray, k: int) -> np.ndarray:
        """Region index per pixel: 0 object, 1 background, 2.. class j (k's own column unused), last void."""
        out = np.full(truth.shape, len(regions) - 1, np.int64)
        valid = truth != index.void
        out[valid] = truth[valid].astype(np.int64) + 1     # class j -> column j + 1
        out[truth == k] = 0
        out[truth == 0] = 1
        return out

    for image_id in ids:
        truth = index.read_mask(image_id)
        cam = cams.get(image_id).astype(np.float32, copy=False)
        cam_classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
        pseudo = pseudo_masks.get(image_id)
        for k in index.labels(image_id):
            where = region_of(truth, k).ravel()
            if k in cam_classes:
                weights = cam[cam_classes.index(k)].ravel()
                totals["cam", k] += np.bincount(where, weights=weights, minlength=len(regions))
            totals["pseudo_mask", k] += np.bincount(where[pseudo.ravel() == k], minlength=len(regions))
    rows = []
    for (source, k), mass in totals.items():
        total = mass.sum()
        for region, value in zip(regions, mass):
            if region == names[k]:
                continue  # the object column holds it
            rows.append({"source": source, "class": names[k], "region": region, "mass": float(value),
                         "share": 100.0 * value / total if total > 0 else float("nan")})
    return pd.DataFrame(rows)


def confounding_markdown(table: pd.DataFrame) -> str:
    """Per source: a row per class, a column per round: object / background / largest other class shares."""
    parts = []
    rounds = sorted(table["round"].unique())
    for source in SOURCES:
        rows = table[table["source"] == source]
        lines = [f"### Where the {'CAM' if source == 'cam' else 'pseudo-mask'} mass of each class falls (%)", "",
                 "obj = on the object, bg = on ground-truth background, then the co-occurring class "
                 "that takes the most.", "",
                 "| class | " + " | ".join("Baseline" if r == 0 else f"Round {r}" for r in rounds) + " |",
                 "|---|" + "---|" * len(rounds)]
        for name in rows["class"].drop_duplicates():
            cells = []
            for r in rounds:
                shares = rows[(rows["class"] == name) & (rows["round"] == r)].set_index("region")["share"]
                if shares.empty or shares.isna().all():
                    cells.append("")
                    continue
                others = shares.drop(["object", "background", "void"], errors="ignore")
                top = f" · {others.idxmax()} {others.max():.0f}" if len(others) and others.max() >= 0.5 else ""
                cells.append(f"obj {shares.get('object', 0):.0f} · bg {shares.get('background', 0):.0f}{top}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)

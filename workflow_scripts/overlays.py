"""One round's mask overlays for the report: a fixed sample of training and evaluation images.

Training images: image, ground truth, the CAM of each labelled class, the CAM seeds
(the CAM as a mask as the method scores it, e.g. arg-max over [cam.bg_threshold, CAMs]: the
labels the CAM mIoU scores), the
pseudo-mask and the segmenter's prediction. Evaluation images: image, ground truth
and prediction (CAMs and pseudo-masks exist only for the training split). The sample
is ``report.overlay_ids`` when given, else ``report.overlay_count`` images per split
drawn with ``report.overlay_seed``: the same images in every round.
"""
import contextlib
from pathlib import Path

import numpy as np

from _common import round_parser, setup

from conta_core import methods
from conta_core.data.index import DatasetIndex
from conta_core.data.palette import voc_colormap
from conta_core.overlay import classes_in, image_row, render_sheet, sample_ids
from conta_core.store import ShardedReader


def chosen_ids(index: DatasetIndex, s: dict) -> tuple[list[str], list[str]]:
    """(training ids, evaluation ids) of the overlays."""
    report = s["report"]
    train, evaluation = index.ids(s["train_split"]), index.ids(s["eval_split"])
    if report.get("overlay_ids"):
        wanted = [str(i) for i in report["overlay_ids"]]
        unknown = [i for i in wanted if i not in set(train) | set(evaluation)]
        if unknown:
            raise SystemExit(f"config report.overlay_ids: {unknown} are in neither the training split "
                             f"{s['train_split']!r} nor the evaluation split {s['eval_split']!r}")
        return [i for i in wanted if i in set(train)], [i for i in wanted if i in set(evaluation) - set(train)]
    count, seed = int(report["overlay_count"]), int(report["overlay_seed"])
    return sample_ids(train, count, seed), sample_ids(evaluation, count, seed + 1)


def _gt(index: DatasetIndex, image_id: str):
    return index.read_mask(image_id) if index.has_mask(image_id) else None


def _names(index: DatasetIndex, classes) -> str:
    return ", ".join(index.classes[c] for c in classes) or "no foreground label"


if __name__ == "__main__":
    p = round_parser(__doc__)
    p.add_argument("--cams", type=Path, nargs="+", required=True)
    p.add_argument("--pseudo-masks", type=Path, nargs="+", required=True)
    p.add_argument("--train-preds", type=Path, nargs="*", default=[],
                   help="the round's training-split predictions, where the workflow makes them "
                        "(else the training rows show no prediction)")
    p.add_argument("--seg-preds", type=Path, nargs="+", required=True, help="evaluation-split predictions")
    args = p.parse_args()
    s = args.settings
    setup(args, uses_torch=False)
    cam_labels = methods.get(s["method"]).cam_labeller(s["cam"])
    index = DatasetIndex.load(args.index_dir)
    palette = index.palette or voc_colormap(256)
    train_ids, eval_ids = chosen_ids(index, s)
    expect = {"class_names": index.classes, "round": args.round}
    rows, masks = [], []
    with ShardedReader(args.cams, kind="cam", expect=expect) as cams, \
            ShardedReader(args.pseudo_masks, kind="pseudo_mask", expect=expect) as pseudo, \
            ShardedReader(args.seg_preds, kind="seg_pred", expect=expect) as eval_preds, \
            (ShardedReader(args.train_preds, kind="seg_pred", expect=expect) if args.train_preds
             else contextlib.nullcontext()) as train_preds:
        for image_id in train_ids:
            image, gt = index.read_image(image_id), _gt(index, image_id)
            cam_classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
            cam = cams.get(image_id).astype(np.float32, copy=False)
            seeds = cam_labels(cam, cam_classes)
            row_masks = [gt, seeds, pseudo.get(image_id), train_preds.get(image_id) if train_preds else None]
            rows.append(image_row(f"{s['train_split']} {image_id} ({_names(index, cam_classes)})", image,
                                  index.classes, palette, index.void, gt=gt, cams=cam, cam_classes=cam_classes,
                                  seeds=seeds, pseudo_mask=row_masks[2], prediction=row_masks[3]))
            masks += row_masks
        for image_id in eval_ids:
            image, gt = index.read_image(image_id), _gt(index, image_id)
            prediction = eval_preds.get(image_id)
            rows.append(image_row(f"{s['eval_split']} {image_id} ({_names(index, index.labels(image_id))})",
                                  image, index.classes, palette, index.void, gt=gt, prediction=prediction,
                                  with_training_columns=False))
            masks += [gt, prediction]
    if not rows:
        raise SystemExit("no images to draw: report.overlay_count is 0 and report.overlay_ids is empty")
    thresholds = ", ".join(f"cam.{key} {value}" for key, value in s["cam"].items())
    title = f"round {args.round}{' (baseline)' if args.round == 0 else ''}: seeds at {thresholds}"
    sheet = render_sheet(rows, title=title, legend_classes=classes_in(masks, index.void),
                         class_names=index.classes, palette=palette, tile=int(s["report"]["overlay_tile"]))
    tmp = args.out.with_name(f"{args.out.name}.tmp.png")
    sheet.save(tmp, format="PNG")
    tmp.replace(args.out)
    print(f"[overlays] round {args.round}: {len(train_ids)} training + {len(eval_ids)} evaluation images "
          f"-> {args.out} ({sheet.width}x{sheet.height})")

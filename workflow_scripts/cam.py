"""Multi-scale CAMs of one shard of the training split, as the method infers them (its recipe's
``build_round_classifier`` and ``cam_inference``)."""
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from _common import provenance, round_parser, setup, shard_ids, step_delay

from conta_core import methods
from conta_core.cam import prepare_for_inference
from conta_core.cam_labels import same_size_batches
from conta_core.classify import ConfounderInputs, load_model, uses_context
from conta_core.data.index import DatasetIndex
from conta_core.devices import resolve_precision
from conta_core.store import MapWriter

if __name__ == "__main__":
    p = round_parser(__doc__, shard=True)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--confounder", type=Path)
    args = p.parse_args()
    s = args.settings
    device = setup(args)
    index = DatasetIndex.load(args.index_dir)
    confounder = ConfounderInputs(args.confounder, index.classes) if uses_context(s["conta"], args.round) else None
    recipe = methods.get(s["method"])
    build_classifier, infer_cams = recipe.build_round_classifier.load(), recipe.cam_inference.load()
    model = build_classifier(s["classifier"], index.num_classes, s["conta"], args.round, confounder,
                             load_weights=False)
    load_model(args.classifier, model)
    # resolved here, so every method's CAM inference gets fp32 or bf16 (SEAM's knows no auto)
    precision = resolve_precision(s["cam"].get("precision", "auto"), device, "cam.precision")
    model = prepare_for_inference(model, precision, device)  # eval, BatchNorm folded, channels-last
    ids = shard_ids(index.ids(s["train_split"]), args.shard, s["shards"])
    attrs = provenance("cam", args.round, s, index.classes, shard=args.shard, shards=s["shards"])
    batches = same_size_batches(ids, index.size, s["cam"]["batch_size"])
    # uint8 at 255 levels (bench/store.md: the demo's seed mIoU within 0.0008 of float32's, half float16's bytes)
    with MapWriter(args.out, kind="cam", attrs=attrs, quantize=255) as writer:
        # Resumed shard: skip whole batches already written. The batches are formed from the
        # full id list either way, so every image is inferred in the same company as in an
        # uninterrupted run (batched float math can depend on the batch).
        todo = [batch for batch in batches if not all(i in writer for i in batch)]
        done = len(ids) - sum(len(b) for b in todo)
        print(f"[cam] shard {args.shard}: {len(ids)} images, {done} already written", file=sys.stderr, flush=True)
        for batch in tqdm(todo, desc=f"CAM shard {args.shard} (batches)", file=sys.stderr, mininterval=5.0):
            images = np.stack([index.read_image(i) for i in batch])
            classes = [index.labels(i) for i in batch]
            x_m = np.stack([confounder.x_m(i) for i in batch]) if confounder is not None else None
            cams = infer_cams(model, images, classes, s["cam"]["scales"], s["cam"]["flip"], device, x_m,
                              precision=precision)
            for image_id, image_classes, cam in zip(batch, classes, cams):
                if image_id not in writer:
                    writer.put(image_id, cam, classes=image_classes)
            done += len(batch)
            print(f"[cam] shard {args.shard}: {done}/{len(ids)} images written", file=sys.stderr, flush=True)
            step_delay()

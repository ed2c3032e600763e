"""Predict segmentation masks for one shard of a split with a round's DeepLab-v2.

With segment.crf the dense CRFs run in ``--threads`` worker processes (one when 1),
spawned: they import this script again, so its module-level imports stay torch-free
(torch is imported under ``__main__`` only).
"""
from pathlib import Path

from _common import provenance, round_parser, setup, shard_ids

if __name__ == "__main__":
    from conta_core.classify import load_model
    from conta_core.data.index import DatasetIndex
    from conta_core.segment import PREDICT_MAX_SIDE, build_segmenter, predict_split
    from conta_core.store import MapWriter

    p = round_parser(__doc__, shard=True)
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--split", required=True)
    args = p.parse_args()
    s = args.settings
    device = setup(args)
    index = DatasetIndex.load(args.index_dir)
    model = build_segmenter(s["segment"], index.num_classes, load_weights=False)
    load_model(args.segmenter, model)
    ids = shard_ids(index.ids(args.split), args.shard, s["shards"])
    attrs = provenance("predict", args.round, s, index.classes, split=args.split, shard=args.shard)
    with MapWriter(args.out, kind="seg_pred", attrs=attrs) as writer:
        # A resumed shard keeps the masks its killed run wrote (predict_split skips them).
        # torch keeps its --threads too: on a GPU it waits; on a CPU the CRF workers share the cores.
        predict_split(model, index, ids, device, s["segment"]["crf"], writer, s["segment"]["predict_batch_size"],
                      s["segment"].get("predict_max_side", PREDICT_MAX_SIDE), workers=args.threads)

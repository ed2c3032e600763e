"""Which M-path settings make M_t act? Train round-1 classifiers under each and measure (issue 11).

    python bench/m_path_settings.py --run results/demo [--seeds 0 1] [--settings inert live ...]
                                    [--out bench/m_path_settings.csv]

Needs a finished round 0 of ``--run`` (its dataset index and round0/confounder.h5).
For each setting and seed it trains the round-1 classifier exactly as the workflow
does (the run's config with the setting's ``conta`` keys), then runs the M-usage
diagnostic (conta_core.diagnostics) and records how far W1, W2 and the M weights
moved. One row per (setting, seed) in the CSV; the README quotes the result.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conta_core.classify import INERT_CONTA, LIVE_CONTA, ConfounderInputs, train_classifier  # noqa: E402
from conta_core.data.index import DatasetIndex  # noqa: E402
from conta_core.devices import set_threads  # noqa: E402
from conta_core.diagnostics import m_usage  # noqa: E402

SETTINGS = {
    "inert": INERT_CONTA,
    "live": LIVE_CONTA,                               # the defaults (linear fusion)
    "conv_live": {**LIVE_CONTA, "fusion": "conv"},
    "live_prior_scale": {**LIVE_CONTA, "m_scale": "prior"},
    "live_default_attention": {**LIVE_CONTA, "attention_init": "default"},
    "live_m_lr1": {**LIVE_CONTA, "m_lr_mult": 1.0},
    "live_frozen_m": {**LIVE_CONTA, "m_lr_mult": 0.0},
    # Where M enters (ablation Q3): at block 2 or at every block, M reaches the CAM through the
    # non-linear rest of the backbone instead of as an additive offset after block 5.
    "live_block2": {**LIVE_CONTA, "block": 2},
    "live_dense": {**LIVE_CONTA, "block": "dense"},
    "conv_live_dense": {**LIVE_CONTA, "fusion": "conv", "block": "dense"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default=None, help="override classifier.optimizer")
    p.add_argument("--lr", type=float, default=None, help="override classifier.lr")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "m_path_settings.csv")
    args = p.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    index = DatasetIndex.load(args.run / "dataset")
    ids = index.ids(config["dataset"]["train_split"])
    confounder = ConfounderInputs(args.run / "round0" / "confounder.h5", index.classes)
    classifier = dict(config["classifier"])
    if args.optimizer:
        classifier["optimizer"] = args.optimizer
    if args.lr:
        classifier["lr"] = args.lr
    rows = []
    for name in args.settings:
        for seed in args.seeds:
            conta = {**config["conta"], **SETTINGS[name]}
            start = time.time()
            model, history, motion = train_classifier(index, ids, classifier, conta, 1, seed, device, confounder)
            trained = time.time() - start
            usage = m_usage(model, index, ids, confounder.x_m, seed, config["cam"]["bg_threshold"],
                            device)
            row = {"setting": name, "seed": seed, "device": device.type, "optimizer": classifier["optimizer"],
                   "lr": classifier["lr"],
                   "final_loss": history[-1], "train_s": trained, **motion, **usage}
            print(json.dumps(row), flush=True)
            rows.append(row)
            pd.DataFrame(rows).to_csv(args.out, index=False, float_format="%.4g")


if __name__ == "__main__":
    main()

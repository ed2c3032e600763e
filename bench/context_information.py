"""How much does an image's foreground map X_m tell about its labels? (issue 11)

M_t reaches the classifier only through X_m (the attention's query) and the class
masks. If the image-level labels cannot be read from X_m, the image-level loss has
nothing to gain from M, and a classifier trained on it keeps a small gain on M
(``cam_change_ceiling_pct`` of the M-usage diagnostic). This probe measures that
information directly: per foreground class, an L2 logistic regression from the
flattened X_m to "the image has this class", 5-fold cross-validated over the
training images, scored by held-out ROC AUC (0.5: X_m says nothing).

    python bench/context_information.py results/<run> [--round 0] [--map-size 16 16]

Two sources of X_m: the ground-truth masks reduced as CONTA reduces them (the most
context could carry) and, where the run has it, round t's confounder file (the X_m
that round t + 1 trains with, from predicted masks). Read-only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conta_core.classify import ConfounderInputs  # noqa: E402
from conta_core.confounder import reduce_foreground  # noqa: E402
from conta_core.data.index import DatasetIndex  # noqa: E402

FOLDS = 5


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half; NaN without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return float(greater / (len(pos) * len(neg)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Weights and bias minimising mean logistic loss + l2 |w|^2 / 2 (L-BFGS, float64)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float64))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def probe(x_m: np.ndarray, labels: np.ndarray, l2: float) -> np.ndarray:
    """Held-out AUC per class: x_m [N, h*w], labels [N, n] (0/1); folds by position."""
    folds = np.arange(len(x_m)) % FOLDS
    mean, std = x_m.mean(axis=0), x_m.std(axis=0) + 1e-6
    x = (x_m - mean) / std
    out = []
    for k in range(labels.shape[1]):
        scores = np.empty(len(x))
        for fold in range(FOLDS):
            test = folds == fold
            w, b = fit_logistic(x[~test], labels[~test, k], l2)
            scores[test] = x[test] @ w + b
        out.append(roc_auc(scores, labels[:, k].astype(bool)))
    return np.array(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="results/<run> (its dataset/ folder, and round<t>/confounder.h5)")
    p.add_argument("--round", type=int, default=0, help="whose confounder file gives the predicted X_m")
    p.add_argument("--map-size", type=int, nargs=2, default=[16, 16], help="h w of the reduced maps (conta.map_size)")
    p.add_argument("--l2", type=float, default=1e-2)
    p.add_argument("--split", default="train")
    args = p.parse_args()
    torch.set_num_threads(1)
    index = DatasetIndex.load(args.run / "dataset")
    ids = index.ids(args.split)
    names = index.classes[1:]
    labels = np.zeros((len(ids), len(names)), np.int64)
    for row, image_id in enumerate(ids):
        labels[row, [c - 1 for c in index.labels(image_id)]] = 1
    sources = {"ground truth": np.stack([reduce_foreground(index.read_mask(i), tuple(args.map_size)).ravel()
                                         for i in ids])}
    confounder = args.run / f"round{args.round}" / "confounder.h5"
    if confounder.exists():
        inputs = ConfounderInputs(confounder, index.classes)
        sources[f"round {args.round} (predicted)"] = np.stack([inputs.x_m(i).ravel() for i in ids])
    print(f"{args.run.name}: {len(ids)} {args.split} images, X_m {args.map_size[0]}x{args.map_size[1]}, "
          f"{FOLDS}-fold held-out ROC AUC of 'has class' from X_m (0.5 = no information)\n")
    print("| X_m from | " + " | ".join(names) + " | mean |")
    print("|---|" + "---:|" * (len(names) + 1))
    for source, x_m in sources.items():
        auc = probe(x_m.astype(np.float64), labels, args.l2)
        print(f"| {source} | " + " | ".join(f"{a:.2f}" for a in auc) + f" | {np.nanmean(auc):.2f} |")


if __name__ == "__main__":
    main()

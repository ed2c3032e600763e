"""Paired-seed statistics of the ablation arms: is an effect of CONTA above the noise? (numpy only)

Every arm (``adjust`` = CONTA, ``permuted`` = the null, ``oracle``, the Q1-Q4 settings) is
run with the same seeds. Round 0 never reads M, so the baseline of a seed is round 0 of that
seed (identical in every arm by construction: :func:`baseline_agreement` checks it). For each
arm, round and score, the per-seed differences to the baseline and to the ``permuted`` arm
of the same seed and round are summarised by their mean and a 95 % Student-t interval
mean +- t_{0.975, k-1} sd / sqrt(k) over the k seeds. An interval that contains 0 is
"within noise": no claim is made.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

COLUMNS = ["cam_miou", "pseudo_mask_miou", "seg_miou"]
TITLES = {"cam_miou": "CAM", "pseudo_mask_miou": "Pseudo-Mask", "seg_miou": "Seg. Mask"}


def t_interval(values) -> tuple[float, float, float, int]:
    """(mean, low, high, k) of a 95 % t-interval of the mean; NaN bounds with fewer than 2 values."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    k = len(v)
    if k == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if k < 2:
        return mean, float("nan"), float("nan"), k
    half = float(stats.t.ppf(0.975, k - 1) * v.std(ddof=1) / np.sqrt(k))
    return mean, mean - half, mean + half, k


def verdict(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a (fewer than 2 seeds)"
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "within noise"


def long_scores(runs: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """{(arm, seed): summary.csv frame} -> rows arm, seed, round, cam_miou, pseudo_mask_miou, seg_miou."""
    frames = []
    for (arm, seed), frame in runs.items():
        frame = frame[["round", *COLUMNS]].copy()
        frame.insert(0, "seed", seed)
        frame.insert(0, "arm", arm)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def baseline_agreement(scores: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the spread of round-0 scores across arms (should be 0: same seed, same code)."""
    round0 = scores[scores["round"] == 0]
    spread = round0.groupby("seed")[COLUMNS].agg(lambda v: float(v.max() - v.min()))
    return spread.reset_index()


def arm_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per arm and round (round 0 = the baseline)."""
    grouped = scores.groupby(["arm", "round"])[COLUMNS]
    means = grouped.mean()
    stds = grouped.std(ddof=1).add_suffix("_std")
    counts = grouped.size().rename("seeds")
    return pd.concat([means, stds, counts], axis=1).reset_index()


def paired_differences(scores: pd.DataFrame, reference_arm: str = "permuted") -> pd.DataFrame:
    """Per arm, round >= 1 and score: mean paired difference and 95 % interval to the baseline
    (round 0 of the same seed and arm) and to ``reference_arm`` (same seed and round)."""
    rows = []
    base = scores[scores["round"] == 0].groupby("seed")[COLUMNS].mean()
    for (arm, rnd), group in scores[scores["round"] > 0].groupby(["arm", "round"]):
        group = group.set_index("seed")
        comparisons = [("baseline", base)]
        if arm != reference_arm and reference_arm in scores["arm"].values:
            ref = scores[(scores["arm"] == reference_arm) & (scores["round"] == rnd)].set_index("seed")[COLUMNS]
            comparisons.append((reference_arm, ref))
        for name, ref in comparisons:
            seeds = group.index.intersection(ref.index)
            for column in COLUMNS:
                diffs = (group.loc[seeds, column] - ref.loc[seeds, column]).to_numpy()
                mean, low, high, k = t_interval(diffs)
                rows.append({"arm": arm, "round": rnd, "versus": name, "score": column, "diff": mean,
                             "ci_low": low, "ci_high": high, "seeds": k, "verdict": verdict(low, high)})
    return pd.DataFrame(rows)


def arm_markdown(table: pd.DataFrame) -> str:
    lines = ["| Arm | Round | CAM | Pseudo-Mask | Seg. Mask | seeds |", "|---|---:|---:|---:|---:|---:|"]
    shown_baseline = False
    for _, row in table.sort_values(["arm", "round"]).iterrows():
        if row["round"] == 0:  # every arm's round 0 is the same baseline: show it once
            if shown_baseline:
                continue
            shown_baseline = True
        cells = [f"{row[c]:.1f} ± {row[c + '_std']:.1f}" if np.isfinite(row[c + "_std"]) else f"{row[c]:.1f}"
                 for c in COLUMNS]
        name = "baseline (round 0)" if row["round"] == 0 else row["arm"]
        lines.append(f"| {name} | {int(row['round'])} | " + " | ".join(cells) + f" | {int(row['seeds'])} |")
    return "mIoU (%), mean ± std over seeds (sample std).\n\n" + "\n".join(lines) + "\n"


def claims_markdown(diffs: pd.DataFrame) -> str:
    """The claim table: each paired difference with its 95 % interval and what it allows to say."""
    lines = ["| Arm | Round | vs | Score | Δ mIoU | 95 % interval | seeds | claim |",
             "|---|---:|---|---|---:|---|---:|---|"]
    for _, r in diffs.sort_values(["arm", "round", "versus", "score"]).iterrows():
        interval = f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" if np.isfinite(r["ci_low"]) else "n/a"
        lines.append(f"| {r['arm']} | {int(r['round'])} | {r['versus']} | {TITLES[r['score']]} | {r['diff']:+.2f} | "
                     f"{interval} | {int(r['seeds'])} | {r['verdict']} |")
    return ("Paired differences (same seed), 95 % Student-t intervals; 'within noise' where the "
            "interval contains 0.\n\n" + "\n".join(lines) + "\n")

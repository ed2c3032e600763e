"""The M-usage diagnostic recomputed with this checkout's code on finished runs (issue 11).

Runs made before ``cam_change_ceiling_pct`` and ``m_change_permuted_pct`` existed
(conta_core/diagnostics.py) lack them. This loads each CONTA round's classifier and
the confounder file it read (round t - 1's), runs the diagnostic on the same image
subset as the workflow's ``diagnose`` rule, and prints one row per run and round,
then the mean over runs per round:

    python bench/m_ceiling.py results/arms_default_default_s0 results/arms_default_default_s1 \
        [--threads 2] [--out m_ceiling.csv]
    python bench/m_ceiling.py results/demo --time 3    # cost of the ceiling's two extra passes

``--time N`` instead times the diagnostic of each run's first CONTA round N times with
and N times without the ceiling (alternating, after one warm-up of each) and prints
the medians: the ceiling's share of the ``diagnose`` job (issue 11: the diagnostics
must add at most 10 % to a round; bench/diagnostics_cost.md).

The CAM labelling thresholds come from config.yaml's ``cam`` section, updated by the
``cam`` section of ``--configfile`` (the SEC, DSRG and SEAM demo presets set their own);
the printed columns do not depend on them. Read-only: nothing in the runs is written.
"""
from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conta_core import diagnostics, methods  # noqa: E402
from conta_core.classify import ConfounderInputs, load_model  # noqa: E402
from conta_core.data.index import DatasetIndex  # noqa: E402
from conta_core.devices import set_threads  # noqa: E402
from conta_core.diagnostics import m_usage, subset  # noqa: E402

COLUMNS = ["cam_change_permuted_pct", "cam_change_ceiling_pct", "m_change_permuted_pct", "cam_change_zero_pct",
           "score_share_m_pct", "alpha_entropy"]


def run_rounds(run: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in run.glob("round*") if p.name[5:].isdigit()
                  and (p / "classifier.pt").exists() and (run / f"round{int(p.name[5:]) - 1}" / "confounder.h5").exists())


def build(run: Path, round_index: int, cam: dict):
    """(model, index, ids, x_m_of, seed, labeller) of a CONTA round, as the ``diagnose`` rule builds them."""
    classifier = run / f"round{round_index}" / "classifier.pt"
    meta = torch.load(classifier, map_location="cpu", weights_only=False)["meta"]
    settings = meta["settings"]
    if isinstance(settings, str):  # older checkpoints kept the repr of the dict
        settings = ast.literal_eval(settings)
    index = DatasetIndex.load(run / "dataset")
    confounder = ConfounderInputs(run / f"round{round_index - 1}" / "confounder.h5", index.classes)
    recipe = methods.get(settings["method"])
    model = recipe.build_round_classifier.load()(settings["classifier"], index.num_classes, settings["conta"],
                                                 round_index, confounder, load_weights=False)
    load_model(classifier, model)
    model.eval()
    return (model, index, subset(index.ids(settings["train_split"])), confounder.x_m, settings["seed"],
            recipe.cam_labeller(cam))


def diagnose(run: Path, round_index: int, cam: dict) -> dict:
    model, index, ids, x_m_of, seed, labeller = build(run, round_index, cam)
    usage = m_usage(model, index, ids, x_m_of, seed, labeller, torch.device("cpu"))
    return {"run": run.name, "round": round_index, **{k: usage[k] for k in COLUMNS}}


def time_ceiling(run: Path, round_index: int, cam: dict, reps: int) -> None:
    model, index, ids, x_m_of, seed, labeller = build(run, round_index, cam)
    with_ceiling = diagnostics.extreme_contexts
    seconds = {"with": [], "without": []}
    for rep in range(reps + 1):
        for arm in ("without", "with"):
            diagnostics.extreme_contexts = with_ceiling if arm == "with" else (lambda context: None)
            start = time.perf_counter()
            m_usage(model, index, ids, x_m_of, seed, labeller, torch.device("cpu"))
            if rep:  # the first pass of each is a warm-up
                seconds[arm].append(time.perf_counter() - start)
    diagnostics.extreme_contexts = with_ceiling
    base, full = statistics.median(seconds["without"]), statistics.median(seconds["with"])
    print(f"{run.name} round {round_index}, {len(ids)} images: M usage without the ceiling {base:.2f} s, "
          f"with it {full:.2f} s (+{full - base:.2f} s, x{full / base:.2f}); medians of {reps}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="results/<run> folders")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="also write the rows as CSV here")
    p.add_argument("--time", type=int, metavar="N", help="time the ceiling's cost instead (N paired repetitions)")
    p.add_argument("--configfile", type=Path, help="the preset the runs were made with (its cam section)")
    args = p.parse_args()
    set_threads(args.threads)
    cam = yaml.safe_load((REPO / "config.yaml").read_text())["cam"]
    if args.configfile:
        cam.update((yaml.safe_load(args.configfile.read_text()) or {}).get("cam") or {})
    if args.time:
        for run in args.runs:
            time_ceiling(run, run_rounds(run)[0], cam, args.time)
        return
    rows = []
    for run in args.runs:
        rounds = run_rounds(run)
        if not rounds:
            raise SystemExit(f"{run}: no CONTA round with a classifier.pt and the previous round's confounder.h5")
        for round_index in rounds:
            rows.append(diagnose(run, round_index, cam))
            print(f"{run.name} round {round_index}: done", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.4g")
    print(table.to_string(index=False, float_format="%.3f"))
    print("\nmean over runs per round:")
    print(table.groupby("round")[COLUMNS].mean().to_string(float_format="%.3f"))


if __name__ == "__main__":
    main()

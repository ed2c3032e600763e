"""method sec / dsrg in the workflow: a tiny real run of each (baseline + one CONTA round), the
planning errors, and the rerun scope of their keys."""
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conta_core.expand.seeds import SEED_KIND, UNLABELLED
from conta_core.store import MapReader
from workflow_helpers import planned_rules, run_snakemake

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "configs"


def snakemake(workdir: Path, method: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, "--configfile", str(CONFIGS / "tiny.yaml"), str(CONFIGS / f"tiny_{method}.yaml"),
                         *args, check=check)


@pytest.mark.workflow
@pytest.mark.parametrize("method", ["sec", "dsrg"])
def test_tiny_run(tmp_path, method):
    snakemake(tmp_path, method)
    results = tmp_path / "results" / "tiny"
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary["round"]) == [0, 1]
    values = summary[["cam_miou", "pseudo_mask_miou", "seg_miou"]].to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 100)).all()
    for t in (0, 1):
        round_dir = results / f"round{t}"
        with MapReader(round_dir / "seeds" / "shard0.h5", kind=SEED_KIND) as seeds:
            assert seeds.attrs["method"] == method and seeds.attrs["round"] == t and len(seeds) == 24
            for image_id in seeds.ids():
                seed = seeds.get(image_id)
                labels = set(int(c) for c in seeds.item_attrs(image_id)["classes"])
                assert seed.shape == (48, 48) and set(np.unique(seed).tolist()) <= {0, UNLABELLED} | labels
        with MapReader(round_dir / "pseudo_mask" / "shard0.h5", kind="pseudo_mask") as masks:
            assert masks.attrs["method"] == method and len(masks) == 24
        meta = torch.load(round_dir / f"{method}_net.pt", map_location="cpu", weights_only=True)["meta"]
        assert meta["round"] == t and meta["method"] == method and np.isfinite(meta["loss_history"]).all()
        for step in ("seeds_shard0", f"train_{method}", "expand_shard0"):
            assert (results / "benchmarks" / f"round{t}" / f"{step}.tsv").exists()
    # Round 0 (round 1 follows from it through the confounder): a loss key retrains the network
    # and redoes the pseudo-masks, not the seeds; a seed key also the seeds; neither the CAMs.
    # (Planned in this process: the dry run's jobs, without a snakemake process per plan.)
    def plan(override: dict) -> dict[str, int]:
        configfiles = [CONFIGS / "tiny.yaml", CONFIGS / f"tiny_{method}.yaml"]
        return planned_rules(tmp_path, configfiles, {**override, "rounds": 0})

    got = plan({"expand": {method: {"loss": {"crf_scale": 6.0}}}})
    assert got[f"train_{method}"] == 1 and got["expand"] == 1 and "seeds" not in got and "cam" not in got
    got = plan({"expand": {method: {"seeds": {"fg_fraction": 0.3}}}})
    assert got["seeds"] == 1 and got[f"train_{method}"] == 1 and "cam" not in got
    if method == "dsrg":  # the saliency folder is read by the seeds step alone (not the index)
        got = plan({"dataset": {"saliency_root": "/nowhere"}})
        assert got["seeds"] == 1 and "dataset_index" not in got and "train_classifier" not in got


@pytest.mark.workflow
def test_sec_needs_its_vgg_classifier(tmp_path):
    result = snakemake(tmp_path, "sec", "-n", "--config", "classifier={backbone: 18}", check=False)
    assert result.returncode != 0 and "classifier.backbone" in result.stdout + result.stderr


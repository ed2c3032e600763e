"""Real snakemake runs of the tiny configuration (baseline + one CONTA round)."""
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import planned_jobs, run_snakemake

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, "--configfile", str(TINY), *args, check=check, timeout=1200)




@pytest.mark.workflow
def test_tiny_run_resume_and_partial_rerun(tiny_run):
    """The session's tiny run (tests/conftest.py: tiny.yaml, the segmenter trained 4 epochs),
    checked, then resumed and partly rerun in place."""
    workdir = tiny_run.fresh()

    def snakemake_again(*args: str) -> subprocess.CompletedProcess:
        return run_snakemake(workdir, *tiny_run.args, *args, timeout=1200)

    results = workdir / "results" / "tiny"
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary.columns) == ["round", "cam_miou", "pseudo_mask_miou", "seg_miou"]
    assert list(summary["round"]) == [0, 1]
    values = summary[["cam_miou", "pseudo_mask_miou", "seg_miou"]].to_numpy()
    assert ((values > 0) & (values <= 100)).all()
    assert (results / "summary.md").read_text().count("| Round = 1 |") == 1
    assert (results / "miou_over_rounds.png").stat().st_size > 1000
    per_class = pd.read_csv(results / "per_class.csv")
    assert set(per_class["step"]) == {"cam", "pseudo_mask", "seg"}
    for step in ("train_classifier", "cam_shard0", "train_segmenter"):
        assert (results / "benchmarks" / "round0" / f"{step}.tsv").exists()
    assert "epoch 1/1" in (results / "logs" / "round1" / "train_classifier.log").read_text()

    # Rerunning the same command does nothing.
    again = snakemake_again()
    assert "Nothing to be done" in again.stdout + again.stderr

    # Deleting round 0's CAMs reruns what depends on them, and nothing else.
    classifier = results / "round0" / "classifier.pt"
    index = results / "dataset" / "index.csv"
    kept = {p: p.stat().st_mtime_ns for p in (classifier, index)}
    (results / "round0" / "cam" / "shard0.h5").unlink()
    plan = planned_jobs(snakemake_again("-n").stdout)
    # Round 0's CAM and all that follows it; round 1 depends on round 0's confounder.
    assert plan["cam"] == 2 and plan["expand"] == 2 and plan["confounder"] == 1
    assert plan["train_classifier"] == 1  # round 1 only: round 0's classifier is kept
    assert "generate_synthetic" not in plan and "dataset_index" not in plan
    snakemake_again()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert (results / "round0" / "cam" / "shard0.h5").exists()

    # The last round's segmenter is read only by predictions whose scores already stand:
    # deleted (as a damaged file is), it is still rebuilt, with the predictions made from it.
    (results / "round1" / "segmenter.pt").unlink()
    plan = planned_jobs(snakemake_again("-n").stdout)
    assert plan["train_segmenter"] == 1 and plan["predict"] == 1
    assert "train_classifier" not in plan and "cam" not in plan


def test_mistyped_config_key_fails_at_planning(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "classifier={epoks: 2}", check=False)
    assert result.returncode != 0
    assert "epoks" in result.stdout + result.stderr


def test_bad_config_value_names_the_key(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "conta={block: 7}", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "block" in text


def test_nested_cli_override_is_typed(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "classifier={epochs: 3}", "rounds=2")
    plan = planned_jobs(result.stdout)
    assert plan["train_classifier"] == 3 and plan["confounder"] == 2

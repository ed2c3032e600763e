"""The workflow reused as a Snakemake module from another Snakefile (issue 15 item 2).

`module conta: snakefile: ...; config: config` plus `use rule * from conta as conta_*`:
the host passes only its overrides (tests/configs/tiny.yaml); the module lays them over
its own config.yaml. Shell commands name no global of the module (the NameError of
issue 15), so the jobs run, not only plan.
"""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import planned_jobs, run_snakemake

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"

HOST = """\
configfile: "{tiny}"


module conta:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from conta as conta_*


rule all:
    default_target: True
    input:
        rules.conta_all.input,
"""


def host(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "Snakefile").write_text(HOST.format(tiny=TINY, snakefile=REPO / "Snakefile"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


@pytest.mark.workflow
def test_module_plans_like_the_workflow_and_runs(tmp_path):
    direct = planned_jobs(run_snakemake(tmp_path / "direct", "-n", "--configfile", str(TINY)).stdout)
    (tmp_path / "host").mkdir()
    module = planned_jobs(host(tmp_path / "host", "-n").stdout)
    assert module == {("all" if rule == "all" else f"conta_{rule}"): n for rule, n in direct.items()}

    # The baseline round runs through the module end to end (rounds 1 adds minutes, not coverage).
    host(tmp_path / "host", "--config", "rounds=0", "threads=1")
    summary = pd.read_csv(tmp_path / "host" / "results" / "tiny" / "summary.csv")
    assert list(summary["round"]) == [0]
    assert ((summary[["cam_miou", "pseudo_mask_miou", "seg_miou"]] > 0).all()).all()

"""Snakemake's linter and snakefmt find nothing (issue 15 item 1): CI fails when either regresses."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_helpers import run_snakemake

REPO = Path(__file__).resolve().parents[1]


def test_snakemake_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, "--lint", check=False)
    assert result.returncode == 0, f"snakemake --lint:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"


def test_snakefmt_check_is_clean():
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.fail("snakefmt is not installed: pip install -e '.[test]'")
    # The repository's own Snakemake files (not scratch copies lying in the checkout).
    tracked = subprocess.run(["git", "ls-files", "--", "Snakefile", "*.smk"], cwd=REPO, capture_output=True,
                             text=True)
    files = tracked.stdout.split() if tracked.returncode == 0 and tracked.stdout.strip() else ["."]
    result = subprocess.run([snakefmt, "--check", "--diff", *files], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"snakefmt --check (run `snakefmt .`):\n{result.stdout[-6000:]}{result.stderr[-3000:]}"

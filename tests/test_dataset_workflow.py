"""dataset.max_side through the real workflow: every step works at the reduced size."""
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import run_snakemake

from conta_core.store import MapReader

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


@pytest.mark.workflow
def test_max_side_reaches_every_step(tmp_path):
    # tiny.yaml's synthetic images are 48x48; max_side 32 reads them at 32x32.
    override = tmp_path / "max_side.yaml"
    override.write_text(yaml.safe_dump({"rounds": 0, "dataset": {"max_side": 32}}))
    run_snakemake(tmp_path, "--configfile", str(TINY), str(override), timeout=1200)
    results = tmp_path / "results" / "tiny"
    assert json.loads((results / "dataset/classes.json").read_text())["max_side"] == 32
    assert "larger than dataset.max_side 32" in (results / "dataset/report.md").read_text()
    for folder, kind in (("cam", "cam"), ("pseudo_mask", "pseudo_mask"), ("seg_pred/val", "seg_pred")):
        shards = sorted((results / "round0" / folder).glob("shard*.h5"))
        assert shards, folder
        with MapReader(shards[0], kind=kind) as reader:
            ids = reader.ids()
            assert ids and all(reader.get(i).shape[-2:] == (32, 32) for i in ids), folder
    summary = pd.read_csv(results / "summary.csv")
    values = summary[["cam_miou", "pseudo_mask_miou", "seg_miou"]].to_numpy()
    assert list(summary["round"]) == [0] and ((values > 0) & (values <= 100)).all()

"""Provenance (issue 10 item 3): a step refuses an input made by other settings or another round.

The digests and expectations come from rules/conta_steps.py, as the rules pass them; the
checks are workflow_scripts/_provenance.py, as every step runs them in setup().
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "rules"))
sys.path.insert(0, str(REPO / "workflow_scripts"))
from _provenance import StepParser, check_inputs, settings_digest  # noqa: E402
from conta_steps import Steps, digest  # noqa: E402

from conta_core.classify import save_model  # noqa: E402
from conta_core.data.index import build_index  # noqa: E402
from conta_core.data.synthetic import DEFAULT_PARAMS, generate_synthetic  # noqa: E402
from conta_core.store import MapWriter  # noqa: E402
from conta_core.store import digest as store_digest  # noqa: E402

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def steps(**changes) -> Steps:
    config = json.loads(json.dumps(CONFIG))
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            config[section][name] = value
        else:
            config[section] = value
    return Steps(config)


def test_planning_digest_is_the_store_digest():
    # The Snakefile computes digests without importing conta_core: both must agree.
    for obj in (Steps(CONFIG).settings("cam", 1), {"a": [1, 2.5, None], "b": "off"}, {}):
        assert digest(obj) == store_digest(obj)


def test_digests_separate_settings_and_rounds():
    base = Steps(CONFIG)
    # Round 0 trains without context: conta keys do not reach it; round 1 they do.
    assert base.digest("train_classifier", 0) == steps(conta__prior="empirical").digest("train_classifier", 0)
    assert base.digest("train_classifier", 1) != steps(conta__prior="empirical").digest("train_classifier", 1)
    # Speed-only and evaluation-only keys are in no artifact's digest.
    assert base.digest("cam", 1) == steps(cam__batch_size=3).digest("cam", 1)
    assert base.digest("cam", 1) == steps(cam__bg_threshold=0.2).digest("cam", 1)
    assert base.digest("cam", 1) != steps(cam__scales=[1.0]).digest("cam", 1)
    assert base.runtime("cam") == {"cam": {"batch_size": CONFIG["cam"]["batch_size"]}}


def test_step_parser_merges_runtime_outside_the_digest():
    p = StepParser()
    p.add_argument("--settings", type=json.loads)
    args = p.parse_args(["--settings", '{"cam": {"scales": [1.0]}}', "--runtime", '{"cam": {"batch_size": 4}}'])
    assert args.settings == {"cam": {"scales": [1.0], "batch_size": 4}}
    assert args.config_digest == store_digest({"cam": {"scales": [1.0]}})
    assert settings_digest(args.settings) == args.config_digest  # what provenance() records


def write_artifact(path: Path, kind: str, digest_value, round_index: int, ids=("a",)) -> Path:
    attrs = {"step": kind, "class_names": ["background", "x"], "round": round_index}
    if digest_value is not None:
        attrs["config_digest"] = digest_value
    with MapWriter(path, kind=kind, attrs=attrs) as writer:
        for image_id in ids:
            writer.put(image_id, np.zeros((4, 4), np.uint8))
    return path


def expectation(path: Path, kind: str, digest_value: str, round_index: int) -> list[dict]:
    return [{"path": str(path), "kind": kind, "round": round_index, "config_digest": digest_value}]


def test_artifact_from_this_run_passes(tmp_path):
    path = write_artifact(tmp_path / "cam.h5", "cam", "abc", 1)
    check_inputs(expectation(path, "cam", "abc", 1))


@pytest.mark.parametrize("written, expected, words", [
    (("other", 1), ("abc", 1), ["config_digest other, expected abc"]),
    (("abc", 0), ("abc", 1), ["round 0, expected 1"]),
    ((None, 1), ("abc", 1), ["records no config_digest"]),
])
def test_foreign_or_stale_artifact_is_refused(tmp_path, written, expected, words):
    path = write_artifact(tmp_path / "cam.h5", "cam", *written)
    with pytest.raises(SystemExit) as info:
        check_inputs(expectation(path, "cam", *expected))
    message = str(info.value)
    assert str(path) in message and "Delete it and rerun" in message
    for word in words:
        assert word in message


def test_model_file_digest_is_checked(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "classifier.pt"
    save_model(path, model, {"round": 1, "settings": {}, "config_digest": "abc"})
    check_inputs(expectation(path, "classifier", "abc", 1))
    with pytest.raises(SystemExit, match="config_digest abc, expected def"):
        check_inputs(expectation(path, "classifier", "def", 1))
    with pytest.raises(SystemExit, match="round 1, expected 2"):
        check_inputs(expectation(path, "classifier", "abc", 2))


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "data"
    generate_synthetic(root, **dict(DEFAULT_PARAMS, num_train=6, num_val=2, image_size=32))
    out = root.parent / "index"
    build_index({"kind": "voc_layout", "root": str(root), "splits": {"train": "train.txt", "val": "val.txt"},
                 "train_split": "train", "eval_split": "val"}, out)
    return out


def run_confounder(index_dir: Path, masks_digest: str, out: Path) -> subprocess.CompletedProcess:
    """The confounder step as its rule runs it, over one seg_pred shard recording `masks_digest`."""
    from conta_core.data.index import DatasetIndex

    index = DatasetIndex.load(index_dir)
    plan = Steps(dict(CONFIG, dataset=dict(CONFIG["dataset"], train_split="train", eval_split="val")))
    masks = out.parent / "seg_pred_train.h5"
    with MapWriter(masks, kind="seg_pred", attrs={"step": "predict", "round": 0, "class_names": index.classes,
                                                  "config_digest": masks_digest}) as writer:
        for image_id in index.ids("train"):
            h, w = index.size(image_id)
            writer.put(image_id, np.zeros((h, w), np.uint8))
    expect = plan.expect("confounder", 0, {"masks": [str(masks)]})
    cmd = [sys.executable, str(REPO / "workflow_scripts" / "confounder.py"),
           "--settings", json.dumps(plan.settings("confounder", 0)), "--expect", json.dumps(expect),
           "--index-dir", str(index_dir), "--round", "0", "--masks", str(masks), "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_confounder_step_refuses_masks_of_another_config(index_dir, tmp_path):
    plan = Steps(dict(CONFIG, dataset=dict(CONFIG["dataset"], train_split="train", eval_split="val")))
    good = plan.digest("predict", 0, "train")
    (tmp_path / "ok").mkdir()
    ok = run_confounder(index_dir, good, tmp_path / "ok" / "confounder.h5")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "ok" / "confounder.h5").exists()
    (tmp_path / "foreign").mkdir()
    foreign = run_confounder(index_dir, digest({"another": "config"}), tmp_path / "foreign" / "confounder.h5")
    assert foreign.returncode != 0
    assert "seg_pred_train.h5" in foreign.stderr and "Delete it and rerun" in foreign.stderr
    assert not (tmp_path / "foreign" / "confounder.h5").exists()

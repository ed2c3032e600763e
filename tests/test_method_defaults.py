"""A method's own defaults (issues 13, 14): `rounds: null` is the method's number of rounds, and on
the generated dataset `--config method=<m>` lays presets/demo_<m>.yaml over config.yaml for
every key the user leaves out, so it runs that method's demo (backbone, expansion, rounds)."""
import copy
import sys
from pathlib import Path

import pytest
import yaml
from test_config_types import planned_settings
from workflow_helpers import planned_jobs, run_snakemake

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "rules"))
from conta_config import apply_layer, set_paths  # noqa: E402
from conta_steps import Steps, method_rounds  # noqa: E402

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def test_set_paths_are_the_leaves_and_whole_values():
    tree = {"run": "x", "classifier": {"width": 0.5, "scale_range": [1, 2]}, "conta": {}, "cam": None}
    assert set_paths(tree) == {("run",), ("classifier", "width"), ("classifier", "scale_range"), ("conta",),
                               ("cam",)}


def test_layer_fills_only_what_the_user_left_out():
    base = {"run": "demo", "rounds": None, "classifier": {"backbone": 18, "width": 0.125, "lr": 0.001},
            "expand": {"method": "crf", "sec": {"train": {"width": 0.125, "lr": 0.001}}}}
    layer = {"run": "demo_sec", "rounds": 3, "classifier": {"backbone": "vgg16", "width": 0.25},
             "expand": {"method": "sec", "sec": {"train": {"width": 0.25}}}, "conta": {"m_lr_mult": 0}}
    # as Snakemake merged them: the user's file set classifier.width, --config the SEC train width
    config = copy.deepcopy(base)
    config["classifier"]["width"] = 0.5
    config["expand"]["sec"]["train"]["width"] = 0.5
    user = [{"method": "sec", "classifier": {"width": 0.5}}, {"expand": {"sec": {"train": {"width": 0.5}}}}]
    applied = apply_layer(config, layer, user)
    assert sorted(applied) == ["classifier.backbone", "conta.m_lr_mult", "expand.method", "rounds", "run"]
    assert config == {"run": "demo_sec", "rounds": 3,
                      "classifier": {"backbone": "vgg16", "width": 0.5, "lr": 0.001},
                      "expand": {"method": "sec", "sec": {"train": {"width": 0.5, "lr": 0.001}}},
                      "conta": {"m_lr_mult": 0}}
    # a user value above a layer key (a whole section given as a non-dict) keeps the layer out of it
    config = {"expand": {"method": "crf"}, "classifier": None}
    assert apply_layer(config, layer, [{"classifier": None}]) == ["run", "rounds", "expand.method",
                                                                  "expand.sec.train.width", "conta.m_lr_mult"]
    assert config["classifier"] is None


@pytest.mark.parametrize("method, rounds", [("irnet", 3), ("seam", 3), ("sec", 3), ("dsrg", 2)])
def test_null_rounds_are_the_methods(method, rounds):
    assert method_rounds({"method": method}) == rounds
    config = copy.deepcopy(CONFIG)
    assert config["rounds"] is None
    if method == "dsrg":  # the shared ResNet classifier and the DSRG expansion: Steps plans it
        config.update(method="dsrg")
        config["expand"]["method"] = "dsrg"
        assert Steps(config).rounds == 2
    config["rounds"] = 1
    config.update(method="irnet")
    config["expand"]["method"] = "crf"
    assert Steps(config).rounds == 1


def test_cli_method_runs_that_methods_demo(tmp_path):
    result = run_snakemake(tmp_path, "-n", "-p", "--config", "method=dsrg")
    plan = planned_jobs(result.stdout)
    assert plan["train_classifier"] == 3 and plan["train_dsrg"] == 3 and plan["seeds"] == 3  # rounds 0..2
    assert "results/demo_dsrg/round2/" in result.stdout
    result = run_snakemake(tmp_path, "-n", "-p", "--config", "method=sec", "run=mine",
                           "classifier={width: 0.5}", "expand={sec: {train: {width: 0.5}}}")
    assert planned_jobs(result.stdout)["train_sec"] == 4 and "results/mine/round3/" in result.stdout
    classifier = planned_settings(result.stdout, "train_classifier.py")["classifier"]
    demo = yaml.safe_load((REPO / "presets" / "demo_sec.yaml").read_text())
    # the layer's backbone and epochs, the user's width
    assert classifier["backbone"] == "vgg16" and classifier["epochs"] == demo["classifier"]["epochs"] != \
        CONFIG["classifier"]["epochs"]
    assert classifier["width"] == 0.5


def test_no_demo_layer_outside_the_generated_dataset(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    result = run_snakemake(tmp_path, "-n", "--config", "method=sec",
                           f"dataset={{kind: voc_layout, root: {root}, classes: [background, a]}}", check=False)
    assert result.returncode != 0
    assert "config key classifier.backbone: method 'sec' uses 'vgg16', got 18" in result.stdout + result.stderr

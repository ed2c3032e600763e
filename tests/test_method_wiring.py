"""`method` in the workflow (issue 12 item 1): the config key, its checks at planning time, what
reaches each step's settings, and the expansion steps the rules run for each method."""
from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conta_core import methods
from conta_core.cam_labels import cam_to_label, cam_to_label_power

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "rules"))
import conta_steps  # noqa: E402
from conta_steps import EXPANSIONS, Steps, method_recipe  # noqa: E402

SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def config_with(**changes) -> dict:
    config = copy.deepcopy(CONFIG)
    for key, value in changes.items():
        node = config
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return config


def test_schema_lists_every_method_and_expansion():
    assert sorted(SCHEMA["properties"]["method"]["enum"]) == methods.available()
    assert SCHEMA["properties"]["method"]["default"] == CONFIG["method"] == "irnet"
    expansions = {name for m in methods.available() for name in methods.get(m).expansions}
    assert set(SCHEMA["properties"]["expand"]["properties"]["method"]["enum"]) == expansions


def test_expand_method_must_be_one_the_method_offers():
    with pytest.raises(ValueError, match=r"config key expand.method: 'affinitynet' is not available for method "
                                         r"'irnet'; choose one of \['crf', 'irnet'\]"):
        Steps(config_with(expand__method="affinitynet"))
    with pytest.raises(ValueError, match=r"config key expand.method: 'irnet' is not available for method 'seam'"):
        Steps(config_with(method="seam", classifier__backbone="resnet38", expand__method="irnet"))
    with pytest.raises(ValueError, match=r"config key method: method must be one of .* got 'sem'"):
        Steps(config_with(method="sem"))


def test_a_method_without_workflow_hooks_is_refused(monkeypatch):
    real_get = methods.get
    bare = dataclasses.replace(real_get("irnet"), name="bare", train_round_classifier=None)
    monkeypatch.setattr(conta_steps._methods, "get", lambda name: bare if name == "bare" else real_get(name))
    with pytest.raises(ValueError, match=r"config key method: 'bare' is not wired into the workflow yet"):
        method_recipe(config_with(method="bare"))


def test_an_expansion_without_rules_is_refused(monkeypatch):
    monkeypatch.delitem(EXPANSIONS, "irnet")
    with pytest.raises(ValueError, match=r"config key expand.method: 'irnet' is not wired into the workflow yet"):
        Steps(config_with(expand__method="irnet"))


def test_workflow_steps_are_the_recipes_steps():
    """Every wired expansion runs the steps its recipe lists, then expand."""
    for name in conta_steps.wired_methods():
        for expansion, spec in methods.get(name).expansions.items():
            if expansion in EXPANSIONS:
                assert tuple(EXPANSIONS[expansion].steps) == (*spec.steps, "expand"), (name, expansion)


@pytest.mark.parametrize("method, expansion, label_keys", [("irnet", "crf", {"bg_threshold": 0.5}),
                                                           ("seam", "crf", {"bg_power": 16.0})])
def test_method_reaches_the_classifier_and_scoring_steps(method, expansion, label_keys):
    backbone = {"irnet": 18, "seam": "resnet38"}
    steps = Steps(config_with(method=method, classifier__backbone=backbone[method], expand__method=expansion))
    for step in ("train_classifier", "cam", "evaluate", "diagnose", "overlays"):
        assert steps.settings(step, 1)["method"] == method, step
    for step in ("evaluate", "diagnose", "overlays"):
        assert steps.settings(step, 1)["cam"] == label_keys, step
    assert "bg_power" not in steps.settings("cam", 1)["cam"]  # scoring only: never reruns the CAMs
    assert "method" not in steps.settings("expand", 0)  # the expansion's own keys only
    other_method = "seam" if method == "irnet" else "irnet"
    other = Steps(config_with(method=other_method, classifier__backbone=backbone[other_method],
                              expand__method=expansion))
    assert steps.digest("expand", 0) != other.digest("expand", 0)  # through the CAM digest


def test_cam_labels_of_each_method():
    rng = np.random.default_rng(0)
    cams = rng.random((2, 5, 6)).astype(np.float32)
    irnet = methods.get("irnet").cam_labeller({"bg_threshold": 0.5, "bg_power": 16.0})
    assert (irnet(cams, [3, 7]) == cam_to_label(cams, [3, 7], 0.5)).all()
    seam = methods.get("seam").cam_labeller({"bg_threshold": 0.5, "bg_power": 2.0})
    # by hand: background (1 - max) ** 2 against each class
    peak = cams.max(axis=0)
    expected = np.where((1 - peak) ** 2 > peak, 0, np.where(cams[0] >= cams[1], 3, 7))
    assert (seam(cams, [3, 7]) == expected).all()
    from conta_core.expand.affinitynet import cam_labels

    assert (cam_to_label_power(cams, [3, 7], 16.0) == cam_labels(cams, [3, 7], 16.0)).all()
    with pytest.raises(ValueError, match="cam.bg_power"):
        methods.get("seam").cam_labeller({"bg_threshold": 0.5})


def test_sec_network_from_the_classifier_trunk_needs_its_batch_norm():
    config = config_with(method="sec", classifier__backbone="vgg16", classifier__output_stride=8,
                         classifier__width=0.25, classifier__batch_norm=True, expand__method="sec")
    config["expand"]["sec"]["train"].update(width=0.25, weights="classifier", batch_norm=False)
    with pytest.raises(ValueError, match=r"config key expand.sec.train.batch_norm \(False\) must equal "
                                         r"classifier.batch_norm \(True\)"):
        Steps(config)
    config["expand"]["sec"]["train"]["batch_norm"] = True
    assert Steps(config).rounds == 3

"""Method recipes: the registry, every hook resolves, reading a recipe imports no torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conta_core import methods


def test_registry_names_and_errors():
    assert {"irnet", "seam"} <= set(methods.available())
    with pytest.raises(ValueError, match=r"method must be one of \[.*'irnet'.*'seam'.*\], got 'sem'"):
        methods.get("sem")
    seam = methods.get("seam")
    assert seam.expansion().name == "affinitynet" and seam.expansion("crf").name == "crf"
    with pytest.raises(ValueError, match="expand.method 'irnet' is not available for method 'seam'"):
        seam.expansion("irnet")
    with pytest.raises(ValueError, match="module:attribute"):
        methods.Ref("conta_core.seam.seam_loss")


@pytest.mark.parametrize("name", ["irnet", "seam"])
def test_every_hook_resolves(name):
    recipe = methods.get(name)
    refs = recipe.refs()
    assert {"backbone", "classifier", "training_loss", "cam_inference", "cam_labels"} <= set(refs)
    if name in ("irnet", "seam"):
        assert {"build_round_classifier", "train_round_classifier"} <= set(refs)
    for key, ref in refs.items():
        assert callable(ref.load()), f"{name}.{key} -> {ref.target}"


def test_recipe_defaults_match_the_modules():
    from conta_core import seam
    from conta_core.expand import affinitynet

    recipe = methods.get("seam")
    aff = recipe.expansion("affinitynet").defaults
    assert {k: aff[k] for k in affinitynet.DEFAULTS} == affinitynet.DEFAULTS
    assert aff["crf"] == affinitynet.AFFINITYNET_CRF
    assert aff["train"] == affinitynet.TRAINING
    cls = recipe.defaults["classifier"]
    assert all(cls[k] == seam.PAPER_SETTINGS[k] for k in ("optimizer", "lr", "poly_power", "batch_size",
                                                         "epochs", "weight_decay", "crop", "long_side"))
    assert recipe.defaults["cam"]["scales"] == seam.PAPER_SETTINGS["scales"]
    assert cls["siamese_scale"] == seam.SCALE and cls["ohem_fraction"] == seam.OHEM_FRACTION
    assert recipe.defaults["cam"]["bg_power"] == affinitynet.DEFAULTS["alpha"]


def test_reading_a_recipe_imports_no_torch():
    code = ("import sys, conta_core.methods as m\n"
            "for n in m.available(): m.get(n).refs()\n"
            "bad = [k for k in ('torch', 'numpy') if k in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)

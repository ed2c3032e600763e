"""Shared by the preset tests (test_presets, test_seam_presets, test_sec_dsrg_presets): a preset
merged over config.yaml as Snakemake's --configfile merges it, and bench/plan_coco_index.py, whose
VOC- and COCO-sized fake indices and timed `snakemake -n` the planning tests use."""
import copy
import importlib.util
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "presets"


def merge(base: dict, over: dict) -> dict:
    """Snakemake's --configfile merge: nested dicts merged key by key, the rest replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset_config(name: str) -> dict:
    """presets/<name> merged over config.yaml."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    return merge(base, yaml.safe_load((PRESETS / name).read_text()))


def schema() -> dict:
    return yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())


_spec = importlib.util.spec_from_file_location("plan_bench", REPO / "bench" / "plan_coco_index.py")
plan_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plan_bench)

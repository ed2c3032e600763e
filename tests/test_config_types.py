"""Config values keep the type the schema wants: words stay words, only --config values are typed.

Issue 10 item 1: `conta.mode: off` could not be set (every nested string went through
yaml.safe_load, so `off` became False), and `on`, `no`, `yes`, `2024` were mangled alike.
"""
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import planned_jobs, run_snakemake

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "rules"))
from conta_config import apply_cli_types, restore_file_strings  # noqa: E402

SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
TINY = REPO / "tests" / "configs" / "tiny.yaml"
WORDS = ["off", "on", "no", "yes"]


def cli(config_text: str, **overrides) -> dict:
    """A config as Snakemake hands it over: file values YAML-typed, --config values as given."""
    config = yaml.safe_load(config_text)
    for key, value in overrides.items():
        config[key] = value if not isinstance(value, dict) else {**config.get(key, {}), **value}
    return apply_cli_types(config, overrides, SCHEMA)


@pytest.mark.parametrize("word", WORDS)
def test_cli_class_name_word_stays_a_string(word):
    # `--config 'dataset={classes: [background, <word>]}'`: Snakemake's BaseLoader gives strings.
    config = cli("dataset: {kind: voc_layout}", dataset={"classes": ["background", word]})
    assert config["dataset"]["classes"] == ["background", word]


def test_cli_conta_mode_off_stays_off():
    config = cli("conta: {mode: adjust, block: 5}", conta={"mode": "off"})
    assert config["conta"] == {"mode": "off", "block": 5}


def test_cli_numeric_looking_names_stay_strings():
    # A nested root arrives as the string "2024"; a top-level run as Snakemake's int 2024.
    config = cli("run: demo\ndataset: {kind: voc_layout}", dataset={"root": "2024"}, run=2024)
    assert config["dataset"]["root"] == "2024" and config["run"] == "2024"


def test_cli_values_the_schema_types_are_typed():
    config = cli("classifier: {}\ncam: {}\nexpand: {crf: {}}\nconta: {}",
                 classifier={"epochs": "3", "lr": "1e-3", "freeze_bn": "true", "weights": "none"},
                 cam={"scales": ["1.0", "0.5"], "flip": "false"},
                 expand={"crf": {"bg_power": "null", "bg_threshold": "0.25"}},
                 conta={"block": "5", "map_size": ["8", "4"]})
    assert config["classifier"] == {"epochs": 3, "lr": 0.001, "freeze_bn": True, "weights": "none"}
    assert config["cam"] == {"scales": [1.0, 0.5], "flip": False}
    assert config["expand"]["crf"] == {"bg_power": None, "bg_threshold": 0.25}
    assert config["conta"] == {"block": 5, "map_size": [8, 4]}
    assert cli("conta: {}", conta={"block": "dense"})["conta"]["block"] == "dense"


def test_cli_typing_leaves_values_not_from_the_command_line():
    # A config-file string the schema would reject is not typed: the schema error shows it.
    config = cli('classifier: {epochs: "3", lr: 0.5}', classifier={"lr": "0.1"})
    assert config["classifier"] == {"epochs": "3", "lr": 0.1}


@pytest.mark.parametrize("word", WORDS)
def test_file_words_keep_their_text(word):
    text = f"conta: {{mode: off}}\ndataset: {{kind: voc_layout, root: 2024, classes: [background, {word}]}}\n"
    config = restore_file_strings(yaml.safe_load(text), [text], SCHEMA)
    assert config["conta"]["mode"] == "off"
    assert config["dataset"]["classes"] == ["background", word]
    assert config["dataset"]["root"] == "2024"


def test_file_values_are_not_typed_and_later_values_win():
    first = "classifier: {epochs: '3', freeze_bn: no}\nconta: {mode: off}\n"
    second = "conta: {mode: adjust}\n"
    config = yaml.safe_load(first)
    config["conta"] = yaml.safe_load(second)["conta"]
    restore_file_strings(config, [first, second], SCHEMA)
    # freeze_bn is a boolean key: `no` is false there; "3" stays the string it was written as.
    assert config["classifier"] == {"epochs": "3", "freeze_bn": False}
    assert config["conta"]["mode"] == "adjust"


def planned_settings(output: str, script: str) -> dict:
    """The --settings JSON of the first planned shell command of `script`."""
    for line in output.splitlines():
        if f"/{script} --settings" in line:
            return json.loads(re.search(r"--settings '(\{.*?\})'", line).group(1))
    raise AssertionError(f"no {script} command in the plan:\n{output[-3000:]}")


def test_conta_mode_off_in_a_config_file_plans_baseline_rounds(tmp_path):
    off = tmp_path / "off.yaml"
    off.write_text("conta:\n  mode: off\n")
    plan = planned_jobs(run_snakemake(tmp_path, "-n", "--configfile", str(TINY), str(off)).stdout)
    assert plan["train_classifier"] == 2 and "confounder" not in plan


def test_cli_words_reach_the_steps_as_strings(tmp_path):
    result = run_snakemake(tmp_path, "-n", "-p", "--configfile", str(TINY), "--config",
                           "conta={mode: off}", "classifier={epochs: 3}",
                           "dataset={kind: voc_layout, root: 2024, classes: [background, no, yes, on, off]}")
    settings = planned_settings(result.stdout, "dataset_index.py")
    assert settings["root"] == "2024"
    assert settings["classes"] == ["background", "no", "yes", "on", "off"]
    assert "confounder" not in planned_jobs(result.stdout)
    assert planned_settings(result.stdout, "train_classifier.py")["classifier"]["epochs"] == 3

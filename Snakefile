# CONTA: Causal Intervention for Weakly-Supervised Semantic Segmentation (NeurIPS 2020)
# as an EM workflow. Round 0 is the baseline; rounds 1..T classify on [X, M_t].
#
#   snakemake --cores N [--resources gpu=K] [--config key=value ...] [--configfile presets/...]

from snakemake.utils import min_version, validate

min_version("9.0")


import copy
import os
import sys

# The workflow's own folder (also when it is used as a module from another Snakefile,
# where workflow.basedir is the other workflow's folder).
WORKFLOW_DIR = workflow.current_basedir.get_path_or_uri(secret_free=True)
sys.path.insert(0, f"{WORKFLOW_DIR}/rules")  # the rules' Python helpers (rules/*.py)
from conta_config import (
    apply_cli_types,
    apply_layer,
    load_yaml,
    restore_file_strings,
    with_defaults,
)
from conta_steps import method_rounds


# The repository's config.yaml is the default, also when --directory points elsewhere;
# --configfile / --config are merged over it.
configfile: f"{WORKFLOW_DIR}/config.yaml"


# Values in config files keep their text where YAML 1.1 made a bool or number of a word the
# schema wants as text (`conta.mode: off`). Only values given with --config are typed
# (Snakemake leaves nested ones strings), and only where the schema rejects the string:
# `--config 'conta={mode: off}'` stays "off", `'classifier={epochs: 3}'` becomes 3.
with open(f"{WORKFLOW_DIR}/schemas/config.schema.yaml") as _schema_file:
    _SCHEMA = load_yaml(_schema_file.read())
_CONFIG_TEXTS = [
    open(path).read()
    for path in [f"{WORKFLOW_DIR}/config.yaml", *workflow.config_settings.configfiles]
]
restore_file_strings(config, _CONFIG_TEXTS, _SCHEMA)
apply_cli_types(config, workflow.config_settings.config, _SCHEMA)

# Used as a module (`module conta: config: ...`), Snakemake skips the configfile above: the
# given config, all the user set, is laid over config.yaml's defaults (a plain run already
# holds them all, and the user set what its config files and --config name).
if getattr(workflow.modifier, "namespace", None):
    _USER_SET = [copy.deepcopy(config)]
else:
    _USER_SET = [load_yaml(text) or {} for text in _CONFIG_TEXTS[1:]]
    _USER_SET.append(workflow.config_settings.config or {})
with_defaults(config, load_yaml(_CONFIG_TEXTS[0]))

# config.yaml is the IRNet demo. On the generated dataset another method's CPU demo settings,
# presets/demo_<method>.yaml, are laid over it for every key the user leaves out:
# `--config method=sec` runs the SEC demo (its backbone, expansion, rounds).
_METHOD_DEMO = f"{WORKFLOW_DIR}/presets/demo_{config['method']}.yaml"
if config["dataset"]["kind"] == "synthetic" and os.path.exists(_METHOD_DEMO):
    _DEMO_TEXT = open(_METHOD_DEMO).read()
    apply_layer(config, load_yaml(_DEMO_TEXT), _USER_SET)
    restore_file_strings(config, [_DEMO_TEXT], _SCHEMA)

validate(config, "schemas/config.schema.yaml")
if config["rounds"] is None:  # the method's own number of rounds (paper: 3, DSRG 2)
    config["rounds"] = method_rounds(config)


# Short CPU jobs run where Snakemake runs, not as cluster jobs (SLURM profile).
localrules:
    all,
    generate_synthetic,
    summary,


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/classify.smk"
include: "rules/expand.smk"
include: "rules/irnet.smk"
include: "rules/seeds.smk"
include: "rules/sec.smk"
include: "rules/dsrg.smk"
include: "rules/affinitynet.smk"
include: "rules/segment.smk"
include: "rules/confounder.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/diagnose.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/miou_over_rounds.png",
        REPORT_MANIFEST,  # the report's entries, the overlays among them (rules/report.smk)
        # Every round's artifacts that something reads are products too: a deleted one is
        # rebuilt, with what depends on it (IRNet's intermediate products likewise).
        round_targets(),

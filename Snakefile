# CONTA: Causal Intervention for Weakly-Supervised Semantic Segmentation (NeurIPS 2020)
# as an EM workflow. Round 0 is the baseline; rounds 1..T classify on [X, M_t].
#
#   snakemake --cores N [--resources gpu=K] [--config key=value ...] [--configfile presets/...]

from snakemake.utils import min_version, validate

min_version("9.0")


# The repository's config.yaml is the default, also when --directory points elsewhere;
# --configfile / --config are merged over it.
configfile: f"{workflow.basedir}/config.yaml"


def typed_overrides(value):
    """`--config 'section={key: 2}'` arrives as strings (YAML BaseLoader); give nested scalars their YAML type."""
    import yaml

    if isinstance(value, dict):
        return {k: typed_overrides(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed_overrides(v) for v in value]
    if isinstance(value, str):
        parsed = yaml.safe_load(value) if value.strip() else value
        return parsed if isinstance(parsed, (bool, int, float)) or parsed is None else value
    return value


for _section, _value in list(config.items()):
    if isinstance(_value, dict):
        config[_section] = typed_overrides(_value)

validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/classify.smk"
include: "rules/expand.smk"
include: "rules/irnet.smk"
include: "rules/segment.smk"
include: "rules/confounder.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/miou_over_rounds.png",
        # Every round's artifacts are products too: a deleted one is rebuilt, with what depends on it.
        [shard_files(t, step) for t in ROUNDS for step in ("cam", "pseudo_mask", f"seg_pred/{TRAIN_SPLIT}")],
        # IRNet's intermediate products likewise (a deleted relation network is retrained).
        [shard_files(t, "ir_label") + [f"{RESULTS}/round{t}/relation_net.pt"] for t in ROUNDS] if IRNET else [],
    default_target: True

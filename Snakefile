# CONTA: Causal Intervention for Weakly-Supervised Semantic Segmentation (NeurIPS 2020)
# as an EM workflow. Round 0 is the baseline; rounds 1..T classify on [X, M_t].
#
#   snakemake --cores N [--resources gpu=K] [--config key=value ...] [--configfile presets/...]

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/classify.smk"
include: "rules/expand.smk"
include: "rules/segment.smk"
include: "rules/confounder.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/miou_over_rounds.png",
        # Predicted training masks of every round: the confounder's input, kept for inspection.
        [shard_files(t, f"seg_pred/{TRAIN_SPLIT}") for t in ROUNDS],
    default_target: True

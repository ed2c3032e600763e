# Shared names and functions of the rules (this file has no rules). Paths:
# results/<run>/round<t>/..., logs and benchmark files under results/<run>/logs and
# results/<run>/benchmarks. What each step reads from the config: rules/conta_steps.py.
import json
import os
import re

from conta_steps import Steps

STEPS = Steps(config)
RESULTS = f"results/{config['run']}"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
ROUNDS = list(range(config["rounds"] + 1))
SHARDS = list(range(config["shards"]))
TRAIN_SPLIT = config["dataset"]["train_split"]
EVAL_SPLIT = config["dataset"]["eval_split"]
INDEX = [f"{RESULTS}/dataset/index.csv", f"{RESULTS}/dataset/classes.json"]
INDEX_DIR = f"{RESULTS}/dataset"
GPU_THREADS = config["threads"]
PY = f"python {WORKFLOW_DIR}/workflow_scripts"
DEVICE_ARGS = f"--device {config['device']}"

# voc12 and coco14 build their own splits; other kinds list theirs in dataset.splits.
_FIXED_SPLITS = {"voc12": ("train_aug", "train", "val"), "coco14": ("train", "val")}
_KNOWN_SPLITS = _FIXED_SPLITS.get(
    config["dataset"]["kind"], config["dataset"]["splits"]
)
for _split in (TRAIN_SPLIT, EVAL_SPLIT):
    if _split not in _KNOWN_SPLITS:
        raise ValueError(
            f"config dataset: split {_split!r} is not one of {sorted(_KNOWN_SPLITS)} "
            f"(dataset.train_split / dataset.eval_split)"
        )

# Scale-out and resume (config section `resources`): GPUs per training job (DDP ranks),
# and how often training saves resumable state under results/<run>/checkpoints/ (not an
# output, so Snakemake keeps it when a job fails or is killed).
_RESOURCES = config.get("resources") or {}
TRAIN_GPUS = int(_RESOURCES.get("train_gpus", 1))
CHECKPOINT_EVERY = int(_RESOURCES.get("checkpoint_every", 100))
CHECKPOINTS = f"{RESULTS}/checkpoints"

# `method` and expand.method are checked together by Steps (rules/conta_steps.py).
EXPAND_METHOD = config["expand"]["method"]

DATASET = config["dataset"]
DATASET_KIND = DATASET["kind"]
PLAN_DIR = f"{RESULTS}/dataset/plan" if DATASET_KIND == "coco14" else INDEX_DIR
MASK_DIR = INDEX_DIR  # COCO shards: <INDEX_DIR>/gt_masks/<split>_shard<k>.h5 (conta_core.data.coco)
COCO_MASK_SPLITS = ["train", "val"]
MASK_SHARDS = list(range(DATASET.get("mask_shards", 8)))
COCO_MASK_FILES = [
    f"{MASK_DIR}/gt_masks/{split}_shard{shard}.h5"
    for split in COCO_MASK_SPLITS
    for shard in MASK_SHARDS
]


wildcard_constraints:
    round=r"\d+",
    shard=r"\d+",
    split="|".join(re.escape(s) for s in sorted({TRAIN_SPLIT, EVAL_SPLIT})),


# -- params ------------------------------------------------------------------------------
def fixed(value):
    """A param that never reruns a step (the workflow's folder, the device, checkpointing).

    Snakemake reruns a job when a param changed, except params computed by a function
    that takes `threads` (or input/output/resources), which it treats as derived.
    """
    return lambda wildcards, threads: value


def index_dir_of(wildcards, input):
    """The dataset folder: where the rule's first input (INDEX's index.csv) lies."""
    return os.path.dirname(input[0])


def checkpoint_args(model):
    """Where and how often training saves resumable state; never a rerun trigger."""
    return lambda wildcards, threads: (
        f"--checkpoint-dir {CHECKPOINTS}/round{wildcards.round}/{model} "
        f"--checkpoint-every {CHECKPOINT_EVERY}"
    )


def tensorboard_arg(step):
    """logging.tensorboard: where the training step writes its scalars. Logging only: switching
    it reruns nothing (`--forcerun <rule>` logs an existing run)."""
    if not (config.get("logging") or {}).get("tensorboard", False):
        return fixed("")
    return lambda wildcards, threads: (
        f"--tensorboard {RESULTS}/tensorboard/round{wildcards.round}/{step}"
    )


def step_settings(step):
    """The step's result settings (rules/conta_steps.py) as JSON: a change reruns the step."""

    def settings_of(wildcards):
        round_index = int(wildcards.round) if "round" in wildcards.keys() else None
        split = wildcards.split if "split" in wildcards.keys() else None
        return json.dumps(STEPS.settings(step, round_index, split), sort_keys=True)

    return settings_of


def step_runtime(step):
    """The step's speed-only keys as JSON; never a rerun trigger (see `fixed`)."""
    return fixed(json.dumps(STEPS.runtime(step), sort_keys=True))


def step_expect(step):
    """Digest and round of the producer of each input the step reads, for the step to check."""

    def expect_of(wildcards, input):
        named = {name: input[name] for name in input.keys()}
        return json.dumps(STEPS.expect(step, int(wildcards.round), named))

    return expect_of


def settings(*sections, **extra):
    """Whole config sections as JSON, for rules whose step reads whole sections."""
    chosen = {
        "seed": config["seed"],
        "train_split": TRAIN_SPLIT,
        "eval_split": EVAL_SPLIT,
    }
    chosen.update({name: config[name] for name in sections})
    chosen.update(extra)
    return json.dumps(chosen, sort_keys=True)


# -- rounds and shards ----------------------------------------------------------------------
def uses_context(round_index):
    return STEPS.uses_context(int(round_index))


def round_dir(round_index):
    return f"{RESULTS}/round{round_index}"


def shard_files(round_index, folder):
    return [f"{round_dir(round_index)}/{folder}/shard{k}.h5" for k in SHARDS]


def previous_confounder(wildcards):
    """Round t's classifier and CAM read the confounder file of round t - 1."""
    if uses_context(wildcards.round):
        return {"confounder": f"{round_dir(int(wildcards.round) - 1)}/confounder.h5"}
    return {}


def confounder_arg(wildcards, input):
    return f"--confounder {input.confounder}" if "confounder" in input.keys() else ""


def round_targets():
    """Every round's artifacts that something reads: a deleted one is rebuilt, with what
    depends on it. A training-split prediction nothing reads (the last round's, or every
    round's without a confounder from it) only with segment.predict_train_all."""
    targets = []
    for t in ROUNDS:
        # The models and the evaluation predictions too: a deleted (e.g. damaged) last-round
        # segmenter would otherwise never be rebuilt, as the scores made from it still stand.
        targets += [f"{round_dir(t)}/classifier.pt", f"{round_dir(t)}/segmenter.pt"]
        targets += shard_files(t, f"seg_pred/{EVAL_SPLIT}")
        if STEPS.builds_confounder(t):
            targets.append(f"{round_dir(t)}/confounder.h5")
        targets += shard_files(t, "cam") + shard_files(t, "pseudo_mask")
        if STEPS.predicts_train(t):
            targets += shard_files(t, f"seg_pred/{TRAIN_SPLIT}")
        targets += expansion_rules().products(t)
    return targets


# -- dataset --------------------------------------------------------------------------------
def dataset_root(wildcards):
    if DATASET_KIND == "synthetic":
        return {"root": f"{RESULTS}/dataset/synthetic"}
    return {}


def dataset_index_outputs():
    """What the index step writes: the index (a plan, for COCO) and, for VOC 2012 + SBD,
    the SBD masks it renders (never into the dataset folder)."""
    outputs = {
        "index": f"{PLAN_DIR}/index.csv",
        "classes": f"{PLAN_DIR}/classes.json",
        "report": f"{PLAN_DIR}/report.md",
    }
    if DATASET_KIND == "voc12" and DATASET.get("sbd_root"):
        outputs["sbd_masks"] = f"{INDEX_DIR}/sbd_masks.h5"
    return outputs


def root_arg(wildcards, input):
    return f"--root {input.root}" if "root" in input.keys() else ""


def coco_annotation_mb(wildcards):
    """Parsing the instances json takes ~8x its size in memory (train2014: ~450 MB file)."""
    name = {"train": "instances_train2014.json", "val": "instances_val2014.json"}[
        wildcards.split
    ]
    root = os.path.expanduser(str(DATASET.get("root") or ""))
    path = os.path.join(root, "annotations", name)
    size_mb = os.path.getsize(path) / 2**20 if os.path.isfile(path) else 0
    return int(1000 + 8 * size_mb)


# -- expansions -------------------------------------------------------------------------------
# Each expand.method with steps of its own has a rules file, rules/<name>.smk, that defines
# those steps' rules and registers here what the shared rules need from it: what the round's
# expand job reads besides its CAM shard, the arguments that pass it, whether expand needs a
# GPU, and the round's products (targets of `all`, so a deleted one is rebuilt). The step
# names, their settings and digests are in rules/conta_steps.py EXPANSIONS.
class ExpansionRules:
    def __init__(self, name, inputs=None, args="", gpus=0, products=None):
        self.name = name
        self._inputs = inputs or (lambda t: {})  # round -> {input name: path}
        self.args = args  # format string over the input names, e.g. "--relation-net {relation_net}"
        self.gpus = gpus
        self._products = products or (lambda t: [])  # round -> paths

    def inputs(self, round_index):
        return self._inputs(int(round_index))

    def products(self, round_index):
        return self._products(int(round_index))


EXPANSION_RULES = {"crf": ExpansionRules("crf")}  # crf: the CAM shard alone, CPU only


def register_expansion(name, **kwargs):
    EXPANSION_RULES[name] = ExpansionRules(name, **kwargs)


def expansion_rules():
    """The rules' view of the config's expand.method (its rules file must be included)."""
    if EXPAND_METHOD not in EXPANSION_RULES:
        raise ValueError(
            f"config key expand.method: {EXPAND_METHOD!r} has no rules registered "
            f"(rules/{EXPAND_METHOD}.smk, included by the Snakefile, calls register_expansion)"
        )
    return EXPANSION_RULES[EXPAND_METHOD]


def expand_inputs(wildcards):
    """The CAM shard, and what the expansion's own steps made for the round."""
    inputs = {"cam": f"{round_dir(wildcards.round)}/cam/shard{wildcards.shard}.h5"}
    inputs.update(expansion_rules().inputs(wildcards.round))
    return inputs


def expansion_args(wildcards, input):
    """The expansion's inputs as arguments, and the device and GPU claim where it runs a network."""
    rules = expansion_rules()
    args = rules.args.format(**{name: input[name] for name in input.keys()})
    if rules.gpus:
        args += f" {DEVICE_ARGS} --gpus {rules.gpus}"
    return args.strip()


def expansion_gpus(wildcards):
    return expansion_rules().gpus


def relation_inputs(wildcards):
    """All IR label shards of the round; the classifier too when its backbone is the frozen one."""
    inputs = {"ir_labels": shard_files(wildcards.round, "ir_label")}
    if config["expand"]["irnet"]["train"]["weights"] == "classifier":
        inputs["classifier"] = f"{round_dir(wildcards.round)}/classifier.pt"
    return inputs


def affinity_inputs(wildcards):
    """AffinityNet: all confident-label shards of the round; the classifier too when the trunk
    starts from it."""
    inputs = {"aff_labels": shard_files(wildcards.round, "aff_label")}
    if config["expand"]["affinitynet"]["train"]["weights"] == "classifier":
        inputs["classifier"] = f"{round_dir(wildcards.round)}/classifier.pt"
    return inputs


def classifier_arg(wildcards, input):
    return f"--classifier {input.classifier}" if "classifier" in input.keys() else ""


# -- SEC and DSRG (rules/seeds.smk, rules/sec.smk, rules/dsrg.smk) ----------------------------
def step_reads_classifier(step):
    """Whether the expansion's `step` reads the round's classifier.pt (rules/conta_steps.py)."""
    spec = STEPS.expansion.steps.get(step)
    section = config["expand"].get(EXPAND_METHOD) or {}
    return bool(spec and spec.reads_classifier and spec.reads_classifier(section))


def seeds_inputs(wildcards):
    """The CAM shard; SEC's background cue (gradient saliency) also reads the round's classifier."""
    inputs = {"cam": f"{round_dir(wildcards.round)}/cam/shard{wildcards.shard}.h5"}
    if step_reads_classifier("seeds"):
        inputs["classifier"] = f"{round_dir(wildcards.round)}/classifier.pt"
    return inputs


def seeds_gpus(wildcards):
    return 1 if step_reads_classifier("seeds") else 0  # DSRG's saliency cue: CPU only


def seeds_classifier_arg(wildcards, input):
    if "classifier" not in input.keys():
        return ""
    return f"--classifier {input.classifier} {DEVICE_ARGS} --gpus 1"


def seed_net_inputs(step):
    """All seeds shards of the round; the classifier too when the network starts from its trunk."""

    def inputs(wildcards):
        out = {"seeds": shard_files(wildcards.round, "seeds")}
        if step_reads_classifier(step):
            out["classifier"] = f"{round_dir(wildcards.round)}/classifier.pt"
        return out

    return inputs


# -- confounder -------------------------------------------------------------------------------
def confounder_masks(wildcards):
    if config["confounder"]["source"] == "pseudo_mask":
        return shard_files(wildcards.round, "pseudo_mask")
    return shard_files(wildcards.round, f"seg_pred/{TRAIN_SPLIT}")

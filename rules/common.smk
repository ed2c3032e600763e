# Shared names and helpers of the rules. Paths: results/<run>/round<t>/..., logs and
# benchmark files under results/<run>/logs and results/<run>/benchmarks.
import json
import re

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

# voc12 and coco14 build their own splits; other kinds list theirs in dataset.splits.
_FIXED_SPLITS = {"voc12": ("train_aug", "train", "val"), "coco14": ("train", "val")}
_KNOWN_SPLITS = _FIXED_SPLITS.get(config["dataset"]["kind"], config["dataset"]["splits"])
for _split in (TRAIN_SPLIT, EVAL_SPLIT):
    if _split not in _KNOWN_SPLITS:
        raise ValueError(f"config dataset: split {_split!r} is not one of {sorted(_KNOWN_SPLITS)} "
                         f"(dataset.train_split / dataset.eval_split)")


wildcard_constraints:
    round=r"\d+",
    shard=r"\d+",
    split="|".join(re.escape(s) for s in sorted({TRAIN_SPLIT, EVAL_SPLIT})),


def settings(*sections, **extra):
    """The config sections a step depends on, as JSON (a change reruns the step)."""
    chosen = {"seed": config["seed"], "train_split": TRAIN_SPLIT, "eval_split": EVAL_SPLIT}
    chosen.update({name: config[name] for name in sections})
    chosen.update(extra)
    return json.dumps(chosen, sort_keys=True)


def uses_context(round_index):
    return int(round_index) > 0 and config["conta"]["mode"] != "off"


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


PY = f"python {workflow.basedir}/workflow_scripts"
DEVICE_ARGS = f"--device {config['device']}"


# Scale-out and resume (config section `resources`): GPUs per training job (DDP ranks),
# and how often training saves resumable state under results/<run>/checkpoints/ (not an
# output, so Snakemake keeps it when a job fails or is killed).
_RESOURCES = config.get("resources") or {}
TRAIN_GPUS = int(_RESOURCES.get("train_gpus", 1))
CHECKPOINT_EVERY = int(_RESOURCES.get("checkpoint_every", 100))
CHECKPOINTS = f"{RESULTS}/checkpoints"

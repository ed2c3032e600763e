# The dataset: generated (synthetic) or read in place (voc_layout, voc12, coco14), then
# indexed and validated before any compute. The user's dataset folder is never written to.
#
#   synthetic, voc_layout, voc12:  [generate_synthetic ->] dataset_index -> INDEX
#   coco14:  dataset_index (plan) -> render_coco_masks x (2 splits x mask_shards)
#            -> dataset_ready -> INDEX
#
# Every later rule depends on INDEX (index.csv + classes.json, rules/common.smk). For
# COCO that pair is published by dataset_ready only after all mask shards are rendered
# and checked, so every consumer of ground-truth masks waits for them without naming
# them. The number of render jobs grows with dataset.mask_shards, never with images,
# and planning reads no dataset file.

DATASET = config["dataset"]
DATASET_KIND = DATASET["kind"]
PLAN_DIR = f"{RESULTS}/dataset/plan" if DATASET_KIND == "coco14" else INDEX_DIR
MASK_DIR = INDEX_DIR  # COCO shards: <INDEX_DIR>/gt_masks/<split>_shard<k>.h5 (conta_core.data.coco)
COCO_MASK_SPLITS = ["train", "val"]
MASK_SHARDS = list(range(DATASET.get("mask_shards", 8)))
COCO_MASK_FILES = [f"{MASK_DIR}/gt_masks/{split}_shard{shard}.h5"
                   for split in COCO_MASK_SPLITS for shard in MASK_SHARDS]


rule generate_synthetic:
    output:
        directory(f"{RESULTS}/dataset/synthetic"),
    params:
        settings=json.dumps(DATASET.get("synthetic", {}), sort_keys=True),
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/generate_synthetic.log",
    benchmark:
        f"{BENCH}/generate_synthetic.tsv"
    threads: 1
    shell:
        "{PY}/generate_synthetic.py --settings {params.settings:q} --out {output} > {log} 2>&1"


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


rule dataset_index:
    input:
        unpack(dataset_root),
    output:
        **dataset_index_outputs(),
    params:
        settings=json.dumps(DATASET, sort_keys=True),
        root=lambda wildcards, input: f"--root {input.root}" if "root" in input.keys() else "",
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/dataset_index.log",
    benchmark:
        f"{BENCH}/dataset_index.tsv"
    threads: 1
    shell:
        "{PY}/dataset_index.py --settings {params.settings:q} {params.root} "
        "--out-dir {PLAN_DIR} --mask-dir {MASK_DIR} > {log} 2>&1"


if DATASET_KIND == "coco14":

    def coco_annotation_mb(wildcards):
        """Parsing the instances json takes ~8x its size in memory (train2014: ~450 MB file)."""
        import os

        name = {"train": "instances_train2014.json", "val": "instances_val2014.json"}[wildcards.split]
        path = os.path.join(os.path.expanduser(str(DATASET.get("root") or "")), "annotations", name)
        size_mb = os.path.getsize(path) / 2**20 if os.path.isfile(path) else 0
        return int(1000 + 8 * size_mb)

    rule render_coco_masks:
        input:
            index=f"{PLAN_DIR}/index.csv",
            classes=f"{PLAN_DIR}/classes.json",
        output:
            f"{MASK_DIR}/gt_masks/{{split}}_shard{{shard}}.h5",
        wildcard_constraints:
            split="|".join(COCO_MASK_SPLITS),
        params:
            root=DATASET.get("root") or "",
        conda:
            "../envs/conta.yaml"
        log:
            f"{LOGS}/render_coco_masks/{{split}}_shard{{shard}}.log",
        benchmark:
            f"{BENCH}/render_coco_masks/{{split}}_shard{{shard}}.tsv"
        threads: 1
        resources:
            mem_mb=coco_annotation_mb,
        shell:
            "{PY}/render_coco_masks.py --settings '{{}}' --plan-dir {PLAN_DIR} --root {params.root:q} "
            "--split {wildcards.split} --shard {wildcards.shard} --out {output} > {log} 2>&1"

    rule dataset_ready:
        input:
            index=f"{PLAN_DIR}/index.csv",
            classes=f"{PLAN_DIR}/classes.json",
            report=f"{PLAN_DIR}/report.md",
            # ancient: the shards must exist first, but the published index depends only on
            # the plan; a shard rendered again (`snakemake <shard>`, e.g. after it was deleted)
            # is the same file and must not rerun every step that reads the index.
            shards=ancient(COCO_MASK_FILES),
        output:
            index=f"{INDEX_DIR}/index.csv",
            classes=f"{INDEX_DIR}/classes.json",
            report=f"{INDEX_DIR}/report.md",
        conda:
            "../envs/conta.yaml"
        log:
            f"{LOGS}/dataset_ready.log",
        threads: 1
        shell:
            "{PY}/dataset_index.py --settings '{{}}' --publish {PLAN_DIR} --out-dir {INDEX_DIR} "
            "--mask-shards {input.shards} > {log} 2>&1"

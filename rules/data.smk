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


rule generate_synthetic:
    output:
        directory(f"{RESULTS}/dataset/synthetic"),
    log:
        f"{LOGS}/generate_synthetic.log",
    benchmark:
        f"{BENCH}/generate_synthetic.tsv"
    conda:
        "../envs/conta.yaml"
    threads: 1
    params:
        script=fixed(f"{PY}/generate_synthetic.py"),
        settings=step_settings("generate_synthetic"),
    shell:
        "{params.script} --settings {params.settings:q} --out {output} > {log} 2>&1"


rule dataset_index:
    input:
        unpack(dataset_root),
    output:
        **dataset_index_outputs(),
    log:
        f"{LOGS}/dataset_index.log",
    benchmark:
        f"{BENCH}/dataset_index.tsv"
    conda:
        "../envs/conta.yaml"
    threads: 1
    params:
        script=fixed(f"{PY}/dataset_index.py"),
        settings=step_settings("dataset_index"),
        root=root_arg,
        plan_dir=lambda wildcards, output: os.path.dirname(output.index),
        mask_dir=fixed(MASK_DIR),
    shell:
        "{params.script} --settings {params.settings:q} {params.root} "
        "--out-dir {params.plan_dir} --mask-dir {params.mask_dir} > {log} 2>&1"


if DATASET_KIND == "coco14":

    localrules:
        dataset_ready,

    rule render_coco_masks:
        input:
            index=f"{PLAN_DIR}/index.csv",
            classes=f"{PLAN_DIR}/classes.json",
        output:
            f"{MASK_DIR}/gt_masks/{{split}}_shard{{shard}}.h5",
        log:
            f"{LOGS}/render_coco_masks/{{split}}_shard{{shard}}.log",
        benchmark:
            f"{BENCH}/render_coco_masks/{{split}}_shard{{shard}}.tsv"
        wildcard_constraints:
            split="|".join(COCO_MASK_SPLITS),
        conda:
            "../envs/conta.yaml"
        threads: 1
        resources:
            mem_mb=coco_annotation_mb,
        params:
            script=fixed(f"{PY}/render_coco_masks.py"),
            root=DATASET.get("root") or "",
            plan_dir=lambda wildcards, input: os.path.dirname(input.index),
        shell:
            "{params.script} --settings '{{}}' --plan-dir {params.plan_dir} --root {params.root:q} "
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
        log:
            f"{LOGS}/dataset_ready.log",
        conda:
            "../envs/conta.yaml"
        threads: 1
        params:
            script=fixed(f"{PY}/dataset_index.py"),
            plan_dir=lambda wildcards, input: os.path.dirname(input.index),
            index_dir=lambda wildcards, output: os.path.dirname(output.index),
        shell:
            "{params.script} --settings '{{}}' --publish {params.plan_dir} --out-dir {params.index_dir} "
            "--mask-shards {input.shards} > {log} 2>&1"

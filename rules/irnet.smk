# IRNet's boundary branch for expand.method irnet (rules/expand.smk runs the random walk):
#   CAM shards -> ir_label shards (CRF-refined confident fg/bg, 255 unsure)
#              -> relation_net.pt of the round (boundary layers on a frozen ResNet).
# With expand.method crf nothing here is requested, so nothing here runs.


def irnet_settings(part, **extra):
    """The round's settings of one IRNet step: expand.irnet.<part> only."""
    return settings(expand={"method": "irnet", "irnet": {part: config["expand"]["irnet"][part]}}, **extra)


rule ir_label:
    input:
        INDEX,
        cam=f"{RESULTS}/round{{round}}/cam/shard{{shard}}.h5",
    output:
        f"{RESULTS}/round{{round}}/ir_label/shard{{shard}}.h5",
    params:
        settings=irnet_settings("ir_label", shards=config["shards"]),
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/ir_label_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/ir_label_shard{{shard}}.tsv"
    # Two dense CRFs per image: CPU only.
    threads: 1
    shell:
        "{PY}/ir_label.py --settings {params.settings:q} --threads {threads} --index-dir {INDEX_DIR} "
        "--round {wildcards.round} --cam {input.cam} --shard {wildcards.shard} --out {output} > {log} 2>&1"


def relation_inputs(wildcards):
    """All IR label shards of the round; the classifier too when its backbone is the frozen one."""
    inputs = {"ir_labels": shard_files(wildcards.round, "ir_label")}
    if config["expand"]["irnet"]["train"]["weights"] == "classifier":
        inputs["classifier"] = f"{round_dir(wildcards.round)}/classifier.pt"
    return inputs


def classifier_arg(wildcards, input):
    return f"--classifier {input.classifier}" if "classifier" in input.keys() else ""


rule train_relation:
    input:
        INDEX,
        unpack(relation_inputs),
    output:
        f"{RESULTS}/round{{round}}/relation_net.pt",
    params:
        settings=irnet_settings("train"),
        classifier=classifier_arg,
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/train_relation.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_relation.tsv"
    threads: GPU_THREADS
    resources:
        gpu=1,
    shell:
        "{PY}/train_relation.py --settings {params.settings:q} --threads {threads} {DEVICE_ARGS} --gpus {resources.gpu} "
        "--index-dir {INDEX_DIR} --round {wildcards.round} --ir-labels {input.ir_labels} {params.classifier} "
        "--out {output} > {log} 2>&1"

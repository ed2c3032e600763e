# Step 1 (M-step): the image-level classifier, and its CAMs on the training split.


rule train_classifier:
    input:
        INDEX,
        unpack(previous_confounder),
    output:
        f"{RESULTS}/round{{round}}/classifier.pt",
    params:
        settings=settings("classifier", "conta"),
        confounder=confounder_arg,
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/train_classifier.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_classifier.tsv"
    threads: GPU_THREADS
    resources:
        gpu=TRAIN_GPUS,
    shell:
        "{PY}/train_classifier.py --settings {params.settings:q} --threads {threads} {DEVICE_ARGS} "
        "--gpus {resources.gpu} --checkpoint-dir {CHECKPOINTS}/round{wildcards.round}/classifier "
        "--checkpoint-every {CHECKPOINT_EVERY} "
        "--index-dir {INDEX_DIR} --round {wildcards.round} {params.confounder} --out {output} > {log} 2>&1"


rule cam:
    input:
        INDEX,
        unpack(previous_confounder),
        classifier=f"{RESULTS}/round{{round}}/classifier.pt",
    output:
        f"{RESULTS}/round{{round}}/cam/shard{{shard}}.h5",
    params:
        settings=settings("classifier", "conta", "cam", shards=config["shards"]),
        confounder=confounder_arg,
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/cam_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/cam_shard{{shard}}.tsv"
    threads: GPU_THREADS
    resources:
        gpu=1,
    shell:
        "{PY}/cam.py --settings {params.settings:q} --threads {threads} {DEVICE_ARGS} --gpus {resources.gpu} "
        "--index-dir {INDEX_DIR} "
        "--round {wildcards.round} --classifier {input.classifier} {params.confounder} "
        "--shard {wildcards.shard} --out {output} > {log} 2>&1"

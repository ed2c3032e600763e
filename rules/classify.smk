# Step 1 (M-step): the image-level classifier, and its CAMs on the training split.


rule train_classifier:
    input:
        INDEX,
        unpack(previous_confounder),
    output:
        f"{RESULTS}/round{{round}}/classifier.pt",
    log:
        f"{LOGS}/round{{round}}/train_classifier.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_classifier.tsv"
    conda:
        "../envs/conta.yaml"
    threads: GPU_THREADS
    resources:
        gpu=TRAIN_GPUS,
    params:
        script=fixed(f"{PY}/train_classifier.py"),
        settings=step_settings("train_classifier"),
        runtime=step_runtime("train_classifier"),
        expect=step_expect("train_classifier"),
        confounder=confounder_arg,
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
        checkpoints=checkpoint_args("classifier"),
        tensorboard=tensorboard_arg("train_classifier"),
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} {params.device} --gpus {resources.gpu} "
        "{params.checkpoints} {params.tensorboard} --index-dir {params.index_dir} "
        "--round {wildcards.round} {params.confounder} --out {output} > {log} 2>&1"


rule cam:
    input:
        INDEX,
        unpack(previous_confounder),
        classifier=f"{RESULTS}/round{{round}}/classifier.pt",
    output:
        f"{RESULTS}/round{{round}}/cam/shard{{shard}}.h5",
    log:
        f"{LOGS}/round{{round}}/cam_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/cam_shard{{shard}}.tsv"
    conda:
        "../envs/conta.yaml"
    threads: GPU_THREADS
    resources:
        gpu=1,
    params:
        script=fixed(f"{PY}/cam.py"),
        settings=step_settings("cam"),
        runtime=step_runtime("cam"),
        expect=step_expect("cam"),
        confounder=confounder_arg,
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} {params.device} --gpus {resources.gpu} "
        "--index-dir {params.index_dir} --round {wildcards.round} --classifier {input.classifier} "
        "{params.confounder} --shard {wildcards.shard} --out {output} > {log} 2>&1"

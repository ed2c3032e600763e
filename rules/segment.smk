# Step 3: DeepLab-v2 trained on the pseudo-masks; predictions on the evaluation split, and
# on the training split where the confounder reads them (rules/common.smk round_targets).


rule train_segmenter:
    input:
        INDEX,
        pseudo_masks=lambda w: shard_files(w.round, "pseudo_mask"),
    output:
        f"{RESULTS}/round{{round}}/segmenter.pt",
    log:
        f"{LOGS}/round{{round}}/train_segmenter.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_segmenter.tsv"
    conda:
        "../envs/conta.yaml"
    threads: GPU_THREADS
    resources:
        gpu=TRAIN_GPUS,
    params:
        script=fixed(f"{PY}/train_segmenter.py"),
        settings=step_settings("train_segmenter"),
        runtime=step_runtime("train_segmenter"),
        expect=step_expect("train_segmenter"),
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
        checkpoints=checkpoint_args("segmenter"),
        tensorboard=tensorboard_arg("train_segmenter"),
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} {params.device} --gpus {resources.gpu} "
        "{params.checkpoints} {params.tensorboard} --index-dir {params.index_dir} "
        "--round {wildcards.round} --pseudo-masks {input.pseudo_masks} --out {output} > {log} 2>&1"


rule predict:
    input:
        INDEX,
        segmenter=f"{RESULTS}/round{{round}}/segmenter.pt",
    output:
        f"{RESULTS}/round{{round}}/seg_pred/{{split}}/shard{{shard}}.h5",
    log:
        f"{LOGS}/round{{round}}/predict_{{split}}_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/predict_{{split}}_shard{{shard}}.tsv"
    conda:
        "../envs/conta.yaml"
    # With segment.crf the job's threads are its CRF worker processes (one 21-label CRF
    # of a VOC image: 0.6-2 s on one core, 25-70x its GPU time). It asks for `threads` like every
    # GPU job, not more: Snakemake counts threads against --cores, so a larger ask would
    # keep the other GPUs' predict shards waiting. Give it cores / GPUs on the command line:
    # --set-threads predict=16 on 16 cores and 1 GPU (README "Prediction's dense CRFs").
    threads: GPU_THREADS
    resources:
        gpu=1,
    params:
        script=fixed(f"{PY}/predict.py"),
        settings=step_settings("predict"),
        runtime=step_runtime("predict"),
        expect=step_expect("predict"),
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} {params.device} --gpus {resources.gpu} "
        "--index-dir {params.index_dir} --round {wildcards.round} --segmenter {input.segmenter} "
        "--split {wildcards.split} --shard {wildcards.shard} --out {output} > {log} 2>&1"

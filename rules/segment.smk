# Step 3: DeepLab-v2 trained on the pseudo-masks; predictions on the training and evaluation splits.


rule train_segmenter:
    input:
        INDEX,
        pseudo_masks=lambda w: shard_files(w.round, "pseudo_mask"),
    output:
        f"{RESULTS}/round{{round}}/segmenter.pt",
    params:
        settings=settings("segment"),
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/train_segmenter.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_segmenter.tsv"
    threads: GPU_THREADS
    resources:
        gpu=TRAIN_GPUS,
    shell:
        "{PY}/train_segmenter.py --settings {params.settings:q} --threads {threads} {DEVICE_ARGS} "
        "--gpus {resources.gpu} --checkpoint-dir {CHECKPOINTS}/round{wildcards.round}/segmenter "
        "--checkpoint-every {CHECKPOINT_EVERY} "
        "--index-dir {INDEX_DIR} --round {wildcards.round} --pseudo-masks {input.pseudo_masks} "
        "--out {output} > {log} 2>&1"


rule predict:
    input:
        INDEX,
        segmenter=f"{RESULTS}/round{{round}}/segmenter.pt",
    output:
        f"{RESULTS}/round{{round}}/seg_pred/{{split}}/shard{{shard}}.h5",
    params:
        settings=settings("segment", shards=config["shards"]),
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/predict_{{split}}_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/predict_{{split}}_shard{{shard}}.tsv"
    threads: GPU_THREADS
    resources:
        gpu=1,
    shell:
        "{PY}/predict.py --settings {params.settings:q} --threads {threads} {DEVICE_ARGS} --gpus {resources.gpu} "
        "--index-dir {INDEX_DIR} "
        "--round {wildcards.round} --segmenter {input.segmenter} --split {wildcards.split} "
        "--shard {wildcards.shard} --out {output} > {log} 2>&1"

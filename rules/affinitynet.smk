# AffinityNet, SEAM's expansion, for expand.method affinitynet (rules/expand.smk runs the walk):
#   CAM shards -> aff_label shards (CRF-refined confident fg/bg at two background powers, 255 unsure)
#              -> affinity_net.pt of the round (ResNet-38 affinity features).
# With another expand.method nothing here is requested, so nothing here runs.


register_expansion(
    "affinitynet",
    inputs=lambda t: {"affinity_net": f"{round_dir(t)}/affinity_net.pt"},
    args="--affinity-net {affinity_net}",
    gpus=1,
    products=lambda t: shard_files(t, "aff_label")
    + [f"{round_dir(t)}/affinity_net.pt"],
)


rule aff_label:
    input:
        INDEX,
        cam=f"{RESULTS}/round{{round}}/cam/shard{{shard}}.h5",
    output:
        f"{RESULTS}/round{{round}}/aff_label/shard{{shard}}.h5",
    log:
        f"{LOGS}/round{{round}}/aff_label_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/aff_label_shard{{shard}}.tsv"
    conda:
        "../envs/conta.yaml"
    # Two dense CRFs per image, CPU only, spread over one worker process per thread (the
    # output does not depend on how many). It asks for `threads` like the CRF expansion: the
    # shards' jobs run at once, and Snakemake caps each at --cores, so `shards` jobs fill the
    # machine with threads = cores // shards (e.g. --set-threads aff_label=4 on 16 cores, 4 shards).
    threads: GPU_THREADS
    params:
        script=fixed(f"{PY}/aff_label.py"),
        settings=step_settings("aff_label"),
        expect=step_expect("aff_label"),
        index_dir=index_dir_of,
    shell:
        "{params.script} --settings {params.settings:q} --expect {params.expect:q} "
        "--threads {threads} --index-dir {params.index_dir} --round {wildcards.round} "
        "--cam {input.cam} --shard {wildcards.shard} --out {output} > {log} 2>&1"


rule train_affinity:
    input:
        INDEX,
        unpack(affinity_inputs),
    output:
        f"{RESULTS}/round{{round}}/affinity_net.pt",
    log:
        f"{LOGS}/round{{round}}/train_affinity.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_affinity.tsv"
    conda:
        "../envs/conta.yaml"
    threads: GPU_THREADS
    resources:
        gpu=TRAIN_GPUS,
    params:
        script=fixed(f"{PY}/train_affinity.py"),
        settings=step_settings("train_affinity"),
        runtime=step_runtime("train_affinity"),
        expect=step_expect("train_affinity"),
        classifier=classifier_arg,
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
        checkpoints=checkpoint_args("affinity_net"),
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} {params.device} --gpus {resources.gpu} "
        "{params.checkpoints} --index-dir {params.index_dir} --round {wildcards.round} "
        "--aff-labels {input.aff_labels} {params.classifier} --out {output} > {log} 2>&1"

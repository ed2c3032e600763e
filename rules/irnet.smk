# IRNet's boundary branch for expand.method irnet (rules/expand.smk runs the random walk):
#   CAM shards -> ir_label shards (CRF-refined confident fg/bg, 255 unsure)
#              -> relation_net.pt of the round (boundary layers on a frozen ResNet).
# With another expand.method nothing here is requested, so nothing here runs.


register_expansion(
    "irnet",
    inputs=lambda t: {"relation_net": f"{round_dir(t)}/relation_net.pt"},
    args="--relation-net {relation_net}",
    gpus=1,
    products=lambda t: shard_files(t, "ir_label") + [f"{round_dir(t)}/relation_net.pt"],
)


rule ir_label:
    input:
        INDEX,
        cam=f"{RESULTS}/round{{round}}/cam/shard{{shard}}.h5",
    output:
        f"{RESULTS}/round{{round}}/ir_label/shard{{shard}}.h5",
    log:
        f"{LOGS}/round{{round}}/ir_label_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/ir_label_shard{{shard}}.tsv"
    conda:
        "../envs/conta.yaml"
    # Two dense CRFs per image, CPU only, spread over one worker process per thread (the
    # output does not depend on how many). It asks for `threads` like the CRF expansion: the
    # shards' jobs run at once, and Snakemake caps each at --cores, so `shards` jobs fill the
    # machine with threads = cores // shards (e.g. --set-threads ir_label=4 on 16 cores, 4 shards).
    threads: GPU_THREADS
    params:
        script=fixed(f"{PY}/ir_label.py"),
        settings=step_settings("ir_label"),
        expect=step_expect("ir_label"),
        index_dir=index_dir_of,
    shell:
        "{params.script} --settings {params.settings:q} --expect {params.expect:q} "
        "--threads {threads} --index-dir {params.index_dir} --round {wildcards.round} "
        "--cam {input.cam} --shard {wildcards.shard} --out {output} > {log} 2>&1"


rule train_relation:
    input:
        INDEX,
        unpack(relation_inputs),
    output:
        f"{RESULTS}/round{{round}}/relation_net.pt",
    log:
        f"{LOGS}/round{{round}}/train_relation.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_relation.tsv"
    conda:
        "../envs/conta.yaml"
    threads: GPU_THREADS
    resources:
        gpu=1,
    params:
        script=fixed(f"{PY}/train_relation.py"),
        settings=step_settings("train_relation"),
        runtime=step_runtime("train_relation"),
        expect=step_expect("train_relation"),
        classifier=classifier_arg,
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} {params.device} --gpus {resources.gpu} "
        "--index-dir {params.index_dir} --round {wildcards.round} --ir-labels {input.ir_labels} "
        "{params.classifier} --out {output} > {log} 2>&1"

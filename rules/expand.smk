# Step 2: CAM seeds expanded into pseudo-masks (expand.method).
#
#   crf:   the CAM shard alone, refined by a dense CRF.
#   irnet: the CAM shard walked over the round's relation network (rules/irnet.smk:
#          ir_label -> train_relation -> here).
# Either way the output is the same pseudo_mask shard, so the rules downstream do not
# know which method made it.

EXPAND_METHOD = config["expand"]["method"]
IRNET = EXPAND_METHOD == "irnet"
EXPAND_GPUS = 1 if IRNET else 0  # irnet runs the relation network; crf is CPU only


def expand_settings():
    """Only the chosen method's keys: editing the other method's settings reruns nothing."""
    if IRNET:
        part = {"method": "irnet", "irnet": {"walk": config["expand"]["irnet"]["walk"]}}
    else:
        part = {"method": EXPAND_METHOD, EXPAND_METHOD: config["expand"][EXPAND_METHOD]}
    return settings(expand=part, shards=config["shards"])


def expand_inputs(wildcards):
    """crf reads the CAM shard only; irnet also the round's relation network."""
    inputs = {"cam": f"{round_dir(wildcards.round)}/cam/shard{wildcards.shard}.h5"}
    if IRNET:
        inputs["relation_net"] = f"{round_dir(wildcards.round)}/relation_net.pt"
    return inputs


def relation_net_arg(wildcards, input):
    """irnet: the network, and the device and GPU claim like the other GPU rules; crf: nothing."""
    if "relation_net" not in input.keys():
        return ""
    return f"--relation-net {input.relation_net} {DEVICE_ARGS} --gpus {EXPAND_GPUS}"


rule expand:
    input:
        INDEX,
        unpack(expand_inputs),
    output:
        f"{RESULTS}/round{{round}}/pseudo_mask/shard{{shard}}.h5",
    params:
        settings=expand_settings(),
        relation_net=relation_net_arg,
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/expand_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/expand_shard{{shard}}.tsv"
    # irnet runs the relation network (GPU when there is one); crf spreads its images over
    # one worker process per thread.
    threads: GPU_THREADS
    resources:
        gpu=EXPAND_GPUS,
    shell:
        "{PY}/expand.py --settings {params.settings:q} --threads {threads} --index-dir {INDEX_DIR} "
        "--round {wildcards.round} --cam {input.cam} {params.relation_net} --shard {wildcards.shard} "
        "--out {output} > {log} 2>&1"

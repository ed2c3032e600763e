# Step 2: CAM seeds expanded into pseudo-masks (expand.method).
#
#   crf:         the CAM shard alone, refined by a dense CRF.
#   irnet:       the CAM shard walked over the round's relation network (rules/irnet.smk:
#                ir_label -> train_relation -> here).
#   affinitynet: the CAM shard walked over the round's AffinityNet (rules/affinitynet.smk:
#                aff_label -> train_affinity -> here).
# Whatever the method, the output is the same pseudo_mask shard, so the rules downstream do
# not know which method made it; only the chosen method's keys reach the step. What this
# rule reads besides the CAM shard comes from the method's rules file (register_expansion,
# rules/common.smk).


rule expand:
    input:
        INDEX,
        unpack(expand_inputs),
    output:
        f"{RESULTS}/round{{round}}/pseudo_mask/shard{{shard}}.h5",
    log:
        f"{LOGS}/round{{round}}/expand_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/expand_shard{{shard}}.tsv"
    conda:
        "../envs/conta.yaml"
    # irnet/affinitynet run their network (GPU when there is one); crf spreads its images
    # over one worker process per thread.
    threads: GPU_THREADS
    resources:
        gpu=expansion_gpus,
    params:
        script=fixed(f"{PY}/expand.py"),
        settings=step_settings("expand"),
        runtime=step_runtime("expand"),
        expect=step_expect("expand"),
        expansion=expansion_args,
        index_dir=index_dir_of,
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} --index-dir {params.index_dir} "
        "--round {wildcards.round} --cam {input.cam} {params.expansion} "
        "--shard {wildcards.shard} --out {output} > {log} 2>&1"

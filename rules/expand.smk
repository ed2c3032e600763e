# Step 2: CAM seeds expanded into pseudo-masks (expand.method).


rule expand:
    input:
        INDEX,
        cam=f"{RESULTS}/round{{round}}/cam/shard{{shard}}.h5",
    output:
        f"{RESULTS}/round{{round}}/pseudo_mask/shard{{shard}}.h5",
    params:
        settings=settings("expand"),
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/expand_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/expand_shard{{shard}}.tsv"
    threads: 1
    shell:
        "{PY}/expand.py --settings {params.settings:q} --threads {threads} --index-dir {INDEX_DIR} "
        "--round {wildcards.round} --cam {input.cam} --shard {wildcards.shard} --out {output} > {log} 2>&1"

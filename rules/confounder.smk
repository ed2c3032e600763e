# Step 4 (E-step): the confounder set C_{t+1} and X_m from round t's masks.


rule confounder:
    input:
        INDEX,
        masks=confounder_masks,
    output:
        f"{RESULTS}/round{{round}}/confounder.h5",
    params:
        script=fixed(f"{PY}/confounder.py"),
        settings=step_settings("confounder"),
        expect=step_expect("confounder"),
        index_dir=INDEX_DIR,
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/confounder.log",
    benchmark:
        f"{BENCH}/round{{round}}/confounder.tsv"
    threads: 1
    shell:
        "{params.script} --settings {params.settings:q} --expect {params.expect:q} "
        "--threads {threads} --index-dir {params.index_dir} --round {wildcards.round} "
        "--masks {input.masks} --out {output} > {log} 2>&1"

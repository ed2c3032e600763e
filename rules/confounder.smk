# Step 4 (E-step): the confounder set C_{t+1} and X_m from round t's masks.


rule confounder:
    input:
        INDEX,
        masks=confounder_masks,
    output:
        f"{RESULTS}/round{{round}}/confounder.h5",
    log:
        f"{LOGS}/round{{round}}/confounder.log",
    benchmark:
        f"{BENCH}/round{{round}}/confounder.tsv"
    conda:
        "../envs/conta.yaml"
    threads: 1
    params:
        script=fixed(f"{PY}/confounder.py"),
        settings=step_settings("confounder"),
        expect=step_expect("confounder"),
        index_dir=index_dir_of,
    shell:
        "{params.script} --settings {params.settings:q} --expect {params.expect:q} "
        "--threads {threads} --index-dir {params.index_dir} --round {wildcards.round} "
        "--masks {input.masks} --out {output} > {log} 2>&1"

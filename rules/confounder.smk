# Step 4 (E-step): the confounder set C_{t+1} and X_m from round t's masks.


def confounder_masks(wildcards):
    if config["confounder"]["source"] == "pseudo_mask":
        return shard_files(wildcards.round, "pseudo_mask")
    return shard_files(wildcards.round, f"seg_pred/{TRAIN_SPLIT}")


rule confounder:
    input:
        INDEX,
        masks=confounder_masks,
    output:
        f"{RESULTS}/round{{round}}/confounder.h5",
    params:
        settings=settings("conta", "confounder"),
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/round{{round}}/confounder.log",
    benchmark:
        f"{BENCH}/round{{round}}/confounder.tsv"
    threads: 1
    shell:
        "{PY}/confounder.py --settings {params.settings:q} --threads {threads} --index-dir {INDEX_DIR} "
        "--round {wildcards.round} --masks {input.masks} --out {output} > {log} 2>&1"

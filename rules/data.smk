# The dataset: generated (synthetic) or read in place (voc_layout), then indexed and validated.


rule generate_synthetic:
    output:
        directory(f"{RESULTS}/dataset/synthetic"),
    params:
        settings=json.dumps(config["dataset"].get("synthetic", {}), sort_keys=True),
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/generate_synthetic.log",
    benchmark:
        f"{BENCH}/generate_synthetic.tsv"
    threads: 1
    shell:
        "{PY}/generate_synthetic.py --settings {params.settings:q} --out {output} > {log} 2>&1"


def dataset_root(wildcards):
    if config["dataset"]["kind"] == "synthetic":
        return {"root": f"{RESULTS}/dataset/synthetic"}
    return {}


rule dataset_index:
    input:
        unpack(dataset_root),
    output:
        index=f"{RESULTS}/dataset/index.csv",
        classes=f"{RESULTS}/dataset/classes.json",
        report=f"{RESULTS}/dataset/report.md",
    params:
        settings=json.dumps(config["dataset"], sort_keys=True),
        root=lambda wildcards, input: f"--root {input.root}" if "root" in input.keys() else "",
    conda:
        "../envs/conta.yaml"
    log:
        f"{LOGS}/dataset_index.log",
    benchmark:
        f"{BENCH}/dataset_index.tsv"
    threads: 1
    shell:
        "{PY}/dataset_index.py --settings {params.settings:q} {params.root} "
        "--out-dir {INDEX_DIR} > {log} 2>&1"

# Scores per round and the run's summary (the paper's Table 1 layout).


rule evaluate:
    input:
        INDEX,
        cams=lambda w: shard_files(w.round, "cam"),
        pseudo_masks=lambda w: shard_files(w.round, "pseudo_mask"),
        seg_preds=lambda w: shard_files(w.round, f"seg_pred/{EVAL_SPLIT}"),
    output:
        summary=f"{RESULTS}/round{{round}}/metrics/summary.csv",
        per_class=f"{RESULTS}/round{{round}}/metrics/per_class.csv",
    log:
        f"{LOGS}/round{{round}}/evaluate.log",
    benchmark:
        f"{BENCH}/round{{round}}/evaluate.tsv"
    conda:
        "../envs/conta.yaml"
    threads: 1
    params:
        script=fixed(f"{PY}/evaluate.py"),
        settings=step_settings("evaluate"),
        expect=step_expect("evaluate"),
        index_dir=index_dir_of,
    shell:
        "{params.script} --settings {params.settings:q} --expect {params.expect:q} "
        "--threads {threads} --index-dir {params.index_dir} --round {wildcards.round} "
        "--cams {input.cams} --pseudo-masks {input.pseudo_masks} --seg-preds {input.seg_preds} "
        "--out-summary {output.summary} --out-per-class {output.per_class} > {log} 2>&1"


rule summary:
    input:
        summaries=expand(f"{RESULTS}/round{{round}}/metrics/summary.csv", round=ROUNDS),
        per_class=expand(
            f"{RESULTS}/round{{round}}/metrics/per_class.csv", round=ROUNDS
        ),
        m_usage=expand(f"{RESULTS}/round{{round}}/metrics/m_usage.csv", round=ROUNDS),
        confounding=expand(
            f"{RESULTS}/round{{round}}/metrics/confounding.csv", round=ROUNDS
        ),
    output:
        csv=f"{RESULTS}/summary.csv",
        md=f"{RESULTS}/summary.md",
        html=f"{RESULTS}/summary.html",
        per_class=f"{RESULTS}/per_class.csv",
        plot=f"{RESULTS}/miou_over_rounds.png",
        m_usage=f"{RESULTS}/m_usage.csv",
        confounding=f"{RESULTS}/confounding.csv",
    log:
        f"{LOGS}/summary.log",
    conda:
        "../envs/conta.yaml"
    threads: 1
    params:
        script=fixed(f"{PY}/summary.py"),
        settings=json.dumps(
            {
                "run": config["run"],
                "dataset": config["dataset"]["kind"],
                "conta_mode": config["conta"]["mode"],
            }
        ),
    shell:
        "{params.script} --settings {params.settings:q} --summaries {input.summaries} "
        "--per-class {input.per_class} --m-usage {input.m_usage} --confounding {input.confounding} "
        "--out-csv {output.csv} --out-md {output.md} --out-html {output.html} --out-per-class {output.per_class} "
        "--out-plot {output.plot} --out-m-usage {output.m_usage} --out-confounding {output.confounding} "
        "> {log} 2>&1"

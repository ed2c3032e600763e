# Diagnostics of every round (issue 11): does M_t act (own X_m vs a permutation vs M = 0;
# CONTA rounds only), and where each class's CAM and pseudo-mask mass falls (every round).


rule diagnose:
    input:
        INDEX,
        unpack(previous_confounder),
        classifier=f"{RESULTS}/round{{round}}/classifier.pt",
        cams=lambda w: shard_files(w.round, "cam"),
        pseudo_masks=lambda w: shard_files(w.round, "pseudo_mask"),
    output:
        m_usage=f"{RESULTS}/round{{round}}/metrics/m_usage.csv",
        confounding=f"{RESULTS}/round{{round}}/metrics/confounding.csv",
    log:
        f"{LOGS}/round{{round}}/diagnose.log",
    benchmark:
        f"{BENCH}/round{{round}}/diagnose.tsv"
    conda:
        "../envs/conta.yaml"
    threads: GPU_THREADS
    resources:
        # Only the M-usage part runs the classifier; round 0 / mode off is a numpy job.
        gpu=lambda wildcards: 1 if uses_context(wildcards.round) else 0,
    params:
        script=fixed(f"{PY}/diagnose.py"),
        settings=step_settings("diagnose"),
        expect=step_expect("diagnose"),
        confounder=confounder_arg,
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
    shell:
        "{params.script} --settings {params.settings:q} --expect {params.expect:q} "
        "--threads {threads} {params.device} --gpus {resources.gpu} "
        "--index-dir {params.index_dir} --round {wildcards.round} "
        "--classifier {input.classifier} {params.confounder} --cams {input.cams} "
        "--pseudo-masks {input.pseudo_masks} --out-m-usage {output.m_usage} "
        "--out-confounding {output.confounding} > {log} 2>&1"

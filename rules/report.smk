# The HTML report:  snakemake --report results/<run>/report.html  (captions in report/).
#
# Mask overlays are made here, one sheet per round. The tables and plots that other rules
# make are registered for the report by report_manifest's report()-flagged inputs (the
# report picks up flagged inputs as well as outputs), so what the report shows, with its
# captions and categories, is listed in this one file and the rules that make the files
# stay as they are.


report: "../report/workflow.rst"


REPORT_MANIFEST = f"{RESULTS}/report_manifest.txt"
_REPORT = config["report"]
# What the overlay sheets depend on: the sample and tile size, and the CAM seeds' threshold.
OVERLAY_SETTINGS = json.dumps(
    {
        "train_split": TRAIN_SPLIT,
        "eval_split": EVAL_SPLIT,
        "report": _REPORT,
        **STEPS.settings("overlays"),  # the method and the cam keys it scores CAMs with
    },
    sort_keys=True,
)
# report.overlay_count 0 and no overlay_ids: no overlays.
_OVERLAYS = bool(_REPORT["overlay_count"] or _REPORT["overlay_ids"])
OVERLAY_FILES = (
    [f"{RESULTS}/round{t}/overlays.png" for t in ROUNDS] if _OVERLAYS else []
)
# (file, caption, category, subcategory); the summary rule makes the run-level files,
# evaluate the per-round tables, diagnose (via summary) the diagnostics.
REPORT_ENTRIES = (
    [
        (
            f"{RESULTS}/summary.csv",
            "summary.rst",
            "1. Summary (Table 1)",
            "mIoU per round",
        ),
        (
            f"{RESULTS}/miou_over_rounds.png",
            "miou_plot.rst",
            "1. Summary (Table 1)",
            "mIoU per round",
        ),
        (
            f"{RESULTS}/summary.html",
            "summary_html.rst",
            "1. Summary (Table 1)",
            "mIoU per round",
        ),
        (
            f"{RESULTS}/summary.md",
            "summary_md.rst",
            "1. Summary (Table 1)",
            "mIoU per round",
        ),
        (f"{RESULTS}/per_class.csv", "per_class.rst", "2. Per-class IoU", "all rounds"),
    ]
    + [
        # The diagnostics, where the summary rule collects them.
        (f"{RESULTS}/{name}.csv", f"{name}.rst", "4. Diagnostics", "all rounds")
        for name in ("m_usage", "confounding")
        if name in rules.summary.output.keys()
    ]
    + [
        (
            f"{RESULTS}/round{t}/metrics/per_class.csv",
            "per_class_round.rst",
            "2. Per-class IoU",
            f"round {t}",
        )
        for t in ROUNDS
    ]
)


localrules:
    report_manifest,


rule overlays:
    input:
        INDEX,
        cams=lambda w: shard_files(w.round, "cam"),
        pseudo_masks=lambda w: shard_files(w.round, "pseudo_mask"),
        seg_preds=lambda w: shard_files(w.round, f"seg_pred/{EVAL_SPLIT}"),
        # Training-split predictions only where the workflow makes them anyway.
        train_preds=lambda w: (
            shard_files(w.round, f"seg_pred/{TRAIN_SPLIT}")
            if STEPS.predicts_train(int(w.round))
            else []
        ),
    output:
        report(
            f"{RESULTS}/round{{round}}/overlays.png",
            caption="../report/overlays.rst",
            category="3. Mask overlays",
            subcategory="round {round}",
        ),
    log:
        f"{LOGS}/round{{round}}/overlays.log",
    conda:
        "../envs/conta.yaml"
    threads: 1
    params:
        script=fixed(f"{PY}/overlays.py"),
        settings=OVERLAY_SETTINGS,
        expect=step_expect("overlays"),
        index_dir=index_dir_of,
    shell:
        "{params.script} --settings {params.settings:q} --expect {params.expect:q} "
        "--threads {threads} --index-dir {params.index_dir} --round {wildcards.round} "
        "--cams {input.cams} --pseudo-masks {input.pseudo_masks} --seg-preds {input.seg_preds} "
        "--train-preds {input.train_preds} --out {output} > {log} 2>&1"


rule report_manifest:
    input:
        [
            report(
                path,
                caption=f"../report/{caption}",
                category=category,
                subcategory=sub,
            )
            for path, caption, category, sub in REPORT_ENTRIES
        ],
        OVERLAY_FILES,
    output:
        REPORT_MANIFEST,
    log:
        f"{LOGS}/report_manifest.log",
    conda:
        "../envs/conta.yaml"
    shell:
        "printf '%s\\n' {input:q} > {output} 2> {log}"

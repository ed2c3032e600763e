# SEC's and DSRG's localisation cues (expand.method sec | dsrg), one job per CAM shard:
#   CAM shard -> seeds shard (uint8 seed maps: 0 background, 1..C-1 a class, 255 no cue).
# Foreground: the top 20 % of each labelled class's CAM; background: SEC's 10 % least
# salient pixels of the round classifier's gradient saliency, or DSRG's saliency < 0.06
# (dataset.saliency_root, else OpenCV's stand-in). With other methods nothing here runs.


rule seeds:
    input:
        INDEX,
        unpack(seeds_inputs),
    output:
        f"{RESULTS}/round{{round}}/seeds/shard{{shard}}.h5",
    log:
        f"{LOGS}/round{{round}}/seeds_shard{{shard}}.log",
    benchmark:
        f"{BENCH}/round{{round}}/seeds_shard{{shard}}.tsv"
    conda:
        "../envs/conta.yaml"
    # SEC runs the classifier backwards (GPU when there is one); DSRG's cue is numpy/OpenCV.
    threads: GPU_THREADS
    resources:
        gpu=seeds_gpus,
    params:
        script=fixed(f"{PY}/seeds.py"),
        settings=step_settings("seeds"),
        expect=step_expect("seeds"),
        classifier=seeds_classifier_arg,
        index_dir=index_dir_of,
    shell:
        "{params.script} --settings {params.settings:q} --expect {params.expect:q} "
        "--threads {threads} --index-dir {params.index_dir} --round {wildcards.round} "
        "--cam {input.cam} {params.classifier} --shard {wildcards.shard} --out {output} > {log} 2>&1"

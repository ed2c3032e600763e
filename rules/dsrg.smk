# DSRG's network for expand.method dsrg (Huang et al., CVPR 2018; paper Appendix 3.3):
#   seeds shards (rules/seeds.smk) -> dsrg_net.pt of the round: DeepLab (ResNet, ASPP) trained on
#   seeds grown by seeded region growing during training, with the constrain loss; rules/expand.smk
#   then writes its CRF-refined predictions on the training split as the pseudo-masks.
# With another expand.method nothing here is requested, so nothing here runs.


register_expansion(
    "dsrg",
    inputs=lambda t: {"seed_net": f"{round_dir(t)}/dsrg_net.pt"},
    args="--seed-net {seed_net}",
    gpus=1,
    products=lambda t: shard_files(t, "seeds") + [f"{round_dir(t)}/dsrg_net.pt"],
)


rule train_dsrg:
    input:
        INDEX,
        unpack(seed_net_inputs("train_dsrg")),
    output:
        f"{RESULTS}/round{{round}}/dsrg_net.pt",
    log:
        f"{LOGS}/round{{round}}/train_dsrg.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_dsrg.tsv"
    conda:
        "../envs/conta.yaml"
    # the losses' dense CRFs run over one worker process per thread
    threads: GPU_THREADS
    resources:
        gpu=TRAIN_GPUS,
    params:
        script=fixed(f"{PY}/train_seed_net.py"),
        settings=step_settings("train_dsrg"),
        runtime=step_runtime("train_dsrg"),
        expect=step_expect("train_dsrg"),
        classifier=classifier_arg,
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
        checkpoints=checkpoint_args("dsrg_net"),
        tensorboard=tensorboard_arg("train_dsrg"),
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} {params.device} --gpus {resources.gpu} "
        "{params.checkpoints} {params.tensorboard} --index-dir {params.index_dir} "
        "--round {wildcards.round} --seeds {input.seeds} {params.classifier} --out {output} > {log} 2>&1"

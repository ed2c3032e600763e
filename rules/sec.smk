# SEC's network for expand.method sec (Kolesnikov and Lampert, ECCV 2016; paper Appendix 3.4):
#   seeds shards (rules/seeds.smk) -> sec_net.pt of the round: VGG-16 LargeFOV trained with the
#   seeding, expansion (GWRP) and constrain-to-boundary losses; rules/expand.smk then writes its
#   CRF-refined predictions on the training split as the pseudo-masks.
# With another expand.method nothing here is requested, so nothing here runs.


register_expansion(
    "sec",
    inputs=lambda t: {"seed_net": f"{round_dir(t)}/sec_net.pt"},
    args="--seed-net {seed_net}",
    gpus=1,
    products=lambda t: shard_files(t, "seeds") + [f"{round_dir(t)}/sec_net.pt"],
)


rule train_sec:
    input:
        INDEX,
        unpack(seed_net_inputs("train_sec")),
    output:
        f"{RESULTS}/round{{round}}/sec_net.pt",
    log:
        f"{LOGS}/round{{round}}/train_sec.log",
    benchmark:
        f"{BENCH}/round{{round}}/train_sec.tsv"
    conda:
        "../envs/conta.yaml"
    # the losses' dense CRFs run over one worker process per thread
    threads: GPU_THREADS
    resources:
        gpu=TRAIN_GPUS,
    params:
        script=fixed(f"{PY}/train_seed_net.py"),
        settings=step_settings("train_sec"),
        runtime=step_runtime("train_sec"),
        expect=step_expect("train_sec"),
        classifier=classifier_arg,
        index_dir=index_dir_of,
        device=fixed(DEVICE_ARGS),
        checkpoints=checkpoint_args("sec_net"),
        tensorboard=tensorboard_arg("train_sec"),
    shell:
        "{params.script} --settings {params.settings:q} --runtime {params.runtime:q} "
        "--expect {params.expect:q} --threads {threads} {params.device} --gpus {resources.gpu} "
        "{params.checkpoints} {params.tensorboard} --index-dir {params.index_dir} "
        "--round {wildcards.round} --seeds {input.seeds} {params.classifier} --out {output} > {log} 2>&1"

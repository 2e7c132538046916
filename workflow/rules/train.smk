rule train:
    """Train every (lr, seed) run of one variant in one compiled, vmapped call, then the runs refining
    each seed's max stable LR in one more."""
    input:
        data=lambda wc: data_path(f"processed/{wc.dataset}/{variant_input(wc)}.npz"),
    output:
        model=results_path("{dataset}/{variant}/model.json"),
        sweep=results_path("{dataset}/{variant}/sweep.npz"),
        checkpoints=results_path("{dataset}/{variant}/sweep_checkpoints.npz"),
        runs=results_path("{dataset}/{variant}/runs.csv"),
        training=results_path("{dataset}/{variant}/training.csv"),
    params:
        # the network's width, activation and eps (not the lists of variants: adding a depth trains only
        # the new variants) and the whole sweep, its evaluation set (sweep.eval_examples) included
        variants=subset(config["variants"], TRAIN_VARIANT_KEYS),
        sweep=settings(config["sweep"]),
        xla_level=xla_level(train_scale),
    threads: TRAIN_THREADS
    resources:
        mem_mb=mem_mb(647, train_scale),
        runtime=runtime_minutes(88, train_scale),
        slurm_partition=SLURM_PARTITION,
    message:
        "train {wildcards.dataset}/{wildcards.variant}"
    log:
        log_path("train/{dataset}/{variant}.log"),
    benchmark:
        benchmark_path("train/{dataset}/{variant}.tsv")
    conda:
        CONDA_ENV
    script:
        "../../scripts/train.py"


rule select:
    """Per dataset: max stable, best and common learning rates of every variant, and each variant's outcome
    and speed (per-step mini-batch losses, sweep.npz) at its best LR, per seed too."""
    input:
        runs=expand(results_path("{{dataset}}/{variant}/runs.csv"), variant=VARIANTS),
        sweeps=expand(results_path("{{dataset}}/{variant}/sweep.npz"), variant=VARIANTS),
    output:
        variants=results_path("{dataset}/variants.csv"),
        variant_seeds=results_path("{dataset}/variant_seeds.csv"),
    threads: 1
    resources:
        mem_mb=mem_mb(306),
        runtime=runtime_minutes(14),
        slurm_partition=SLURM_PARTITION,
    message:
        "select {wildcards.dataset}"
    log:
        log_path("select/{dataset}.log"),
    benchmark:
        benchmark_path("select/{dataset}.tsv")
    conda:
        CONDA_ENV
    script:
        "../../scripts/select.py"

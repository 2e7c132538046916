rule train:
    """Train every (lr, seed) run of one variant in one compiled, vmapped call."""
    input:
        data=lambda wc: f"data/processed/{wc.dataset}/{variant_input(wc)}.npz",
    output:
        model="results/{dataset}/{variant}/model.json",
        sweep="results/{dataset}/{variant}/sweep.npz",
        checkpoints="results/{dataset}/{variant}/sweep_checkpoints.npz",
        runs="results/{dataset}/{variant}/runs.csv",
        training="results/{dataset}/{variant}/training.csv",
    params:
        variants=config["variants"],
        sweep=config["sweep"],
        analysis=config["analysis"],
        xla_level=xla_level(train_scale),
    threads: TRAIN_THREADS
    resources:
        mem_mb=mem_mb(647, train_scale),
        runtime=runtime_minutes(88, train_scale),
        slurm_partition=SLURM_PARTITION,
    log:
        "logs/train/{dataset}/{variant}.log",
    benchmark:
        "benchmarks/train/{dataset}/{variant}.tsv"
    conda:
        CONDA_ENV
    script:
        "../../scripts/train.py"


rule select:
    """Per dataset: max stable, best and common learning rates of every variant."""
    input:
        runs=expand("results/{{dataset}}/{variant}/runs.csv", variant=VARIANTS),
    output:
        variants="results/{dataset}/variants.csv",
    threads: 1
    resources:
        mem_mb=mem_mb(306),
        runtime=runtime_minutes(14),
        slurm_partition=SLURM_PARTITION,
    log:
        "logs/select/{dataset}.log",
    benchmark:
        "benchmarks/select/{dataset}.tsv"
    conda:
        CONDA_ENV
    script:
        "../../scripts/select.py"

rule analyze:
    """Checkpoints of the common-LR and best-LR runs of every seed and prepared input treatment (raw,
    standardize) of one network (norm and depth), the best run's matched-loss checkpoint among them:
    layer-input scales, gradient norms, curvature spectra, contour slices, smoothness along the gradient. The
    prepared input treatments train the same shapes, so one process analyzes them all: the second one reuses
    the first one's compiled programs instead of re-tracing and re-loading them, and no second process
    starts."""
    input:
        data=lambda wc: expand(
            data_path("processed/{dataset}/{input}.npz"), dataset=wc.dataset, input=PREPARED_INPUTS
        ),
        model=per_variant(results_path("{dataset}/{variant}/model.json"), PREPARED_INPUTS),
        sweep=per_variant(results_path("{dataset}/{variant}/sweep.npz"), PREPARED_INPUTS),
        checkpoints=per_variant(results_path("{dataset}/{variant}/sweep_checkpoints.npz"), PREPARED_INPUTS),
        variants=results_path("{dataset}/variants.csv"),
    output:
        checkpoint_dirs=[
            directory(p)
            for p in analyze_outputs(results_path("{dataset}/{variant}/checkpoints"), PREPARED_INPUTS)
        ],
        **{
            kind: analyze_outputs(results_path(f"{{dataset}}/{{variant}}/analysis/{name}"), PREPARED_INPUTS)
            for kind, name in ANALYSIS_FILES.items()
        },
    params:
        analysis=settings(config["analysis"]),  # every analysis setting
        # training's settings: the checkpoints' steps, and the replay of each best run to its matched checkpoint
        sweep=settings(config["sweep"]),
        variants=lambda wc: arch_variants(wc.arch, PREPARED_INPUTS),
        xla_level=xla_level(analyze_scale),
    threads: ANALYZE_THREADS
    resources:
        mem_mb=mem_mb(1039, analyze_scale),
        runtime=runtime_minutes(159, analyze_job_scale),
        slurm_partition=SLURM_PARTITION,
    message:
        "analyze {wildcards.dataset}/{wildcards.arch}"
    log:
        log_path("analyze/{dataset}/{arch}.log"),
    benchmark:
        benchmark_path("analyze/{dataset}/{arch}.tsv")
    conda:
        CONDA_ENV
    script:
        "../../scripts/analyze.py"


use rule analyze as analyze_input_bn with:
    """The same measurements for the network's own batch norm on the raw inputs (variant ``batchnorm-<arch>``):
    another model function, so another process and its own compiled programs."""
    input:
        data=lambda wc: [data_path(f"processed/{wc.dataset}/raw.npz")],
        model=per_variant(results_path("{dataset}/{variant}/model.json"), ["batchnorm"]),
        sweep=per_variant(results_path("{dataset}/{variant}/sweep.npz"), ["batchnorm"]),
        checkpoints=per_variant(results_path("{dataset}/{variant}/sweep_checkpoints.npz"), ["batchnorm"]),
        variants=results_path("{dataset}/variants.csv"),
    output:
        checkpoint_dirs=[
            directory(p) for p in analyze_outputs(results_path("{dataset}/{variant}/checkpoints"), ["batchnorm"])
        ],
        **{
            kind: analyze_outputs(results_path(f"{{dataset}}/{{variant}}/analysis/{name}"), ["batchnorm"])
            for kind, name in ANALYSIS_FILES.items()
        },
    params:
        analysis=settings(config["analysis"]),
        sweep=settings(config["sweep"]),
        variants=lambda wc: arch_variants(wc.arch, ["batchnorm"]),
        xla_level=xla_level(analyze_scale),
    resources:
        mem_mb=mem_mb(1039, analyze_scale),
        runtime=runtime_minutes(159, analyze_scale),
        slurm_partition=SLURM_PARTITION,
    message:
        "analyze {wildcards.dataset}/batchnorm-{wildcards.arch}"
    log:
        log_path("analyze/{dataset}/batchnorm-{arch}.log"),
    benchmark:
        benchmark_path("analyze/{dataset}/batchnorm-{arch}.tsv")

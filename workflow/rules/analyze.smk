rule analyze:
    """Checkpoints of the common-LR and best-LR runs of every seed and input treatment of one network (norm and
    depth), the best run's matched-loss checkpoint among them: layer-input scales, gradient norms, curvature
    spectra, contour slices. The input treatments train the
    same shapes, so one process analyzes them all: the second one reuses the first one's compiled programs
    instead of re-tracing and re-loading them, and no second process starts."""
    input:
        data=lambda wc: expand(data_path("processed/{dataset}/{input}.npz"), dataset=wc.dataset, input=INPUTS),
        model=per_variant(results_path("{dataset}/{variant}/model.json")),
        sweep=per_variant(results_path("{dataset}/{variant}/sweep.npz")),
        checkpoints=per_variant(results_path("{dataset}/{variant}/sweep_checkpoints.npz")),
        variants=results_path("{dataset}/variants.csv"),
    output:
        checkpoint_dirs=[directory(p) for p in analyze_outputs(results_path("{dataset}/{variant}/checkpoints"))],
        checkpoints=analyze_outputs(results_path("{dataset}/{variant}/analysis/checkpoints.csv")),
        layer_inputs=analyze_outputs(results_path("{dataset}/{variant}/analysis/layer_inputs.csv")),
        layer_units=analyze_outputs(results_path("{dataset}/{variant}/analysis/layer_units.csv")),
        gradients=analyze_outputs(results_path("{dataset}/{variant}/analysis/gradients.csv")),
        curvature=analyze_outputs(results_path("{dataset}/{variant}/analysis/curvature.csv")),
        spectra=analyze_outputs(results_path("{dataset}/{variant}/analysis/spectra.npz")),
        contours=analyze_outputs(results_path("{dataset}/{variant}/analysis/contours.csv")),
        contour_grids=analyze_outputs(results_path("{dataset}/{variant}/analysis/contours.npz")),
    params:
        analysis=settings(config["analysis"]),  # every analysis setting
        # training's settings: the checkpoints' steps, and the replay of each best run to its matched checkpoint
        sweep=settings(config["sweep"]),
        variants=lambda wc: arch_variants(wc.arch),
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

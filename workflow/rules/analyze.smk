rule analyze:
    """Checkpoints of the common-LR and best-LR runs; layer-input scales, gradient norms, curvature spectra, contour slices."""
    input:
        data=lambda wc: f"data/processed/{wc.dataset}/{variant_input(wc)}.npz",
        model="results/{dataset}/{variant}/model.json",
        sweep="results/{dataset}/{variant}/sweep.npz",
        checkpoints="results/{dataset}/{variant}/sweep_checkpoints.npz",
        variants="results/{dataset}/variants.csv",
    output:
        checkpoints=directory("results/{dataset}/{variant}/checkpoints"),
        layer_inputs="results/{dataset}/{variant}/analysis/layer_inputs.csv",
        layer_units="results/{dataset}/{variant}/analysis/layer_units.csv",
        gradients="results/{dataset}/{variant}/analysis/gradients.csv",
        curvature="results/{dataset}/{variant}/analysis/curvature.csv",
        spectra="results/{dataset}/{variant}/analysis/spectra.npz",
        contours="results/{dataset}/{variant}/analysis/contours.csv",
        contour_grids="results/{dataset}/{variant}/analysis/contours.npz",
    params:
        analysis=config["analysis"],
        xla_level=xla_level(analyze_scale),
    threads: ANALYZE_THREADS
    resources:
        mem_mb=mem_mb(1039, analyze_scale),
        runtime=runtime_minutes(159, analyze_scale),
        slurm_partition=SLURM_PARTITION,
    log:
        "logs/analyze/{dataset}/{variant}.log",
    benchmark:
        "benchmarks/analyze/{dataset}/{variant}.tsv"
    conda:
        CONDA_ENV
    script:
        "../../scripts/analyze.py"

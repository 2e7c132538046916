rule tables:
    """Concatenate the per-variant tables into results/tables/<kind>.csv."""
    input:
        unpack(table_inputs),
    output:
        **{t: f"results/tables/{t}.csv" for t in TABLES},
    threads: 1
    resources:
        mem_mb=mem_mb(280, study_scale),
        runtime=runtime_minutes(10, study_scale),
        slurm_partition=SLURM_PARTITION,
    log:
        "logs/tables.log",
    benchmark:
        "benchmarks/tables.tsv"
    conda:
        CONDA_ENV
    script:
        "../../scripts/tables.py"


rule report:
    """Render the self-contained HTML report from the tables."""
    input:
        **{t: f"results/tables/{t}.csv" for t in TABLES},
        provenance=expand("data/raw/{dataset}.json", dataset=DATASETS),
        spectra=expand("results/{dataset}/{variant}/analysis/spectra.npz", dataset=DATASETS, variant=VARIANTS),
        contour_grids=expand(
            "results/{dataset}/{variant}/analysis/contours.npz", dataset=DATASETS, variant=VARIANTS
        ),
    output:
        report(
            "reports/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
    params:
        config=config,
    threads: 4  # figures drawn in parallel (Snakemake lowers it to --cores)
    resources:
        mem_mb=mem_mb(418, study_scale),
        runtime=runtime_minutes(16, study_scale),
        slurm_partition=SLURM_PARTITION,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        CONDA_ENV
    script:
        "../../scripts/report.py"

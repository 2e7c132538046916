rule tables:
    """Concatenate the per-variant tables into results/<study>/tables/<kind>.csv."""
    input:
        unpack(table_inputs),
    output:
        **{t: results_path(f"tables/{t}.csv") for t in TABLES},
    threads: 1
    resources:
        mem_mb=mem_mb(280, study_scale),
        runtime=runtime_minutes(10, study_scale),
        slurm_partition=SLURM_PARTITION,
    message:
        "tables"
    log:
        log_path("tables.log"),
    benchmark:
        benchmark_path("tables.tsv")
    conda:
        CONDA_ENV
    script:
        "../../scripts/tables.py"


rule report:
    """Render the self-contained HTML report from the tables."""
    input:
        **{t: results_path(f"tables/{t}.csv") for t in TABLES},
        provenance=expand(data_path("raw/{dataset}.json"), dataset=DATASETS),
        spectra=expand(
            results_path("{dataset}/{variant}/analysis/spectra.npz"), dataset=DATASETS, variant=VARIANTS
        ),
        contour_grids=expand(
            results_path("{dataset}/{variant}/analysis/contours.npz"), dataset=DATASETS, variant=VARIANTS
        ),
    output:
        report(
            report_path("report.html"),
            caption="../report/report.rst",
            category="Report",
        ),
    params:
        config=settings(config),  # the report echoes the whole configuration (its Methods section)
        benchmarks=benchmark_path(""),  # the folder of the study's benchmark files: its wall time per rule
    threads: 4  # figures drawn in parallel (Snakemake lowers it to --cores)
    resources:
        mem_mb=mem_mb(418, study_scale),
        runtime=runtime_minutes(16, study_scale),
        slurm_partition=SLURM_PARTITION,
    message:
        "report"
    log:
        log_path("report.log"),
    benchmark:
        benchmark_path("report.tsv")
    conda:
        CONDA_ENV
    script:
        "../../scripts/report.py"

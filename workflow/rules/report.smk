# The study's tables and the report; in Snakemake's own report (`snakemake --report`) each table, the report,
# its bottom line and every figure is an item with its caption (labels and groups: rules/report_items.smk).


rule tables:
    """Concatenate the per-variant tables into results/<study>/tables/<kind>.csv."""
    input:
        unpack(table_inputs),
    output:
        **{
            t: report(
                results_path(f"tables/{t}.csv"),
                caption=f"../report/tables/{t}.rst",
                category="Tables",
                labels={"table": f"{t}.csv", "one row per": TABLE_ROWS[t]},
            )
            for t in TABLES
        },
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
    """Render the self-contained HTML report from the tables; beside it the bottom line as plain text (which
    the terminal prints at the end of the run, workflow/Snakefile) and every figure as a PNG file with its
    caption (figures/captions.json)."""
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
        html=report(
            report_path("report.html"),
            caption="../report/report.rst",
            category="Report",
        ),
        bottom_line=report(
            report_path("bottom_line.txt"),
            caption="../report/bottom_line.rst",
            category="Report",
        ),
        figures=report(
            directory(report_path("figures")),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory=figure_group,
            labels=figure_labels,
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

rule fetch:
    """Read a dataset from its source; write the raw table and its provenance (source, sha256, shape).
    Downloads (url, openml) are cached in data/cache/, shared by every study, and reused by later runs."""
    input:
        source_file,
    output:
        csv=data_path("raw/{dataset}.csv"),
        provenance=data_path("raw/{dataset}.json"),
    params:
        entry=lambda wc: settings(config["datasets"][wc.dataset]),
        cache=DOWNLOAD_CACHE,
    threads: 1
    resources:
        mem_mb=mem_mb(306),
        runtime=runtime_minutes(14),
        slurm_partition=SLURM_PARTITION,
    message:
        "fetch {wildcards.dataset}"
    log:
        log_path("fetch/{dataset}.log"),
    benchmark:
        benchmark_path("fetch/{dataset}.tsv")
    conda:
        CONDA_ENV
    script:
        "../../scripts/fetch.py"


rule preprocess:
    """Check the table (the entry's drop applied first); seeded train/test split, refused when its test split
    is below split.min_test_rows; one array file per input treatment (fitted on the training split), its
    values checked against the study's sweep.dtype."""
    input:
        csv=data_path("raw/{dataset}.csv"),
        provenance=data_path("raw/{dataset}.json"),
    output:
        expand(data_path("processed/{{dataset}}/{input}.npz"), input=DATA_INPUTS),
    params:
        entry=lambda wc: subset(config["datasets"][wc.dataset], PREPROCESS_ENTRY_KEYS),
        split=settings(config["split"]),
        inputs=DATA_INPUTS,
        batch_size=config["sweep"]["batch_size"],
        dtype=config["sweep"]["dtype"],
    threads: 1
    resources:
        mem_mb=mem_mb(306),
        runtime=runtime_minutes(14),
        slurm_partition=SLURM_PARTITION,
    message:
        "preprocess {wildcards.dataset}"
    log:
        log_path("preprocess/{dataset}.log"),
    benchmark:
        benchmark_path("preprocess/{dataset}.tsv")
    conda:
        CONDA_ENV
    script:
        "../../scripts/preprocess.py"

rule fetch:
    """Read a dataset from its source; write the raw table and its provenance (source, sha256, shape).
    Downloads (url, openml) are cached in data/cache/ and reused by later runs."""
    input:
        source_file,
    output:
        csv="data/raw/{dataset}.csv",
        provenance="data/raw/{dataset}.json",
    params:
        entry=lambda wc: config["datasets"][wc.dataset],
        cache="data/cache",
    threads: 1
    resources:
        mem_mb=mem_mb(306),
        runtime=runtime_minutes(14),
        slurm_partition=SLURM_PARTITION,
    log:
        "logs/fetch/{dataset}.log",
    benchmark:
        "benchmarks/fetch/{dataset}.tsv"
    conda:
        CONDA_ENV
    script:
        "../../scripts/fetch.py"


rule preprocess:
    """Check the table; seeded train/test split; one array file per input treatment (fitted on the
    training split)."""
    input:
        csv="data/raw/{dataset}.csv",
        provenance="data/raw/{dataset}.json",
    output:
        expand("data/processed/{{dataset}}/{input}.npz", input=INPUTS),
    params:
        entry=lambda wc: config["datasets"][wc.dataset],
        split=config["split"],
        inputs=INPUTS,
        batch_size=config["sweep"]["batch_size"],
    threads: 1
    resources:
        mem_mb=mem_mb(306),
        runtime=runtime_minutes(14),
        slurm_partition=SLURM_PARTITION,
    log:
        "logs/preprocess/{dataset}.log",
    benchmark:
        "benchmarks/preprocess/{dataset}.tsv"
    conda:
        CONDA_ENV
    script:
        "../../scripts/preprocess.py"

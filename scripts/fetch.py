"""Rule fetch: read one dataset from its source, write data/raw/<dataset>.csv and its provenance."""
from normlab import datasets, io, runtime

with runtime.job(snakemake.log[0], snakemake.threads, f"fetch {snakemake.wildcards.dataset}"):  # noqa: F821
    entry = snakemake.params.entry  # noqa: F821
    df = datasets.load_source(entry)
    io.write_csv(snakemake.output.csv, df)  # noqa: F821
    io.write_text(snakemake.output.provenance, datasets.provenance(entry, df, snakemake.output.csv))  # noqa: F821

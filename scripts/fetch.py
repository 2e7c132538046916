"""Rule fetch: read one dataset from its source, write data/raw/<dataset>.csv and its provenance.

Downloads (url, openml) are kept in params.cache (data/cache/) and reused by later runs."""
from normlab import datasets, io, runtime

sm = snakemake  # noqa: F821
name = sm.wildcards.dataset
with runtime.job(sm.log[0], sm.threads, f"fetch {name}"):
    entry = sm.params.entry
    df = datasets.load_source(entry, name=name, cache_dir=sm.params.cache)
    io.write_csv(sm.output.csv, df)
    io.write_text(sm.output.provenance, datasets.provenance(entry, df, sm.output.csv, sm.params.cache))

"""Rule tables: concatenate per-variant tables into results/tables/<kind>.csv."""
from normlab import io, runtime

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, "tables"):
    for kind, path in sm.output.items():
        io.concat_csv(path, sm.input[kind])

"""Rule tables: concatenate per-variant tables into results/tables/<kind>.csv."""
import pandas as pd

from normlab import io, runtime

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, "tables"):
    for kind, path in sm.output.items():
        io.write_csv(path, pd.concat([pd.read_csv(p) for p in sm.input[kind]], ignore_index=True))

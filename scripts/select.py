"""Rule select: per dataset, the max stable / best / common learning rates of every variant."""
import pandas as pd

from normlab import io, runtime, selection

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, f"select {sm.wildcards.dataset}"):
    runs = pd.concat([io.read_csv(p) for p in sm.input.runs], ignore_index=True)
    io.write_csv(sm.output.variants, selection.dataset_summary(runs))

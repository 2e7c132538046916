"""Rule select: per dataset, every variant's learning rates (max stable, best, common) and its outcome and
speed at its best LR (variants.csv), and the same per seed (variant_seeds.csv)."""
import pandas as pd

from normlab import io, runtime, selection

# the arrays of sweep.npz that the speed columns read
CURVE_ARRAYS = ("lr", "seed", "batch_loss", "diverged_step", "batches_per_epoch")

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, f"select {sm.wildcards.dataset}"):
    runs, curves = [], {}
    for runs_path, sweep_path in zip(sm.input.runs, sm.input.sweeps, strict=True):
        table = io.read_csv(runs_path)
        runs.append(table)
        with io.open_npz(sweep_path) as f:
            curves[str(table["variant"].iloc[0])] = {k: f[k] for k in CURVE_ARRAYS}
    variants, seeds = selection.dataset_summary(pd.concat(runs, ignore_index=True), curves)
    io.write_csv(sm.output.variants, variants)
    io.write_csv(sm.output.variant_seeds, seeds)

"""Rule train: all (lr, seed) runs of one variant and its max-stable-LR refinement runs; writes model.json,
the sweep arrays, every seed's checkpoints and the runs/training tables."""
from normlab import io, runtime, train

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, f"train {sm.wildcards.dataset}/{sm.wildcards.variant}", uses_jax=True,
                 optimization_level=sm.params.xla_level):
    data = io.load_npz(sm.input.data)
    out = train.train_variant(sm.wildcards.dataset, sm.wildcards.variant, data, sm.params.variants, sm.params.sweep)
    io.write_text(sm.output.model, out["model"])
    io.write_npz(sm.output.sweep, out["sweep"])
    io.write_npz(sm.output.checkpoints, out["checkpoints"])
    io.write_csv(sm.output.runs, out["runs"])
    io.write_csv(sm.output.training, out["training"])

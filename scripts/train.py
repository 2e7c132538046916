"""Rule train: all (lr, seed) runs of one variant; writes model.json, sweep arrays, runs/training tables."""
import dataclasses

import numpy as np

from normlab import io, runtime, tables, train, variants

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, f"train {sm.wildcards.dataset}/{sm.wildcards.variant}", uses_jax=True,
                 optimization_level=sm.params.xla_level):
    v = variants.Variant.parse(sm.wildcards.variant)
    with np.load(sm.input.data) as f:
        data = {k: f[k] for k in f.files}
    vc, sc = sm.params.variants, sm.params.sweep
    regression = str(data["task"]) == "regression" if "task" in data else len(data["classes"]) == 0
    spec = variants.model_spec(v, data["X_train"].shape[1], 1 if regression else len(data["classes"]), vc["width"],
                               vc["activation"], vc["eps"], loss="mse" if regression else "softmax_cross_entropy")
    fields = {f.name for f in dataclasses.fields(train.TrainConfig)}
    cfg = train.TrainConfig(**{k: sc[k] for k in fields if k in sc})
    lrs = variants.lr_grid(sc["lr_min"], sc["lr_max"], sc["n_lr"])
    print(f"training {sm.wildcards.dataset}/{v.name}: {len(lrs)} LRs x {len(sc['seeds'])} seeds, "
          f"{cfg.steps} steps, sizes {list(spec.sizes)}", file=__import__("sys").stderr)
    result = train.train_sweep(spec, cfg, data, lrs, sc["seeds"], sm.params.analysis["max_examples"],
                               sc["target_loss"])
    ids = {"dataset": sm.wildcards.dataset, "variant": v.name, "input": v.input, "norm": v.norm, "depth": v.depth}
    io.write_text(sm.output.model, spec.to_json())
    io.write_npz(sm.output.sweep, train.sweep_arrays(result))
    runtime.hold_while_exists(sm.params.hold_while_exists)
    io.write_npz(sm.output.checkpoints, train.seed_checkpoint_arrays(result, sc["seeds"][0]))
    io.write_csv(sm.output.runs, tables.runs_table(ids, result))
    io.write_csv(sm.output.training, tables.training_table(ids, result))

"""Rule analyze: the common-LR and best-LR runs' checkpoints and their measurements, for every input
treatment of one network (sm.params.variants, in the order of the rule's per-variant inputs and outputs)."""
import sys
from pathlib import Path

import numpy as np

from normlab import analysis, io, landscape, model, runtime, selection, tables, train

sm = snakemake  # noqa: F821


def analyze_variant(k: int, variant: str, variant_rows: list[dict]) -> None:
    """The k-th variant of the job: read its inputs, measure its checkpoints, write its outputs."""
    spec = model.ModelSpec.from_json(Path(sm.input.model[k]).read_text())
    with np.load(sm.input.data[k]) as f:
        data = {key: f[key] for key in f.files}
    X, y = analysis.analysis_batch(data, sm.params.analysis["max_examples"])
    row = next(r for r in variant_rows if r["variant"] == variant)
    ids = {key: row[key] for key in tables.ID_COLUMNS}
    with np.load(sm.input.sweep[k]) as f:
        sweep = {key: f[key] for key in f.files}
    lrs = np.unique(sweep["lr"])
    first_seed = int(sweep["seed"][0])
    out_dir = Path(sm.output.checkpoints[k])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {kind: [] for kind in ("layer_inputs", "layer_units", "curvature", "contours")}
    arrays = {"spectra": {}, "grids": {}}
    run_rows, measured = {}, {}
    with np.load(sm.input.checkpoints[k]) as ckpts:
        for run in analysis.RUNS:
            i = analysis.lr_index(lrs, selection.run_lr(row, run, lrs))
            run_rows[run] = int(np.flatnonzero((sweep["lr"] == lrs[i]) & (sweep["seed"] == first_seed))[0])
            for tag in analysis.TAGS:
                params = train.checkpoint_from_arrays(ckpts, tag, i)
                io.write_npz(out_dir / f"{run}-{tag}.npz", model.flatten_params(params))
                # identical checkpoints are measured once: every run of the first seed starts from the same
                # init, and the common and best runs are one run when they share an LR
                key = "init" if tag == "init" else (i, tag)
                if key not in measured:
                    label = f"{variant}: {run} run (lr {lrs[i]:g}), {tag}"
                    measured[key] = analysis.measure_checkpoint(
                        spec, params, X, y, sm.params.analysis, tag,
                        lambda msg, label=label: print(f"{label}: {msg}", file=sys.stderr, flush=True))
                m = measured[key]
                extra = {"run": run, "lr": float(lrs[i]), "checkpoint": tag}
                for kind in rows:
                    rows[kind] += [{**extra, **r} for r in m[kind]]
                for kind in arrays:
                    arrays[kind].update({f"{run}-{tag}/{name}": v for name, v in m[kind].items()})
    io.write_csv(sm.output.layer_inputs[k], tables.long_rows(ids, rows["layer_inputs"],
                                                             ["run", "lr", "checkpoint", "layer", "metric", "value"]))
    io.write_csv(sm.output.layer_units[k], tables.long_rows(ids, rows["layer_units"],
                                                            ["run", "lr", "checkpoint", "layer", "unit", "mean", "rms",
                                                             "live"]))
    io.write_csv(sm.output.gradients[k], tables.gradients_table(ids, sweep, run_rows))
    curvature_columns = ["run", "lr", "checkpoint", "scope", "matrix", "metric", "value"]
    io.write_csv(sm.output.curvature[k], tables.long_rows(ids, rows["curvature"], curvature_columns))
    io.write_npz(sm.output.spectra[k], arrays["spectra"])
    contour_columns = ["run", "lr", "checkpoint", *landscape.ROW_KEYS]
    io.write_csv(sm.output.contours[k], tables.long_rows(ids, rows["contours"], contour_columns))
    io.write_npz(sm.output.contour_grids[k], arrays["grids"])


with runtime.job(sm.log[0], sm.threads, f"analyze {sm.wildcards.dataset}/{sm.wildcards.arch}", uses_jax=True,
                 optimization_level=sm.params.xla_level):
    variant_rows = io.read_csv_rows(sm.input.variants)
    for k, variant in enumerate(sm.params.variants):
        analyze_variant(k, variant, variant_rows)

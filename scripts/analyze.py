"""Rule analyze: the common-LR and best-LR runs' checkpoints and their measurements."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from normlab import analysis, io, landscape, model, runtime, selection, tables, train

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, f"analyze {sm.wildcards.dataset}/{sm.wildcards.variant}"):
    spec = model.ModelSpec.from_json(Path(sm.input.model).read_text())
    with np.load(sm.input.data) as f:
        data = {k: f[k] for k in f.files}
    X, y = analysis.analysis_batch(data, sm.params.analysis["max_examples"])
    curv_cfg, contour_cfg = sm.params.analysis["curvature"], sm.params.analysis["contours"]
    dtype = np.dtype(curv_cfg["dtype"])
    summary = pd.read_csv(sm.input.variants)
    row = summary[summary["variant"] == sm.wildcards.variant].iloc[0]
    ids = {k: row[k] for k in tables.ID_COLUMNS}
    with np.load(sm.input.sweep) as f:
        sweep = {k: f[k] for k in f.files}
    lrs = np.unique(sweep["lr"])
    first_seed = int(sweep["seed"][0])
    out_dir = Path(sm.output.checkpoints)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_rows, unit_rows, curvature_rows, contour_rows = [], [], [], []
    run_rows, spectra, grids = {}, {}, {}
    with np.load(sm.input.checkpoints) as ckpts:
        for run in analysis.RUNS:
            lr = selection.run_lr(row, run, lrs)
            i = analysis.lr_index(lrs, lr)
            run_rows[run] = int(np.flatnonzero((sweep["lr"] == lrs[i]) & (sweep["seed"] == first_seed))[0])
            for tag in analysis.TAGS:
                params = train.checkpoint_from_arrays(ckpts, tag, i)
                io.write_npz(out_dir / f"{run}-{tag}.npz", model.flatten_params(params))
                params64 = {k: {n: np.asarray(a, np.float64) for n, a in p.items()} for k, p in params.items()}
                s, u = analysis.layer_input_rows(spec, params64, X, sm.params.analysis["dead_threshold"])
                extra = {"run": run, "lr": float(lrs[i]), "checkpoint": tag}
                summary_rows += [{**extra, **r} for r in s]
                unit_rows += [{**extra, **r} for r in u]
                p_c = {k: {n: np.asarray(a, dtype) for n, a in p.items()} for k, p in params.items()}
                top2 = None
                if tag in curv_cfg["checkpoints"]:
                    print(f"curvature: {run} run (lr {lrs[i]:g}), checkpoint {tag}", file=sys.stderr)
                    rows, densities, top2 = analysis.curvature_at(spec, p_c, X.astype(dtype), y, curv_cfg)
                    curvature_rows += [{**extra, **r} for r in rows]
                    for d in densities:
                        for field in ("grid", "density"):
                            spectra[f"{run}-{tag}/{d['scope']}/{d['matrix']}/{field}"] = d[field]
                if tag in contour_cfg["checkpoints"]:
                    print(f"contours: {run} run (lr {lrs[i]:g}), checkpoint {tag}", file=sys.stderr)
                    rows, g = analysis.contours_at(spec, p_c, X.astype(dtype), y, contour_cfg,
                                                   sm.params.analysis["dead_threshold"], top2)
                    contour_rows += [{**extra, **r} for r in rows]
                    grids.update({f"{run}-{tag}/{k}": v for k, v in g.items()})
    io.write_csv(sm.output.layer_inputs, tables.long_rows(ids, summary_rows,
                                                          ["run", "lr", "checkpoint", "layer", "metric", "value"]))
    io.write_csv(sm.output.layer_units, tables.long_rows(ids, unit_rows,
                                                         ["run", "lr", "checkpoint", "layer", "unit", "mean", "rms",
                                                          "live"]))
    io.write_csv(sm.output.gradients, tables.gradients_table(ids, sweep, run_rows))
    curvature_columns = ["run", "lr", "checkpoint", "scope", "matrix", "metric", "value"]
    io.write_csv(sm.output.curvature, tables.long_rows(ids, curvature_rows, curvature_columns))
    io.write_npz(sm.output.spectra, spectra)
    contour_columns = ["run", "lr", "checkpoint", *landscape.ROW_KEYS]
    io.write_csv(sm.output.contours, tables.long_rows(ids, contour_rows, contour_columns))
    io.write_npz(sm.output.contour_grids, grids)

"""Measurements at the analysis checkpoints of one variant.

The analysis set is the first ``max_examples`` rows of the training split, used as ONE batch: BN runs
in training mode with that batch's statistics, so the analysis loss is a deterministic function of the
parameters (and no running statistics exist to be updated).

``analyze_variant`` is the analyze job's work for one variant: from its trained sweep (``train``'s arrays),
its checkpoints and its row of ``variants.csv``, the checkpoints of the ``common`` and ``best`` runs and
every measurement of them, as tidy tables and arrays ready to write.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import numpy as np

from normlab import curvature, landscape, layer_inputs, model, selection, tables, train

RUNS = ("common", "best")
TAGS = ("init", "early", "end")

# The per-checkpoint tables of ``analyze_variant`` and their columns after the ids (``tables.ID_COLUMNS``).
CHECKPOINT_TABLES = {
    "layer_inputs": ["run", "lr", "checkpoint", "layer", "metric", "value"],
    "layer_units": ["run", "lr", "checkpoint", "layer", "unit", "mean", "rms", "live"],
    "curvature": ["run", "lr", "checkpoint", "scope", "matrix", "metric", "value"],
    "contours": ["run", "lr", "checkpoint", *landscape.ROW_KEYS],
}


def analysis_batch(data: dict, max_examples: int, dtype=np.float64):
    """(X, y) of the analysis set."""
    return np.asarray(data["X_train"][:max_examples], dtype), np.asarray(data["y_train"][:max_examples])


def layer_input_rows(spec: model.ModelSpec, params: model.Params, X, dead_threshold: float):
    """Tidy rows for layer_inputs.csv (layer, metric, value) and layer_units.csv (layer, unit, mean,
    rms, live) of one checkpoint; layer l's input is A[l-1]."""
    summary, units = [], []
    for l, A in enumerate(layer_inputs.network_layer_inputs(spec, params, X), start=1):
        for metric, value in layer_inputs.layer_input_stats(A, dead_threshold).items():
            summary.append({"layer": l, "metric": metric, "value": value})
        rms, mean = layer_inputs.unit_rms(A), layer_inputs.unit_mean(A)
        live = rms > dead_threshold
        units.extend({"layer": l, "unit": j, "mean": float(mean[j]), "rms": float(rms[j]), "live": bool(live[j])}
                     for j in range(A.shape[1]))
    return summary, units


def lr_index(lrs, lr: float) -> int:
    """Index of ``lr`` in the grid ``lrs`` (relative tolerance 1e-9)."""
    lrs = np.asarray(lrs, np.float64)
    hits = np.flatnonzero(np.isclose(lrs, lr, rtol=1e-9, atol=0))
    if not hits.size:
        raise ValueError(f"learning rate {lr} is not on the grid {lrs.tolist()}")
    return int(hits[0])


def curvature_at(spec: model.ModelSpec, params: model.Params, X, y, cfg: dict, seed: int = 0):
    """Hessian and Gauss-Newton spectra of the analysis loss at one checkpoint, whole model and per layer.

    cfg: the ``analysis.curvature`` config (top_k, lanczos_steps, trace_probes, slq_probes,
    dense_max_params, output_dense_max_params, density_points). Returns (rows, densities, top2) where rows are
    tidy dicts (scope, matrix, metric, value), densities the SLQ densities per (scope, matrix), and top2 maps a scope
    to the pytree directions of its top-2 Hessian eigenvectors (zero outside the scope), for the contour
    slices. The probes are drawn from the key [0, seed] (the bits of ``jax.random.PRNGKey(seed)``, without
    compiling it).
    """
    result = curvature.analyze_curvature(
        spec, params, X, y, key=np.array([0, seed], np.uint32), top_k=cfg["top_k"],
        dense_max_params=cfg["dense_max_params"], num_steps=cfg["lanczos_steps"],
        trace_probes=cfg["trace_probes"], slq_probes=cfg["slq_probes"], grid_size=cfg["density_points"],
        output_dense_max_params=cfg["output_dense_max_params"],
    )
    top2 = {}
    for (scope, matrix), s in result.spectra.items():
        if matrix != "hessian" or s.vectors.shape[0] < 2:
            continue
        op = curvature.model_operator(spec, params, X, y, "hessian", None if scope == "model" else scope)
        top2[scope] = [op.to_tree(s.vectors[i]) for i in range(2)]
    return result.rows, result.densities, top2


def contours_at(spec: model.ModelSpec, params: model.Params, X, y, cfg: dict, dead_threshold: float,
                top2: dict | None = None):
    """Contour slices of one checkpoint: lecture slices of every layer, eigenvector slices from ``top2``
    (the Hessian's top-2 eigenvector directions per scope, from ``curvature_at``; skipped if None) and a
    filter-normalized random slice. cfg: the ``analysis.contours`` config. Returns (rows, grids)."""
    top2 = top2 or {}
    settings = {k: v for k, v in cfg.items() if k != "checkpoints"}
    settings["dead_threshold"] = dead_threshold
    layers = {k: tuple(v) for k, v in top2.items() if k != "model"}
    eig_model = tuple(top2["model"]) if "model" in top2 else None
    return landscape.contour_slices(spec, params, X, y, settings, eig_model=eig_model, eig_layers=layers or None)


def measure_checkpoint(spec: model.ModelSpec, params: model.Params, X, y, cfg: dict, tag: str,
                       progress=None) -> dict:
    """Every measurement of one checkpoint on the analysis batch (X, y), as configured by ``cfg`` (the
    ``analysis`` config): layer-input scales always; curvature if ``tag`` is in
    ``cfg['curvature']['checkpoints']``; contour slices if it is in ``cfg['contours']['checkpoints']``
    (eigenvector slices when curvature was measured too). Returns a dict of tidy row lists
    (layer_inputs, layer_units, curvature, contours) and arrays (spectra: "<scope>/<matrix>/<grid|density>",
    grids: contour grids by landscape's keys)."""
    progress = progress or (lambda msg: None)
    start = time.perf_counter()
    params64 = {k: {n: np.asarray(a, np.float64) for n, a in p.items()} for k, p in params.items()}
    summary, units = layer_input_rows(spec, params64, np.asarray(X, np.float64), cfg["dead_threshold"])
    out = {"layer_inputs": summary, "layer_units": units, "curvature": [], "contours": [], "spectra": {},
           "grids": {}}
    dtype = np.dtype(cfg["curvature"]["dtype"])
    p_c = {k: {n: np.asarray(a, dtype) for n, a in p.items()} for k, p in params.items()}
    Xc = np.asarray(X, dtype)
    top2 = None
    if tag in cfg["curvature"]["checkpoints"]:
        rows, densities, top2 = curvature_at(spec, p_c, Xc, y, cfg["curvature"])
        out["curvature"] = rows
        for d in densities:
            for field in ("grid", "density"):
                out["spectra"][f"{d['scope']}/{d['matrix']}/{field}"] = d[field]
        progress(f"curvature done ({time.perf_counter() - start:.1f} s)")
    if tag in cfg["contours"]["checkpoints"]:
        out["contours"], out["grids"] = contours_at(spec, p_c, Xc, y, cfg["contours"], cfg["dead_threshold"], top2)
        progress(f"contours done ({time.perf_counter() - start:.1f} s)")
    return out


@dataclasses.dataclass
class VariantAnalysis:
    """What ``analyze_variant`` produces for one variant.

    checkpoints: ``{"<run>-<tag>": flat arrays}``, the parameters of each analysed run at each checkpoint
    (``model.flatten_params``: the ``.npz`` files of ``checkpoints/``). tables: tidy tables keyed by
    ``CHECKPOINT_TABLES``' names and ``gradients``, ids first. spectra: ``"<run>-<tag>/<scope>/<matrix>/
    <grid|density>"`` -> (g,) spectral densities. contour_grids: ``"<run>-<tag>/<slice>.<scope>.<name>"``
    -> the contour slices' arrays.
    """

    checkpoints: dict[str, dict[str, np.ndarray]]
    tables: dict[str, tables.Table]
    spectra: dict[str, np.ndarray]
    contour_grids: dict[str, np.ndarray]


def analyze_variant(spec: model.ModelSpec, data: Mapping, sweep: Mapping, checkpoints: Mapping,
                    variant_row: Mapping, cfg: dict, progress: Callable[[str], None] | None = None
                    ) -> VariantAnalysis:
    """Measure the ``common`` and ``best`` runs (first seed) of one variant at every checkpoint tag.

    data: the processed dataset (``X_train``, ``y_train``; the analysis set is its first
    ``cfg["max_examples"]`` rows). sweep: ``train.sweep_arrays`` (lr, seed, per-step gradients ...).
    checkpoints: ``train.seed_checkpoint_arrays`` of the first seed (a dict or an opened .npz). variant_row:
    the variant's row of ``variants.csv`` (ids, ``common_lr``, ``best_lr``). cfg: the ``analysis`` config.
    progress: called with one line per finished measurement.

    Identical checkpoints are measured once: every run of the first seed starts from the same init, and the
    common and best runs are one run when they share an LR.
    """
    progress = progress or (lambda msg: None)
    X, y = analysis_batch(data, cfg["max_examples"])
    ids = {key: variant_row[key] for key in tables.ID_COLUMNS}
    lrs = np.unique(sweep["lr"])
    first_seed = int(sweep["seed"][0])
    rows = {kind: [] for kind in CHECKPOINT_TABLES}
    out = VariantAnalysis({}, {}, {}, {})
    run_rows, measured = {}, {}
    for run in RUNS:
        i = lr_index(lrs, selection.run_lr(variant_row, run, lrs))
        run_rows[run] = int(np.flatnonzero((sweep["lr"] == lrs[i]) & (sweep["seed"] == first_seed))[0])
        for tag in TAGS:
            params = train.checkpoint_from_arrays(checkpoints, tag, i)
            out.checkpoints[f"{run}-{tag}"] = model.flatten_params(params)
            key = "init" if tag == "init" else (i, tag)
            if key not in measured:
                label = f"{run} run (lr {lrs[i]:g}), {tag}"
                measured[key] = measure_checkpoint(spec, params, X, y, cfg, tag,
                                                   lambda msg, label=label: progress(f"{label}: {msg}"))
            m = measured[key]
            extra = {"run": run, "lr": float(lrs[i]), "checkpoint": tag}
            for kind in rows:
                rows[kind] += [{**extra, **r} for r in m[kind]]
            out.spectra.update({f"{run}-{tag}/{name}": v for name, v in m["spectra"].items()})
            out.contour_grids.update({f"{run}-{tag}/{name}": v for name, v in m["grids"].items()})
    out.tables = {kind: tables.long_rows(ids, rows[kind], columns) for kind, columns in CHECKPOINT_TABLES.items()}
    out.tables["gradients"] = tables.gradients_table(ids, sweep, run_rows)
    return out

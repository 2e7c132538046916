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

import jax
import numpy as np

from normlab import curvature, invariance, landscape, layer_inputs, matched, model, selection, smoothness, tables, train

RUNS = ("common", "best")
TAGS = ("init", "early", "matched", "end")

# The per-checkpoint tables of ``analyze_variant`` and their columns after the ids (``tables.ID_COLUMNS``).
CHECKPOINT_TABLES = {
    "layer_inputs": ["run", "lr", "seed", "checkpoint", "layer", "metric", "value"],
    "layer_units": ["run", "lr", "seed", "checkpoint", "layer", "unit", "mean", "rms", "live"],
    "curvature": ["run", "lr", "seed", "checkpoint", "scope", "matrix", "metric", "value"],
    "contours": ["run", "lr", "seed", "checkpoint", *landscape.ROW_KEYS],
}
# smoothness.csv: the loss and gradient along steps of c x lr x gradient from each checkpoint (``smoothness_table``)
SMOOTHNESS_COLUMNS = ["run", "lr", "seed", "checkpoint", "step_size", "metric", "value"]
# checkpoints.csv: where each analysed checkpoint was taken (``Checkpoint``)
CHECKPOINTS_COLUMNS = ["run", "lr", "seed", "checkpoint", "step", "frozen", "reached", "level"]


def analysis_batch(data: dict, max_examples: int, dtype=np.float64):
    """(X, y) of the analysis set."""
    return np.asarray(data["X_train"][:max_examples], dtype), np.asarray(data["y_train"][:max_examples])


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
    dense_max_params, output_dense_max_params, density_points, invariant_lanczos_steps: the size of the
    Lanczos subspace of the scale-invariant sharpness of a BN or LN model, 0 or absent: not measured).
    Returns (rows, densities, top2) where rows are tidy dicts (scope, matrix, metric, value), densities the
    SLQ densities per (scope, matrix), and top2 maps a scope to the pytree directions of its top-2 Hessian
    eigenvectors (zero outside the scope), for the contour slices. The probes are drawn from the key
    [0, seed] (the bits of ``jax.random.PRNGKey(seed)``, without compiling it).
    """
    result = curvature.analyze_curvature(
        spec, params, X, y, key=np.array([0, seed], np.uint32), top_k=cfg["top_k"],
        dense_max_params=cfg["dense_max_params"], num_steps=cfg["lanczos_steps"],
        trace_probes=cfg["trace_probes"], slq_probes=cfg["slq_probes"], grid_size=cfg["density_points"],
        output_dense_max_params=cfg["output_dense_max_params"],
        invariant_steps=cfg.get("invariant_lanczos_steps", 0),
    )
    top2 = {}
    for (scope, matrix), s in result.spectra.items():
        if matrix != "hessian" or s.vectors.shape[0] < 2:
            continue
        op = curvature.model_operator(spec, params, X, y, "hessian", None if scope == "model" else scope)
        top2[scope] = [op.to_tree(s.vectors[i]) for i in range(2)]
    return result.rows, result.densities, top2


def contours_at(spec: model.ModelSpec, params: model.Params, X, y, cfg: dict, dead_threshold: float,
                top2: dict | None = None, grid: bool = True):
    """Contour slices of one checkpoint: lecture slices of every layer, eigenvector slices from ``top2``
    (the Hessian's top-2 eigenvector directions per scope, from ``curvature_at``; skipped if None) and a
    filter-normalized random slice. cfg: the ``analysis.contours`` config. ``grid`` False: the slices' rows
    without their grids of J (``landscape.contour_slices``). Returns (rows, grids)."""
    top2 = top2 or {}
    settings = {k: v for k, v in cfg.items() if k not in ("checkpoints", "runs", "grid_seeds")}
    settings["dead_threshold"] = dead_threshold
    layers = {k: tuple(v) for k, v in top2.items() if k != "model"}
    eig_model = tuple(top2["model"]) if "model" in top2 else None
    return landscape.contour_slices(spec, params, X, y, settings, eig_model=eig_model, eig_layers=layers or None,
                                    grid=grid)


def _cast(tree, dtype):
    """Every array of a pytree (parameters, directions) as a numpy array of ``dtype``."""
    return jax.tree.map(lambda a: np.asarray(a, dtype), tree)


def measured_here(section: Mapping, tag: str, runs=RUNS) -> bool:
    """Whether a checkpoint ``tag`` that stands for the analysed runs ``runs`` (one checkpoint can be several
    runs': every run's init, and the common and best runs' when they share an LR) gets the measurement of an
    ``analysis`` config section (``curvature``, ``contours``): ``tag`` is in its ``checkpoints`` and one of
    ``runs`` in its ``runs`` (every run of ``RUNS`` when the section has no ``runs``)."""
    return tag in section["checkpoints"] and bool(set(runs) & set(section.get("runs", RUNS)))


def measure_checkpoint(spec: model.ModelSpec, params: model.Params, X, y, cfg: dict, tag: str,
                       progress=None, X_full=None, probe_seed: int = 0, contour_grids: bool = True,
                       runs=RUNS) -> dict:
    """Every measurement of one checkpoint on the analysis batch (X, y), as configured by ``cfg`` (the
    ``analysis`` config): layer-input scales always (over the rows of ``X_full``, the whole training split,
    when given; else over X); curvature where ``measured_here(cfg['curvature'], tag, runs)`` (``runs``: the
    analysed runs this checkpoint stands for; its random probes drawn from ``probe_seed``); contour slices
    where ``measured_here(cfg['contours'], tag, runs)`` (eigenvector slices when curvature was measured too;
    their grids of J only if ``contour_grids``).
    Returns a dict of tidy row lists
    (layer_inputs, layer_units, curvature, contours) and arrays (spectra: "<scope>/<matrix>/<grid|density>",
    grids: contour grids by landscape's keys)."""
    progress = progress or (lambda msg: None)
    start = time.perf_counter()
    # BN with the analysis set's statistics (the function the analysis loss is), applied to every row
    summary, units = layer_inputs.checkpoint_layer_input_rows(spec, params, X if X_full is None else X_full,
                                                              cfg["dead_threshold"], norm_batch=X)
    out = {"layer_inputs": summary, "layer_units": units, "curvature": [], "contours": [], "spectra": {},
           "grids": {}}
    dtype = np.dtype(cfg["curvature"]["dtype"])
    p_c = _cast(params, dtype)
    Xc = np.asarray(X, dtype)
    top2 = None
    if measured_here(cfg["curvature"], tag, runs):
        rows, densities, top2 = curvature_at(spec, p_c, Xc, y, cfg["curvature"], seed=probe_seed)
        if dtype != np.float64 and not all(np.isfinite(r["value"]) for r in rows
                                           if r["metric"] in ("lambda_max", "trace")):
            # e.g. a softmax saturated by raw inputs: curvature ~1e-17 under- and overflows float32 products
            # (eff_cond or negative_mass may be NaN by definition, e.g. for a zero trace; they do not count)
            progress(f"curvature not finite in {dtype}; measured again in float64")
            rows, densities, top2 = curvature_at(spec, _cast(params, np.float64), np.asarray(X, np.float64), y,
                                                 cfg["curvature"], seed=probe_seed)
            top2 = _cast(top2, dtype)  # the slices' directions, in the dtype of the slices' parameters
        out["curvature"] = rows
        for d in densities:
            for field in ("grid", "density"):
                out["spectra"][f"{d['scope']}/{d['matrix']}/{field}"] = d[field]
        progress(f"curvature done ({time.perf_counter() - start:.1f} s)")
    if measured_here(cfg["contours"], tag, runs):
        out["contours"], out["grids"] = contours_at(spec, p_c, Xc, y, cfg["contours"], cfg["dead_threshold"], top2,
                                                    contour_grids)
        progress(f"contours done ({time.perf_counter() - start:.1f} s)")
    return out


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One analysed checkpoint of one run: its parameters and where in training it was taken.

    step: the number of parameter updates before it (0 at ``init``). frozen: the run had diverged before that
    step, so these are the parameters it was frozen with (measured, and flagged in ``checkpoints.csv``).
    reached: for ``matched``, whether the run's analysis-set loss reached the case's level (False: the run's
    last step, as close as it came); None for the other tags. level: the matched loss level (NaN otherwise).
    """

    params: model.Params
    step: int
    frozen: bool
    reached: bool | None = None
    level: float = float("nan")


def checkpoint_name(run: str, seed: int, tag: str) -> str:
    """The name of a checkpoint's file (``checkpoints/<name>.npz``) and of its arrays' keys: ``<run>-s<seed>-<tag>``."""
    return f"{run}-s{seed}-{tag}"


def run_tags(run: str, has_matched: bool) -> tuple[str, ...]:
    """The checkpoint tags analysed for ``run``: init, early, end, and ``matched`` for the best run when the
    matched checkpoints were computed."""
    return TAGS if run == "best" and has_matched else tuple(t for t in TAGS if t != "matched")


@dataclasses.dataclass
class VariantAnalysis:
    """What ``analyze_variant`` produces for one variant.

    checkpoints: ``{checkpoint_name(run, seed, tag): flat arrays}``, the parameters of each analysed run of each
    seed at each checkpoint (``model.flatten_params``: the ``.npz`` files of ``checkpoints/``). tables: tidy
    tables keyed by ``CHECKPOINT_TABLES``' names, ``gradients`` and ``checkpoints``, ids first. spectra:
    ``"<checkpoint name>/<scope>/<matrix>/<grid|density>"`` -> (g,) spectral densities. contour_grids:
    ``"<checkpoint name>/<slice>.<scope>.<name>"`` -> the contour slices' arrays.
    """

    checkpoints: dict[str, dict[str, np.ndarray]]
    tables: dict[str, tables.Table]
    spectra: dict[str, np.ndarray]
    contour_grids: dict[str, np.ndarray]


def smoothness_table(spec: model.ModelSpec, params: list[model.Params], lrs: list[float],
                     labels: list[tuple[dict, int]], X, y, cfg: dict) -> list[dict]:
    """smoothness.csv's rows (``SMOOTHNESS_COLUMNS``). ``params`` and ``lrs``: the distinct measured
    checkpoints and each one's run lr (the steps are ``c x lr x gradient`` with c in
    ``cfg["step_multipliers"]``, the ``analysis.smoothness`` config); ``labels``: (ids, k) pairs, the run, lr,
    seed and checkpoint columns of a row group and the index k of its checkpoint in ``params`` (the common and
    best runs share their init, and a checkpoint when they share an lr). One compiled call measures every
    checkpoint and step multiplier (``normlab.smoothness``), in the parameters' dtype. Scale-invariant weight
    groups (BN, LN) add the ``beta_invariant`` metrics (``normlab.invariance.scale_tree``)."""
    if not params:
        return []
    scales = [invariance.scale_tree(spec, p) for p in params] if invariance.invariant_layers(spec) else None
    per_point = smoothness.smoothness_rows(spec, params, X, y, lrs, cfg["step_multipliers"], scales)
    return [{**ids, **{c: r[c] for c in ("step_size", "metric", "value")}} for ids, k in labels
            for r in per_point[k]]


def grid_seeds(seeds, contours_cfg: Mapping) -> set[int]:
    """The seeds whose contour slices get their grids of J: the ``grid_seeds`` (``analysis.contours``, default
    1) smallest of ``seeds``. The report draws the smallest analysed seed's slices; every seed's slices get
    their GGN axis ratio, which the claims use."""
    return set(sorted(int(s) for s in seeds)[: int(contours_cfg.get("grid_seeds", 1))])


def checkpoint_steps(sweep_config: Mapping) -> dict[str, int]:
    """The step (parameter updates done) of the ``init``, ``early`` and ``end`` checkpoints of a sweep with the
    config's ``sweep`` settings."""
    cfg = train.TrainConfig.from_sweep_config(sweep_config)
    return {"init": 0, "early": cfg.early_step, "end": cfg.steps}


def grid_checkpoint(sweep: Mapping, checkpoints: Mapping, tag: str, seed_index: int, lr_index: int,
                    step: int) -> Checkpoint:
    """The checkpoint ``tag`` (taken after ``step`` updates) of the grid run of the seed_index-th seed at the
    lr_index-th LR: its parameters and whether the run had diverged (and so was frozen) before that step."""
    n_seeds = len(train.grid_axes(sweep)[1])
    r = lr_index * n_seeds + seed_index
    frozen = bool(train.frozen_before(sweep["diverged"][r], sweep["diverged_step"][r], step))
    return Checkpoint(train.checkpoint_from_arrays(checkpoints, tag, seed_index, lr_index), step, frozen)


def matched_checkpoints(spec: model.ModelSpec, data: Mapping, sweep: Mapping, variant_row: Mapping, cfg: dict,
                        sweep_config: Mapping, progress: Callable[[str], None] | None = None
                        ) -> dict[int, Checkpoint]:
    """The best run's ``matched`` checkpoint of every seed: the run replayed from its seed to the first update
    whose analysis-set loss is <= the case's level (``variant_row["matched_level"]``; ``normlab.matched``)."""
    lrs, seeds = train.grid_axes(sweep)
    level = float(variant_row["matched_level"])
    X, y = analysis_batch(data, cfg["max_examples"])
    runs = matched.replay_to_level(spec, train.TrainConfig.from_sweep_config(sweep_config), data["X_train"],
                                   data["y_train"], X, y, selection.run_lr(variant_row, "best", lrs), seeds, level,
                                   progress)
    return {s: Checkpoint(r.params, r.step, r.frozen, r.reached, level) for s, r in runs.items()}


def analyze_variant(spec: model.ModelSpec, data: Mapping, sweep: Mapping, checkpoints: Mapping,
                    variant_row: Mapping, cfg: dict, sweep_config: Mapping,
                    progress: Callable[[str], None] | None = None) -> VariantAnalysis:
    """Measure the ``common`` and ``best`` runs of every seed of one variant at every checkpoint tag.

    data: the processed dataset (``X_train``, ``y_train``; the analysis set is its first
    ``cfg["max_examples"]`` rows; layer-input statistics use every training row). sweep: ``train.sweep_arrays``
    (lr, seed, per-step gradients ...). checkpoints: ``train.sweep_checkpoint_arrays`` (a dict or an opened
    .npz). variant_row: the variant's row of ``variants.csv`` (ids, ``common_lr``, ``best_lr``). cfg: the
    ``analysis`` config; sweep_config: the ``sweep`` config (the checkpoints' steps, and the replay of the
    best run to its ``matched`` checkpoint when the row has a ``matched_level``: ``matched_checkpoints``).
    progress: called with one line per finished measurement.

    Curvature and contour slices are measured on the runs of their section's ``runs`` (``measured_here``; the
    default study's: ``best``, the run the claims and figures read). Every seed's contour slices are measured;
    the ``grid_seeds`` smallest seeds' also get their grids of J (``grid_seeds``). Seeds are taken in the sweep's
    order; seed s of this variant starts from the same weights and sees the same batches as seed s of every other
    variant of its network shape. Identical checkpoints are measured once: the runs of one seed share their
    init, and the common and best runs are one run when they share an LR.
    """
    progress = progress or (lambda msg: None)
    X, y = analysis_batch(data, cfg["max_examples"])
    ids = {key: variant_row[key] for key in tables.ID_COLUMNS}
    lrs, seeds = train.grid_axes(sweep)
    steps = checkpoint_steps(sweep_config)
    matched_points = (matched_checkpoints(spec, data, sweep, variant_row, cfg, sweep_config, progress)
                      if "matched_level" in variant_row else None)
    rows = {kind: [] for kind in CHECKPOINT_TABLES}
    checkpoint_rows, run_rows = [], []
    smooth_cfg = cfg.get("smoothness")
    smooth_index, smooth_params, smooth_lrs, smooth_labels = {}, [], [], []
    out = VariantAnalysis({}, {}, {}, {})
    measured = {}
    drawn = grid_seeds(seeds, cfg["contours"])
    # every (run, seed, tag) analysed, and the key of its checkpoint: one key for the checkpoints that are one
    points = []
    for run in RUNS:
        i = lr_index(lrs, selection.run_lr(variant_row, run, lrs))
        for si, seed in enumerate(int(s) for s in seeds):
            run_rows.append((run, i * len(seeds) + si))
            for tag in run_tags(run, matched_points is not None):
                if tag == "matched":
                    point, key = matched_points[seed], ("matched", si)
                else:
                    point = grid_checkpoint(sweep, checkpoints, tag, si, i, steps[tag])
                    key = ("init", si) if tag == "init" else (i, si, tag)
                points.append((run, i, seed, tag, point, key))
    runs_of = {}  # key -> the runs its checkpoint stands for
    for run, *_, key in points:
        runs_of.setdefault(key, set()).add(run)
    for run, i, seed, tag, point, key in points:
        name = checkpoint_name(run, seed, tag)
        out.checkpoints[name] = model.flatten_params(point.params)
        if key not in measured:
            label = f"{run} run (lr {lrs[i]:g}), seed {seed}, {tag}"
            measured[key] = measure_checkpoint(spec, point.params, X, y, cfg, tag,
                                               lambda msg, label=label: progress(f"{label}: {msg}"),
                                               X_full=data["X_train"], probe_seed=seed,
                                               contour_grids=seed in drawn, runs=runs_of[key])
        m = measured[key]
        extra = {"run": run, "lr": float(lrs[i]), "seed": seed, "checkpoint": tag}
        checkpoint_rows.append({**extra, "step": point.step, "frozen": point.frozen,
                                "reached": point.reached, "level": point.level})
        for kind in rows:
            rows[kind] += [{**extra, **r} for r in m[kind]]
        # the steps scale with the run's lr: one init shared by two runs is measured at each run's lr
        if smooth_cfg and tag in smooth_cfg["checkpoints"]:
            if (key, extra["lr"]) not in smooth_index:
                smooth_index[key, extra["lr"]] = len(smooth_params)
                smooth_params.append(_cast(point.params, np.dtype(cfg["curvature"]["dtype"])))
                smooth_lrs.append(extra["lr"])
            smooth_labels.append((extra, smooth_index[key, extra["lr"]]))
        out.spectra.update({f"{name}/{k}": v for k, v in m["spectra"].items()})
        out.contour_grids.update({f"{name}/{k}": v for k, v in m["grids"].items()})
    out.tables = {kind: tables.long_rows(ids, rows[kind], columns) for kind, columns in CHECKPOINT_TABLES.items()}
    out.tables["checkpoints"] = tables.long_rows(ids, checkpoint_rows, CHECKPOINTS_COLUMNS)
    smooth_rows = []
    if smooth_cfg:
        start = time.perf_counter()
        smooth_rows = smoothness_table(spec, smooth_params, smooth_lrs, smooth_labels,
                                       np.asarray(X, np.dtype(cfg["curvature"]["dtype"])), y, smooth_cfg)
        progress(f"smoothness along the gradient: {len(smooth_params)} checkpoints x "
                 f"{len(smooth_cfg['step_multipliers'])} steps ({time.perf_counter() - start:.1f} s)")
    out.tables["smoothness"] = tables.long_rows(ids, smooth_rows, SMOOTHNESS_COLUMNS)
    out.tables["gradients"] = tables.gradients_table(ids, sweep, run_rows)
    return out

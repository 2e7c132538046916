"""Which rows each figure of the report shows: from the tidy tables (and the saved contour grids and spectral
densities) to figure tasks ``(caption, (figure function, its arguments))``, the function (``normlab.figures``)
returning PNG bytes; ``render_figures`` draws a list of tasks.

The analysis tables hold every analysed seed; the figures show one seed's runs (``display_seed``, the smallest
analysed one), the claims use every seed."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from normlab import figures, io, verdict

# the tables measured at the analysed checkpoints, one set of rows per seed
ANALYSIS_TABLES = ("layer_inputs", "layer_units", "curvature", "contours", "gradients", "checkpoints")

def load_contour_grids(paths) -> dict[tuple[str, str], dict]:
    """{(dataset, variant): {key: array}} from analysis/contours.npz files."""
    out = {}
    for p in paths:
        p = Path(p)
        with io.open_npz(p) as f:
            out[(p.parts[-4], p.parts[-3])] = {k: f[k] for k in f.files}
    return out


def _lecture_panels(ds: str, t: dict, grids: dict, tag: str, seed: int | None) -> list[dict]:
    """One figure per depth: rows = variants, columns = layers, the lecture slice of each layer (best-LR
    run of ``seed``, checkpoint ``tag``) with its Gauss-Newton axis ratio."""
    cont = t["contours"]
    cont = cont[(cont["dataset"] == ds) & (cont["run"] == "best") & (cont["checkpoint"] == tag)
                & (cont["slice"] == "lecture")]
    out = []
    for depth, g in cont.groupby("depth", sort=True):
        variants = sorted(g["variant"].unique(), key=lambda v: (v.split("-")[0], v.split("-")[1]))
        n_layers = int(depth) + 1
        rows = []
        for v in variants:
            arr = grids.get((ds, v), {})
            row = []
            for l in range(1, n_layers + 1):
                key = f"best-s{seed}-{tag}/lecture.layer{l}."
                r = g[(g["variant"] == v) & (g["scope"] == f"layer{l}")]
                if key + "loss" not in arr or not len(r):
                    row.append(None)
                    continue
                row.append(_panel(arr, key, r))
            rows.append(row)
        png = (figures.contour_grid, (rows, variants, [f"layer {l}" for l in range(1, n_layers + 1)]))
        out.append((f"The lecture's picture for every layer, depth {depth}, checkpoint {tag} of the best-LR run: J "
                    "against the two incoming weights of one unit of layer l whose inputs (units of A[l-1]) have the "
                    "largest and the smallest RMS, everything else fixed; for a scale-invariant unit (batch or layer "
                    "norm after it), J against distances along two directions orthogonal to the unit's weight "
                    "vector (its radial direction is exactly flat). Colour: log10(J - min J), one scale per "
                    "row; 'ratio' = axis ratio sqrt(lambda_1/lambda_2) of the projected Gauss-Newton matrix "
                    "(1 = round).", png))
    return out


SLICE_FLAGS = ("censored", "flat_direction", "degenerate", "projected")


def _panel(arr: dict, key: str, r: pd.DataFrame) -> dict:
    """A contour panel (``figures.contour_grid``) from a slice's grid arrays (``key`` + name) and its row of
    contours.csv: the grid, its ratio and flags."""
    return {"alphas": arr[key + "alphas"], "betas": arr[key + "betas"], "loss": arr[key + "loss"],
            "origin": arr[key + "origin"], "ratio": float(r["axis_ratio_ggn"].iloc[0]),
            **{flag: bool(r[flag].iloc[0]) for flag in SLICE_FLAGS if flag in r and not pd.isna(r[flag].iloc[0])}}


SLIDE_INPUTS = ("raw", "standardize", "batchnorm")  # the columns of the headline figure, in this order


def slide_figure_task(t: dict, grids: dict, seed: int | None) -> tuple[str, tuple] | None:
    """The headline figure, not yet drawn: the slide reproduced on the depth-0 model (no hidden layer, W = 0)
    at ``init``, one row per dataset, one column per input treatment (raw, standardized, batch norm on the
    raw inputs), with each slice's Gauss-Newton axis ratio. None when the study has no depth-0 slice."""
    if "contours" not in t or not grids:
        return None
    c = t["contours"]
    c = c[(c["depth"] == 0) & (c["run"] == "best") & (c["checkpoint"] == "init") & (c["slice"] == "lecture")
          & (c["scope"] == "layer1") & (c["norm"] == "none")]
    if seed is not None and "seed" in c:
        c = c[c["seed"] == seed]
    inputs = [i for i in SLIDE_INPUTS if (c["input"] == i).any()]
    rows, labels = [], []
    for ds in sorted(c["dataset"].unique()):
        row = []
        for i in inputs:
            arr = grids.get((ds, f"{i}-none-d0"), {})
            key = f"best-s{seed}-init/lecture.layer1."
            r = c[(c["dataset"] == ds) & (c["input"] == i)]
            row.append(_panel(arr, key, r) if key + "loss" in arr and len(r) else None)
        if any(p is not None for p in row):
            rows.append(row)
            labels.append(ds)
    if not rows:
        return None
    names = {"raw": "raw inputs", "standardize": "standardized inputs", "batchnorm": "BN on the raw inputs"}
    caption = ("The lecture's slide, reproduced: the model with no hidden layer (softmax or linear regression on "
               "the inputs) at W = 0, where its Gauss-Newton matrix is the inputs' second moment up to a constant. "
               "J against the two weights of one output unit from the inputs of largest and smallest RMS, "
               f"everything else fixed (seed {seed}). Colour: log10(J - min J), one scale per row; 'ratio' = "
               "sqrt(lambda_1/lambda_2) of the slice's Gauss-Newton matrix (1 = round).")
    return caption, (figures.contour_grid, (rows, labels, [names[i] for i in inputs]))


def dataset_figure_tasks(ds: str, t: dict[str, pd.DataFrame], spectra: dict | None = None,
                         grids: dict | None = None) -> list[tuple[str, tuple]]:
    """The per-dataset figures, not yet drawn: [(caption, (figure function, its arguments))], the function
    returning PNG bytes (``normlab.figures``)."""
    sel = lambda df: df[df["dataset"] == ds]  # noqa: E731
    # the figures of the analysis show one seed's runs (the claims use every seed)
    seed = display_seed(t)
    t = {k: (one_seed(v, seed) if k in ANALYSIS_TABLES else v) for k, v in t.items()}
    spectra = {d: [x for x in xs if seed is None or x.get("seed") == seed] for d, xs in (spectra or {}).items()}
    li = sel(t["layer_inputs"])
    spread = li[(li["metric"] == "rms_spread") & (li["run"] == "best") & (li["checkpoint"] == "end")]
    grads = sel(t["gradients"])
    grads = grads[(grads["metric"] == "grad_norm") & (grads["run"] == "best")]
    grads = grads[grads["step"] == grads.groupby("variant")["step"].transform("max")]
    figs = _basic_figures(ds, t, sel, spread, grads) + _curvature_figures(ds, t, sel, spectra)
    if grids and "contours" in t:
        for tag in ("init", "end"):
            figs += _lecture_panels(ds, t, grids, tag, seed)
    return figs


def _draw(task: tuple) -> bytes:
    fn, args = task
    return fn(*args)


def render_figures(tasks: list[tuple], workers: int = 1) -> list[bytes]:
    """PNG bytes of each (figure function, arguments) task, in order. ``workers`` > 1 draws them in that
    many processes (matplotlib draws in one thread; the report's figures are independent). The bytes do
    not depend on ``workers``."""
    workers = max(1, min(int(workers), len(tasks)))
    if workers == 1:
        return [_draw(task) for task in tasks]
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    # fork (workers start at once, matplotlib already imported) unless JAX is loaded: JAX runs threads, and
    # forking a threaded process can deadlock; the report job never imports JAX
    fork = "fork" in multiprocessing.get_all_start_methods() and "jax" not in sys.modules
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_draw, tasks))


def evaluation_curves(training: pd.DataFrame) -> pd.DataFrame:
    """The rows of training.csv at the evaluation schedule, with ``train_loss`` the evaluation-set loss there
    (the column ``figures.training_curves`` plots; the table's own train_loss is the mini-batch loss)."""
    rows = training[training["eval_loss"].notna()]
    return rows.assign(train_loss=rows["eval_loss"])


def display_seed(t: dict[str, pd.DataFrame]) -> int | None:
    """The seed whose runs the per-dataset figures show: the smallest analysed one (None if none is)."""
    seeds = t["layer_inputs"]["seed"] if "seed" in t.get("layer_inputs", ()) else ()
    return int(min(seeds)) if len(seeds) else None


def one_seed(df: pd.DataFrame, seed: int | None) -> pd.DataFrame:
    """The rows of ``df`` of one analysed seed (all rows when it has no seed column or seed is None)."""
    return df if seed is None or "seed" not in df else df[df["seed"] == seed]


def _basic_figures(ds, t, sel, spread, grads):
    return [
        ("Loss on the analysis set (the first rows of the training split) at each variant's best learning rate, "
         "on the evaluation schedule (median and range over seeds).",
         (figures.training_curves, (evaluation_curves(sel(t["training"])), sel(t["variants"])))),
        ("Largest learning rate at which every seed converged (x: no stable learning rate on the grid).",
         (figures.max_stable_lr, (sel(t["variants"]),))),
        ("Spread of the layer inputs' scales: max/min RMS over live units of A[l-1], end of the best-LR run. "
         "1 means every input of layer l is on one scale (round contours in the W[l] directions).",
         (figures.per_layer, (spread, "value", "RMS spread of A[l-1]"))),
        ("Gradient norm ||dJ/dW[l]|| per layer at the end of the best-LR run.",
         (figures.per_layer, (grads, "value", "||dJ/dW[l]||"))),
    ]


def _curvature_figures(ds, t, sel, spectra):
    if "curvature" not in t:
        return []
    cv = sel(t["curvature"])
    cv = cv[(cv["run"] == "best") & (cv["checkpoint"] == cv["checkpoint"].iloc[-1])] if len(cv) else cv
    if not len(cv):
        return []
    tag = cv["checkpoint"].iloc[0]
    layers = cv[cv["scope"].str.startswith("layer")].assign(layer=lambda d: d["scope"].str[5:].astype(int))
    lmax = verdict.comparable_sharpness(layers[layers["metric"] == "lambda_max"])
    caption = (f"Top Gauss-Newton eigenvalue of each layer's (W[l], b[l]) block, best-LR run, checkpoint {tag}: "
               "how sharp J is along that layer's own weights. For a normalized variant's hidden layers, the "
               "scale-invariant lambda_max(S G S) (S = the norms of its scale-invariant weight groups), so that the "
               "arms compare: plain curvature along such weights falls as 1/||w||^2 as they grow.")
    out = [(caption, (figures.per_layer, (lmax, "value", "lambda_max (GGN block)")))]
    li = sel(t["layer_inputs"])
    li = li[(li["run"] == "best") & (li["checkpoint"] == tag) & (li["metric"] == "eff_cond")]
    ggn = layers[(layers["matrix"] == "ggn") & (layers["metric"] == "eff_cond")]
    both = li.merge(ggn, on=["variant", "input", "norm", "depth", "layer"], suffixes=("_in", "_ggn"))
    both = both.rename(columns={"value_in": "input_eff_cond", "value_ggn": "ggn_eff_cond"})
    if len(both):
        out.append(("Per-layer conditioning of J (Gauss-Newton block, lambda_max / mean lambda) against the "
                    f"conditioning of that layer's inputs E[a~a~^T], best-LR run, checkpoint {tag}.",
                    (figures.conditioning_scatter, (both,))))
    dens = [d for d in spectra.get(ds, []) if d["run"] == "best" and d["checkpoint"] == tag
            and d["scope"] == "model" and d["matrix"] == "hessian"]
    if dens:
        out.append((f"Hessian eigenvalue density of the whole model (stochastic Lanczos quadrature), best-LR run, "
                    f"checkpoint {tag}.", (figures.spectral_densities, (dens,))))
    return out


def load_spectra(paths) -> dict[str, list[dict]]:
    """Densities from analysis/spectra.npz files (results/<dataset>/<variant>/analysis/spectra.npz), as
    {dataset: [dict(variant, input, norm, depth, run, seed, checkpoint, scope, matrix, grid, density)]}, the
    arrays' keys being ``<run>-s<seed>-<tag>/<scope>/<matrix>/<grid|density>`` (``analysis.checkpoint_name``)."""
    from normlab.variants import Variant

    out: dict[str, list[dict]] = {}
    for p in paths:
        p = Path(p)
        ds, variant = p.parts[-4], p.parts[-3]
        v = Variant.parse(variant)
        with io.open_npz(p) as f:
            keys = sorted({k.rsplit("/", 1)[0] for k in f.files})
            for k in keys:
                name, scope, matrix = k.split("/")
                run, seed, tag = re.fullmatch(r"(\w+)-s(\d+)-(\w+)", name).groups()
                out.setdefault(ds, []).append({"variant": variant, "input": v.input, "norm": v.norm, "depth": v.depth,
                                               "run": run, "seed": int(seed), "checkpoint": tag, "scope": scope,
                                               "matrix": matrix, "grid": f[k + "/grid"],
                                               "density": f[k + "/density"]})
    return out


def headline_figure_task(t: dict, grids: dict, seed: int | None) -> tuple[str, tuple] | None:
    """The report's headline figure, not yet drawn (None when the study has nothing to show)."""
    return slide_figure_task(t, grids, seed)


def question_figure_tasks(t: dict, grids: dict, spectra: dict, seed: int | None) -> dict[str, list[tuple[str, tuple]]]:
    """The figure that carries each sub-question (``verdict.QUESTIONS``), not yet drawn: {question: [(caption,
    task)]}; a question without a figure maps to []."""
    return {q: [] for q in verdict.QUESTIONS}

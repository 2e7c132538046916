"""Which rows each figure of the report shows: from the tidy tables (and the saved contour grids and spectral
densities) to figure tasks ``(caption, (figure function, its arguments))``, the function (``normlab.figures``,
``normlab.contour_figures``) returning PNG bytes; ``render_figures`` draws a list of tasks.

The analysis tables hold every analysed seed; the figures show one seed's runs (``display_seed``, the smallest
analysed one), the claims use every seed."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from normlab import contour_figures, figures, io, verdict

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
                key = _grid_key(seed, tag, f"layer{l}")
                r = g[(g["variant"] == v) & (g["scope"] == f"layer{l}")]
                if key + "loss" not in arr or not len(r):
                    row.append(None)
                    continue
                row.append(_panel(arr, key, r))
            rows.append(row)
        png = (contour_figures.contour_grid, (rows, [figures.arm_label(v.rsplit("-", 1)[0]) for v in variants],
                                      [f"layer {l}" for l in range(1, n_layers + 1)], False, GRID_DPI))
        out.append((f"The lecture's picture for every layer, depth {depth}, checkpoint {tag} of the best-LR run: J "
                    "against the two incoming weights of one unit of layer l whose inputs (units of A[l-1]) have the "
                    "largest and the smallest RMS, everything else fixed; for a scale-invariant unit (batch or layer "
                    "norm after it), J against distances along two directions orthogonal to the unit's weight "
                    "vector (its radial direction is exactly flat). Colour: log10(J - min J), one scale per "
                    "row; red +: the checkpoint (each panel spans the slice's extent around it, in parameter "
                    "units); 'ratio' = axis ratio sqrt(lambda_1/lambda_2) of the projected Gauss-Newton matrix "
                    "(1 = round; '>': beyond numerical resolution; '\u221e': the plane holds an exact flat "
                    "direction).", png))
    return out


GRID_DPI = 80  # the per-dataset contour grids (many panels): a lower resolution keeps them in the size budget
SLICE_FLAGS = ("censored", "flat_direction", "degenerate", "projected")
SLICE_NAMES = ("unit", "input_hi", "input_lo", "rms_hi", "rms_lo")  # contours.csv's columns that name the weights


def _panel(arr: dict, key: str, r: pd.DataFrame) -> dict:
    """A contour panel (``contour_figures.contour_grid``) from a slice's grid arrays (``key`` + name) and its row of
    contours.csv: the grid, its ratio and flags, and what names its axes (layer from the scope, norm, unit,
    input_hi/lo, rms_hi/lo where the table has them)."""
    row = r.iloc[0]
    names = {c: float(row[c]) for c in SLICE_NAMES if c in r and not pd.isna(row[c])}
    scope = str(row.get("scope", ""))
    layer = {"layer": int(scope[5:])} if scope.startswith("layer") and scope[5:].isdigit() else {}
    return {"alphas": arr[key + "alphas"], "betas": arr[key + "betas"], "loss": arr[key + "loss"],
            "origin": arr[key + "origin"], "ratio": float(row["axis_ratio_ggn"]), **names, **layer,
            **({"norm": row["norm"]} if "norm" in r else {}),
            **{flag: bool(row[flag]) for flag in SLICE_FLAGS if flag in r and not pd.isna(row[flag])}}


def _grid_key(seed: int | None, tag: str, scope: str, run: str = "best") -> str:
    """The prefix of a lecture slice's arrays in contours.npz: ``<run>-s<seed>-<tag>/lecture.<scope>.``
    (``<run>-<tag>/...`` for a table without seeds)."""
    return f"{run}-{tag}/lecture.{scope}." if seed is None else f"{run}-s{seed}-{tag}/lecture.{scope}."


def lecture_rows(t: dict, seed: int | None, run: str = "best") -> pd.DataFrame:
    """contours.csv's lecture slices of one run kind and seed (every seed when None or the table has no seed);
    empty without the table."""
    if "contours" not in t:
        return pd.DataFrame(columns=["dataset", "variant", "input", "norm", "depth", "checkpoint", "scope"])
    c = t["contours"]
    c = c[(c["run"] == run) & (c["slice"] == "lecture")]
    return c[c["seed"] == seed] if seed is not None and "seed" in c else c


def find_panel(c: pd.DataFrame, grids: dict, ds: str, variant: str, tag: str, scope: str,
               seed: int | None) -> dict | None:
    """The panel of one lecture slice (dataset, variant, checkpoint, scope) from the selected rows ``c``
    (``lecture_rows``) and the grids; None when its row or its grid is missing."""
    r = c[(c["dataset"] == ds) & (c["variant"] == variant) & (c["checkpoint"] == tag) & (c["scope"] == scope)]
    arr, key = grids.get((ds, variant), {}), _grid_key(seed, tag, scope)
    return _panel(arr, key, r) if len(r) and key + "loss" in arr else None


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
            key = _grid_key(seed, "init", "layer1")
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
    return caption, (contour_figures.contour_grid, (rows, labels, [names[i] for i in inputs]))


def dataset_figure_tasks(ds: str, t: dict[str, pd.DataFrame], spectra: dict | None = None,
                         grids: dict | None = None) -> list[tuple[str, tuple]]:
    """The per-dataset figures, not yet drawn: [(caption, (figure function, its arguments))], the function
    returning PNG bytes (``normlab.figures``, ``normlab.contour_figures``)."""
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


HEADLINE_TAG = "init"  # the checkpoint of the headline's deeper-layer slices (the slide's is init: W = 0)
HEADLINE_INPUTS = {"raw": "raw inputs", "standardize": "standardized inputs"}


def _headline_dataset(c: pd.DataFrame) -> str:
    """The dataset the headline shows: 'lecture' when it has a depth-0 slice, else the first dataset (by name)
    with one, else 'lecture' or the first dataset. c: lecture rows, not empty."""
    with_d0 = sorted(c.loc[c["depth"] == 0, "dataset"].unique())
    every = sorted(c["dataset"].unique())
    for candidates in (with_d0, every):
        if candidates:
            return "lecture" if "lecture" in candidates else candidates[0]
    return every[0]


def _first_pair(c: pd.DataFrame, grids: dict, ds: str, variants: list[tuple[str, str]], tag: str, scope: str,
                seed: int | None, min_depth: int) -> tuple[int, list[tuple[str, dict]]] | None:
    """(depth, [(title, panel)]) of the smallest depth >= min_depth at which every variant of ``variants``
    [(title, '<input>-<norm>')] has its slice (``find_panel``); None when no depth has them all."""
    for depth in sorted(d for d in c.loc[c["dataset"] == ds, "depth"].unique() if d >= min_depth):
        panels = [(title, find_panel(c, grids, ds, f"{a}-d{depth}", tag, scope, seed)) for title, a in variants]
        if all(p is not None for _, p in panels):
            return int(depth), panels
    return None


def headline_figure_task(t: dict, grids: dict, seed: int | None) -> tuple[str, tuple] | None:
    """The report's headline figure, not yet drawn: one wide row (``contour_figures.contour_row``) of the lecture's
    picture (best-LR run of ``seed``). Left, the slide on the depth-0 model at W = 0 (raw vs standardized
    inputs); right, a deeper layer's weights, W[2] of the smallest network of depth >= 2 (standardized inputs,
    checkpoint HEADLINE_TAG), without and with batch norm. The dataset: 'lecture' if it has a depth-0 model,
    else the first with one. Without depth 0 the left pair is layer 1 of the smallest network (raw vs
    standardized); a pair whose slices are missing is left out; None when neither pair can be drawn."""
    c = lecture_rows(t, seed)
    if not len(c) or not grids:
        return None
    ds = _headline_dataset(c)
    inputs = [(title, f"{i}-none") for i, title in HEADLINE_INPUTS.items()]
    groups, said = [], []
    slide = _first_pair(c, grids, ds, inputs, "init", "layer1", seed, 0)
    if slide and slide[0] == 0:
        groups.append((f"The slide: no hidden layer, J over two weights of W[1] at W = 0 ({ds})", slide[1]))
        said.append("left, the lecture's slide reproduced on the model with no hidden layer (softmax or linear "
                    "regression on the inputs) at W = 0: J against the weights from the input features of largest "
                    "and smallest RMS, raw vs standardized inputs")
    elif slide:
        groups.append((f"Layer 1 of the depth-{slide[0]} network at initialization ({ds})", slide[1]))
        said.append(f"left (the study has no depth-0 model), layer 1 of the depth-{slide[0]} network at "
                    "initialization, raw vs standardized inputs")
    deeper = _first_pair(c, grids, ds, [("no batch norm", "standardize-none"), ("batch norm", "standardize-batchnorm")],
                         HEADLINE_TAG, "layer2", seed, 2)
    if deeper:
        groups.append((f"A deeper layer: W[2] of the depth-{deeper[0]} network, standardized inputs, checkpoint "
                       f"{HEADLINE_TAG} ({ds})", deeper[1]))
        said.append(f"right, the same picture for layer 2 of the depth-{deeper[0]} network with standardized inputs "
                    f"(checkpoint {HEADLINE_TAG}), without and with batch norm; with batch norm the slice lies in the "
                    "plane orthogonal to the unit's weight vector (its radial direction is exactly flat)")
    if not groups:
        return None
    caption = ("Is input normalization already doing what batch norm does? " + "; ".join(said) + f" (seed {seed}, "
               "best-learning-rate run). Colour: log10(J - min J), one scale per pair; red +: the weights' current "
               "values; axis ratio = sqrt(lambda_1/lambda_2) of the slice's Gauss-Newton matrix (1 = round; '>': "
               "beyond numerical resolution, at least that elongated).")
    return caption, (contour_figures.contour_row, (groups,))


CHECKPOINT_ORDER = ("init", "early", "matched", "end")


def _in_checkpoint_order(df: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by checkpoint (init, early, matched, end; others after), stably: facets in that order."""
    rank = {c: k for k, c in enumerate(CHECKPOINT_ORDER)}
    return df.iloc[df["checkpoint"].map(lambda c: rank.get(c, len(rank))).argsort(kind="stable")]


def _standardized_networks(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of standardized inputs in networks with a hidden layer (what the BN/LN claims compare), with ``arm``."""
    d = df[(df["input"] == "standardize") & (df["depth"] >= 1)]
    return d.assign(arm=figures.arm(d)) if len(d) else d.assign(arm=pd.Series(dtype=str))


def _missing(q: str, what: str) -> list[tuple[str, tuple]]:
    return [(f"No figure for this question: {what}.", (figures.no_data, (f"Not measured in this study: {what}.",)))]


def q1_sharpness_spread(t: dict) -> list[tuple[str, tuple]]:
    """Q1: the spread over layers (max/min) of the per-layer Gauss-Newton lambda_max (``verdict.comparable_sharpness``:
    scale-invariant for normalized hidden layers), per seed, standardized inputs, every normalization arm, at
    every analysed checkpoint of the best-LR run."""
    if "curvature" not in t:
        return _missing("q1", "per-layer curvature (curvature.csv)")
    c = t["curvature"]
    c = c[(c["metric"] == "lambda_max") & c["scope"].str.startswith("layer") & (c["run"] == "best")]
    d = _standardized_networks(verdict.comparable_sharpness(c))
    d = d[pd.to_numeric(d["value"], errors="coerce") > 0]
    keys = ["dataset", "depth", "arm", "seed", "checkpoint"]
    spread = (d.groupby(keys)["value"].agg(lambda v: v.max() / v.min()).reset_index() if len(d)
              else pd.DataFrame(columns=[*keys, "value"]))
    caption = ("Q1: is J equally curved along every layer's weights? For each network (standardized inputs) and "
               "seed (one point each), the spread over layers of the top Gauss-Newton eigenvalue of layer l's own "
               "(W[l], b[l]) block: max over l / min over l (1 = every layer equally sharp), without a normalization "
               "layer and with batch or layer norm (their hidden layers: the scale-invariant lambda_max), best-LR "
               "run, at each analysed checkpoint.")
    return [(caption, (figures.seed_points, (_in_checkpoint_order(spread), "sharpness spread over layers\n"
                                             "(max/min of per-layer \u03bb_max)", "checkpoint")))]


def q2_layer1_ratios(t: dict) -> list[tuple[str, tuple]]:
    """Q2's second figure: the axis ratio of the layer-1 lecture slice (J over two weights of W[1]) per seed, raw vs
    standardized inputs (and BN on the raw inputs), no normalization layer, every depth (0 = the slide's model),
    at every analysed checkpoint of the best-LR run; censored ratios at their bound."""
    c = lecture_rows(t, None)
    c = c[(c["scope"] == "layer1") & (c["norm"] == "none")] if len(c) else c
    if not len(c):
        return []
    d = c.assign(arm=figures.arm(c), value=c["axis_ratio_ggn"])[
        ["dataset", "depth", "arm", "seed", "checkpoint", "value", "censored"]]
    caption = ("Q2: the variables in the input-normalization picture are the first layer's weights W[1]. The axis "
               "ratio of J over two weights of W[1] (the inputs of largest and smallest RMS), one point per seed, "
               "raw vs standardized inputs (and batch norm on the raw inputs), no normalization layer, for every "
               "depth (0: the slide's model) and analysed checkpoint of the best-LR run. 1 = round; a triangle: "
               "beyond numerical resolution, at least that elongated.")
    return [(caption, (figures.seed_points, (_in_checkpoint_order(d), "axis ratio of the W[1] slice",
                                             "checkpoint")))]


def q3_input_spread(t: dict, checkpoint: str = "end") -> list[tuple[str, tuple]]:
    """Q3: the layer inputs' scale spread (``verdict.SPREAD_METRIC``, p90/p10 of live units' RMS of A[l-1]) by
    layer, for each normalization arm (standardized inputs), every seed, best-LR run, ``checkpoint``."""
    if "layer_inputs" not in t:
        return _missing("q3", "layer-input scales (layer_inputs.csv)")
    li = t["layer_inputs"]
    li = li[(li["metric"] == verdict.SPREAD_METRIC) & (li["run"] == "best") & (li["checkpoint"] == checkpoint)]
    d = _standardized_networks(li)
    caption = ("Q3: once the inputs are standardized, what is left for batch norm? The spread of the scales of "
               "layer l's inputs A[l-1] (90th / 10th percentile of the live units' RMS; 1 = every input on one "
               f"scale, round contours in the W[l] directions), by layer, checkpoint {checkpoint} of the best-LR run: "
               "line = median over seeds, band = their range.")
    return [(caption, (figures.layer_profiles, (d, "RMS spread of A[l-1]\n(p90/p10 over units)")))]


def q4_gradients(t: dict) -> list[tuple[str, tuple]]:
    """Q4: the relative gradient norm ||dJ/dW[l]|| / ||W[l]|| by layer at the last recorded step of each seed's
    best-LR run, standardized inputs, each normalization arm."""
    if "gradients" not in t:
        return _missing("q4", "per-layer gradient norms (gradients.csv)")
    g = t["gradients"]
    g = g[(g["metric"] == "relative_grad_norm") & (g["run"] == "best")]
    g = g[g["step"] == g.groupby(["dataset", "variant", "seed"])["step"].transform("max")]
    caption = ("Q4: does 'rounder' mean similar gradient magnitudes across the parameters? The relative gradient "
               "norm ||dJ/dW[l]|| / ||W[l]|| (a dimensionless step size per unit of weight) by layer, at the last "
               "recorded step of the best-LR run, standardized inputs: line = median over seeds, band = their range.")
    return [(caption, (figures.layer_profiles, (_standardized_networks(g), "||dJ/dW[l]|| / ||W[l]||")))]


Q5_ARMS = ("standardize-none", "standardize-batchnorm", "standardize-layernorm", "raw-batchnorm", "batchnorm-none")


def q5_loss_vs_lr(t: dict) -> list[tuple[str, tuple]]:
    """Q5: final training loss against learning rate (the grid's runs, every seed; a diverged run left out) for
    the arms Q5_ARMS in the networks (depth >= 1), with each arm's max stable LR (variants.csv)."""
    if "runs" not in t:
        return _missing("q5", "the learning-rate sweep (runs.csv)")
    r = t["runs"]
    r = r[r["grid"].astype(bool)] if "grid" in r else r
    r = r[r["depth"] >= 1].assign(arm=lambda x: figures.arm(x) if len(x) else "")
    r = r[r["arm"].isin(Q5_ARMS)]
    r = r.assign(final_train_loss=pd.to_numeric(r["final_train_loss"], errors="coerce").where(
        ~r["diverged"].astype(bool)))
    v = t.get("variants", pd.DataFrame(columns=["dataset", "input", "norm", "depth", "max_stable_lr"]))
    v = v[v["depth"] >= 1].assign(arm=lambda x: figures.arm(x) if len(x) else "")
    marks = v[v["arm"].isin(Q5_ARMS)][["dataset", "depth", "arm", "max_stable_lr"]]
    caption = ("Q5: with normalized inputs, does batch norm bring only marginal gains? Final training loss against "
               "the learning rate (median over seeds of the runs that did not diverge; a line ends where its runs "
               "diverge), standardized inputs without and with batch or layer norm, and the converse: raw inputs "
               "with batch norm, and batch norm on the raw inputs instead of standardizing them. Dashed: each arm's "
               "max stable learning rate (every seed converges).")
    return [(caption, (figures.loss_vs_lr, (r[["dataset", "depth", "arm", "lr", "seed", "final_train_loss"]],
                                            marks)))]


def question_figure_tasks(t: dict, grids: dict, spectra: dict, seed: int | None) -> dict[str, list[tuple[str, tuple]]]:
    """The figure that carries each sub-question (``verdict.QUESTIONS``), not yet drawn: {question: [(caption,
    task)]}, across datasets and depths: q1 the per-layer sharpness spread without vs with each normalization;
    q2 the slide (depth 0, raw vs standardized, every dataset; ``slide_figure_task``) and the layer-1 slices'
    axis ratios; q3 the layer-input scale spread by layer; q4 the relative gradient norm by layer; q5 final loss
    against learning rate with the max stable LR, and the converse. A question whose table is missing gets a
    ``figures.no_data`` figure (q2: none without contour slices). ``spectra`` is not used yet."""
    slide = slide_figure_task(t, grids, seed)
    out = {"q1": q1_sharpness_spread(t), "q2": ([("Q2: " + slide[0], slide[1])] if slide else []) + q2_layer1_ratios(t),
           "q3": q3_input_spread(t), "q4": q4_gradients(t), "q5": q5_loss_vs_lr(t)}
    return {q: out.get(q, []) for q in verdict.QUESTIONS}

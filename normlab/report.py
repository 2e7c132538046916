"""The HTML report: tables -> claims (verdict) and figures -> one self-contained file."""

from __future__ import annotations

import json
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from normlab import figures, io, verdict

# the tables measured at the analysed checkpoints, one set of rows per seed
ANALYSIS_TABLES = ("layer_inputs", "layer_units", "curvature", "contours", "gradients", "checkpoints")

PACKAGES = ["normlab", "jax", "jaxlib", "optax", "numpy", "pandas", "scikit-learn", "matplotlib", "seaborn",
            "snakemake", "Jinja2"]


def load_tables(paths: dict) -> dict[str, pd.DataFrame]:
    """{kind: table} from {kind: csv path} (each read through ``io``, so the job's log lists it)."""
    return {k: io.read_csv(v) for k, v in paths.items()}


def fmt(x, digits: int = 3) -> str:
    """A number for prose: 3 significant digits; NaN as 'n/a'; inf as '∞'; a string as it is."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if np.isinf(x):
        return "∞"
    return f"{x:.{digits}g}"


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


def methods(config: dict, tables: dict, benchmarks_dir: Path) -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    wall = []
    for f in sorted(benchmarks_dir.rglob("*.tsv")) if benchmarks_dir.exists() else []:
        rule = f.relative_to(benchmarks_dir).parts[0].removesuffix(".tsv")
        b = pd.read_csv(f, sep="\t")
        wall.append({"rule": rule, "s": float(b["s"].iloc[-1])})
    wall = (pd.DataFrame(wall).groupby("rule")["s"].agg(["count", "sum", "max"]).reset_index()
            if wall else pd.DataFrame(columns=["rule", "count", "sum", "max"]))
    return {"versions": versions, "commit": commit, "python": platform.python_version(),
            "config": json.dumps(config, indent=2, sort_keys=True, default=str), "wall": wall.to_dict("records")}


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


def study_notes(config: dict) -> list[str]:
    """The methods' paragraphs on the arms and measurements of issue 21, with the configured values: depth 0
    and its zero init (and why it is left out of the common learning rate), layer norm, batch norm on the
    inputs with running statistics, smoothness along the gradient, scale invariance and the effective
    learning rate, the converse."""
    sweep = config.get("sweep", {})
    smooth = config.get("analysis", {}).get("smoothness", {})
    momentum = sweep.get("running_stats_momentum", 0.1)
    steps = ", ".join(fmt(float(c)) for c in smooth.get("step_multipliers", [0.5, 1, 2, 4]))
    return [
        "Depth 0 (<code>&lt;input&gt;-none-d0</code>) is the slide's own model: no hidden layer, softmax (or linear) "
        "regression on the inputs, weights and biases starting at zero, where every class probability is 1/k and "
        "the Gauss-Newton matrix of the slice through two weights is the inputs' second moment up to a constant. "
        "It has no layer to normalize, so it has one variant per input treatment. It is left out of the common "
        "learning rate: its cost is convex with its own stability limit, which on raw inputs follows the inputs' "
        "scale, and as the smallest stable learning rate it would set the common learning rate of every network.",
        "Layer norm (<code>layernorm</code>) normalizes each example across a layer's units (then gain and bias per "
        "unit); batch norm normalizes each unit across the batch. The K-FAC view predicts that only the latter "
        "equalizes the scales of a deeper layer's inputs; the layer-norm claims test that prediction.",
        "Batch norm on the inputs (<code>batchnorm-none-d*</code>): the network standardizes its raw inputs per "
        "feature with each mini-batch's mean and biased variance (no gain or bias) in training, and with running "
        f"statistics at test time: r &larr; (1 &minus; m) r + m &middot; batch statistic, m = {fmt(float(momentum))} "
        "(<code>sweep.running_stats_momentum</code>), r starting at mean 0, variance 1. Test accuracy and test loss "
        "use the running statistics; <code>train_mode_loss</code> is the evaluation-set loss with each "
        "batch-size chunk normalized by its own statistics, <code>test_mode_loss</code> the same rows with the "
        "running statistics.",
        "Smoothness along the gradient (Santurkar et al. 2018): from each checkpoint, steps of c &times; lr &times; "
        f"g along the gradient g, c in {{{steps}}} (<code>analysis.smoothness.step_multipliers</code>), with lr the "
        "run's own learning rate; <code>loss_range</code> is the range of J over c = 0 and those steps, "
        "<code>beta_max</code> the largest ||g(&theta;') &minus; g|| / ||&theta;' &minus; &theta;||. The claims read "
        "the common-LR run, so both arms take steps of the same learning rate.",
        "Scale invariance: under batch norm each hidden unit's incoming weights w are scale-invariant (J(c w) = "
        "J(w)), under layer norm each hidden layer's W and b together. Their gradient scales as 1/||w|| and their "
        "curvature as 1/||w||&sup2;, so plain sharpness and smoothness fall as the weights grow, for free. Claims "
        "that compare a normalized arm's sharpness or smoothness use the scale-invariant value (lambda_max(S H S), "
        "S = diag of the group norms; <code>beta_invariant</code>); the arm without normalization keeps the plain "
        "one. The effective learning rate of such a group is lr / ||w||&sup2;.",
        "The converse: raw inputs with batch norm against standardized inputs, without and with batch norm, each "
        "at its own best learning rate (final loss, test accuracy) and in the layer-1 slice.",
    ]


def render_html(**context) -> str:
    """The report's template rendered with ``context`` (every variable the template reads; the optional
    ones of issue 21 default to empty)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("normlab", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    defaults = {"headline": None, "effective_lr": pd.DataFrame(), "effective_lr_text": "", "rules": [],
                "groups": verdict.GROUPS, "study_notes": [], "fmt": fmt}
    return env.get_template("report.html.j2").render(**{**defaults, **context})


def build_report(table_paths: dict, provenance_paths: list, config: dict, out, benchmarks_dir="benchmarks",
                 spectra_paths=(), contour_paths=(), workers: int = 1) -> None:
    """Render the report to ``out`` from the tables (paths by kind), the datasets' provenance and the
    spectral densities; its wall time per rule from the study's benchmark files under ``benchmarks_dir``;
    ``workers`` processes draw the figures (``render_figures``)."""
    t = load_tables(table_paths)
    spectra = load_spectra(spectra_paths)
    grids = load_contour_grids(contour_paths)
    by_question = verdict.claims_by_question(t)
    answer = verdict.summary(by_question)  # the slide's sentence first
    datasets = sorted(t["variants"]["dataset"].unique())
    provenance = {Path(p).stem: json.loads(Path(p).read_text()) for p in provenance_paths}
    runs = t["runs"]
    divergence = {ds: {"diverged": int(g["diverged"].sum()), "runs": len(g),
                       "by_variant": g.groupby("variant")["diverged"].sum().astype(int).to_dict()}
                  for ds, g in runs.groupby("dataset")}
    factor = config.get("sweep", {}).get("divergence_factor", 1000.0)
    runs_per_variant = runs.groupby(["dataset", "variant"]).size().to_dict()
    effective = verdict.effective_lr_table(t["gradients"])
    figs, headline = _all_figures(datasets, t, spectra, grids, workers)
    html = render_html(divergence=divergence, divergence_factor=factor,
        runs_per_variant=runs_per_variant,
        title=config.get("report", {}).get("title", "normlab report"), answer=answer,
        by_question=by_question, questions=verdict.QUESTIONS,
        edge=verdict.edge_of_stability(t["curvature"]) if "curvature" in t else pd.DataFrame(), datasets=datasets,
        provenance=provenance, variants=t["variants"], figures=figs, headline=headline,
        effective_lr=effective, effective_lr_text=verdict.effective_lr_sentence(effective),
        rules=verdict.rules_table([c for _, c in answer]), study_notes=study_notes(config),
        methods=methods(config, t, Path(benchmarks_dir)),
    )
    io.write_text(out, html)


def _all_figures(datasets: list[str], t: dict, spectra: dict, grids: dict,
                 workers: int) -> tuple[dict[str, list[dict]], dict | None]:
    """Every dataset's figures and the headline figure (the slide; None without depth 0), drawn in one pool
    so the workers stay busy across datasets."""
    tasks = {ds: dataset_figure_tasks(ds, t, spectra, grids) for ds in datasets}
    slide = slide_figure_task(t, grids, display_seed(t))
    flat = [task for ds in datasets for _, task in tasks[ds]] + ([slide[1]] if slide else [])
    pngs = iter(render_figures(flat, workers))
    figs = {ds: [{"caption": c, "alt": f"{ds}: {c}", "src": figures.data_uri(next(pngs))} for c, _ in tasks[ds]]
            for ds in datasets}
    headline = ({"caption": slide[0], "alt": "The lecture's slide reproduced: " + slide[0],
                 "src": figures.data_uri(next(pngs))} if slide else None)
    return figs, headline

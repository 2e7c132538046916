"""The HTML report: tables -> claims (verdict) and figures (figure_tasks) -> one self-contained file."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from normlab import figure_tasks, figures, io, verdict

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
    ``workers`` processes draw the figures (``figure_tasks.render_figures``)."""
    t = load_tables(table_paths)
    spectra = figure_tasks.load_spectra(spectra_paths)
    grids = figure_tasks.load_contour_grids(contour_paths)
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
    tasks = {ds: figure_tasks.dataset_figure_tasks(ds, t, spectra, grids) for ds in datasets}
    slide = figure_tasks.headline_figure_task(t, grids, figure_tasks.display_seed(t))
    flat = [task for ds in datasets for _, task in tasks[ds]] + ([slide[1]] if slide else [])
    pngs = iter(figure_tasks.render_figures(flat, workers))
    figs = {ds: [{"caption": c, "alt": f"{ds}: {c}", "src": figures.data_uri(next(pngs))} for c, _ in tasks[ds]]
            for ds in datasets}
    headline = ({"caption": slide[0], "alt": "The lecture's slide reproduced: " + slide[0],
                 "src": figures.data_uri(next(pngs))} if slide else None)
    return figs, headline

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
from normlab.verdict.bottom_line import bottom_line as bottom_line_sentences
from normlab.verdict.bottom_line import feeds_table

PACKAGES = ["normlab", "jax", "jaxlib", "optax", "numpy", "pandas", "scikit-learn", "matplotlib", "seaborn", "pillow",
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
    used, unused = config_audit(config)
    return {"versions": versions, "commit": commit, "python": platform.python_version(),
            "config": json.dumps(used, indent=2, sort_keys=True, default=str), "unused": unused,
            "wall": wall.to_dict("records"), "batch_size": config.get("sweep", {}).get("batch_size"),
            "max_examples": config.get("analysis", {}).get("max_examples"),
            "eval_examples": config.get("sweep", {}).get("eval_examples"), "study": config.get("study", "")}


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
        "scale, and as the smallest stable learning rate it would set the common learning rate of every network. "
        "Standardizing rescales features, it does not decorrelate them: no rescaling of two inputs makes a slice "
        "rounder than &radic;((1 + c) / (1 &minus; c)), c their Gauss-Newton coupling (<code>ggn_coupling</code>, "
        "at W = 0 their uncentred correlation); where a slide stays elongated, its claim says if this is why.",
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


# settings that can have no effect on any number, and when: (path, predicate on the config: True = unused, why)
def _inputs(c: dict) -> set:
    return set(c.get("variants", {}).get("inputs", ()))


def _norms(c: dict) -> set:
    return set(c.get("variants", {}).get("norms", ()))


def _no_hidden(c: dict) -> bool:
    depths = c.get("variants", {}).get("depths", ())
    return bool(depths) and max(depths) == 0


UNUSED_WHEN = (
    ("sweep.momentum", lambda c: c.get("sweep", {}).get("optimizer", "sgd") != "momentum",
     lambda c: f"optimizer {c.get('sweep', {}).get('optimizer', 'sgd')} takes no momentum (only optimizer: "
               "momentum does)"),
    ("sweep.running_stats_momentum", lambda c: "batchnorm" not in _inputs(c),
     lambda c: "no variant has batch norm on its inputs, the only place running statistics are kept"),
    ("variants.batchnorm_input_norms", lambda c: "batchnorm" not in _inputs(c),
     lambda c: "the batchnorm input treatment is not in variants.inputs"),
    ("variants.eps", lambda c: not (_norms(c) - {"none"}) and "batchnorm" not in _inputs(c),
     lambda c: "no variant has a normalization layer"),
    ("variants.norms", _no_hidden, lambda c: "every model has depth 0: no hidden layer to normalize"),
    ("variants.width", _no_hidden, lambda c: "every model has depth 0: no hidden layer"),
    ("variants.activation", _no_hidden, lambda c: "every model has depth 0: no hidden layer"),
    ("resources", lambda c: True,
     lambda c: "threads, run-time and memory requests: they change how the jobs ran, not what they computed"),
)


def config_audit(config: dict) -> tuple[dict, list[dict]]:
    """(the config as it took effect: every setting that changed a number, the settings that had no effect
    left out; [{"key", "value", "why"}] those left out)."""
    used = json.loads(json.dumps(config, default=str))
    unused = []
    for path, unused_if, why in UNUSED_WHEN:
        *parents, leaf = path.split(".")
        node = used
        for k in parents:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and leaf in node and unused_if(config):
            value = node.pop(leaf)
            unused.append({"key": path, "value": json.dumps(value, sort_keys=True), "why": why(config)})
    return used, unused


RUN_WORDS = {"best": "each variant's best-learning-rate", "common": "the common-learning-rate"}
OPTIMIZER_WORDS = {"sgd": "plain SGD (no momentum)", "momentum": "SGD with heavy-ball momentum {m}", "adam": "Adam"}


def _listing(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def scope_note(config: dict, provenance: dict | None = None) -> list[str]:
    """'What this study cannot tell': the limits of what was measured, from the config (the model family,
    its widths and depths, the normalization arms, the optimizer and its budget, the datasets and their
    sizes from ``provenance``, the seeds)."""
    v, sw = config.get("variants", {}), config.get("sweep", {})
    depths = sorted(v.get("depths", []))
    hidden = [d for d in depths if d > 0]
    norms = [n for n in v.get("norms", []) if n != "none"]
    norm_words = {"batchnorm": "batch norm", "layernorm": "layer norm"}
    out = []
    model = (f"Only fully connected networks (MLPs) of width {v.get('width')} with {v.get('activation')} "
             f"activations and {_listing(hidden)} hidden layers" if hidden else "Only the slide's model")
    if 0 in depths and hidden:
        model += ", and the slide's model with no hidden layer"
    model += (": nothing here speaks for convolutional, recurrent or attention networks, residual connections, "
              "or other widths and depths.")
    out.append(model)
    if norms:
        out.append(f"Only {_listing(norm_words.get(n, n) for n in norms)} after each hidden layer's linear map, "
                   "before the activation (as in the course); other placements and other normalizations "
                   "(group norm, weight norm) were not tried.")
    opt = sw.get("optimizer", "sgd")
    out.append(f"Only {OPTIMIZER_WORDS.get(opt, opt).format(m=fmt(sw.get('momentum', 0.9)))} at a constant learning "
               f"rate ({sw.get('n_lr')} values from {fmt(sw.get('lr_min'))} to {fmt(sw.get('lr_max'))}), "
               f"{sw.get('steps')} steps of mini-batches of {sw.get('batch_size')} rows: no learning-rate schedule, "
               "no weight decay, no long training; another optimizer may gain more, or less, from rounder contours.")
    names = list(config.get("datasets", {}))
    rows = [provenance[d]["rows"] for d in names if provenance and d in provenance and "rows" in provenance[d]]
    size = f" ({min(rows)} to {max(rows)} rows)" if rows else ""
    out.append(f"Only {len(names)} small tabular dataset{'s' if len(names) != 1 else ''}{size}: {_listing(names)}; "
               "not images, text or large data sets, where the layers' input scales may behave otherwise.")
    seeds = sw.get("seeds", [])
    out.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} per variant: a case counts as holding when it "
               "holds for every seed, which is a consistency check, not a significance test.")
    an = config.get("analysis", {})
    runs = sorted({r for section in ("curvature", "contours") for r in an.get(section, {}).get("runs", ["best"])})
    of_runs = _listing(RUN_WORDS.get(r, r) for r in runs)
    out.append("The contours are two-dimensional slices through two weights (and their Gauss-Newton axis ratio) at "
               f"a few checkpoints of {of_runs} run{'s' if len(runs) > 1 else ''}, and the curvature is summarized "
               "by top eigenvalues: the claims are about these "
               "measurements on the training loss, not about generalization (test accuracy is shown, never claimed).")
    return out


HEADER_WORDS = {
    "arm": "arm", "its_max_stable_lr": "its max stable LR", "its_final_loss_there": "its final loss there",
    "competitor_final_loss_at_best_lr": "competitor's final loss at its best LR", "case_target": "target loss",
    "best_lr": "best LR", "train_mode_loss": "training-mode loss", "test_mode_loss": "test-mode loss",
    "no_bn_stable_at_largest_lr_tried": "stable without BN at the largest LR tried",
    "no_ln_stable_at_largest_lr_tried": "stable without LN at the largest LR tried",
}
HEADER_STEMS = (  # longest first
    ("layer_sharpness_spread", "sharpness spread over layers"), ("cov_eff_cond", "effective condition (covariance)"),
    ("eff_cond", "effective condition"), ("beta_invariant_max", "scale-invariant beta"), ("beta_max", "beta"),
    ("loss_range", "loss range"), ("grad_spread", "gradient spread"), ("max_stable_lr", "max stable LR"),
    ("final_loss", "final loss"), ("test_accuracy", "test accuracy"), ("raw_spread", "input-scale spread, raw"),
    ("standardized_spread", "input-scale spread, standardized"), ("spread", "input-scale spread"),
    ("ratio", "axis ratio"), ("coupling", "GGN coupling c"), ("censored", "censored"), ("steps", "steps to target"),
    ("loss_at_", "loss after "),
)
HEADER_ARMS = (  # suffixes, longest first
    ("_standardized_batchnorm", ", standardized with BN"), ("_standardized_none", ", standardized without BN"),
    ("_standardized_no_bn", ", standardized without BN"), ("_standardized_bn", ", standardized with BN"),
    ("_raw_bn", ", raw inputs with BN"), ("_input_bn", ", BN on the inputs"), ("_bn_raw", " with BN (plain)"),
    ("_ln_raw", " with LN (plain)"), ("_no_bn_upper", " without BN (bracket top)"),
    ("_bn_upper", " with BN (bracket top)"),
    ("_no_ln_upper", " without LN (bracket top)"), ("_ln_upper", " with LN (bracket top)"), ("_no_bn", " without BN"),
    ("_bn", " with BN"), ("_no_ln", " without LN"), ("_ln", " with LN"), ("_standardized", ", standardized"),
    ("_raw", ", raw"),
)


def column_header(key: str) -> str:
    """A claim table's column name in words: 'ratio_no_bn' -> 'axis ratio without BN'."""
    if key in HEADER_WORDS:
        return HEADER_WORDS[key]
    rest, tail = key, ""
    for suffix, words in HEADER_ARMS:
        if rest.endswith(suffix):
            rest, tail = rest[: -len(suffix)], words
            break
    for stem, words in HEADER_STEMS:
        if rest.startswith(stem):
            rest = words + rest[len(stem):].replace("pct", "% of the steps").replace("_", " ")
            break
    else:
        rest = rest.replace("_", " ")
    return (rest + tail).strip()


def cell(x) -> str:
    """A table cell: yes/no for a flag, else ``fmt``."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    return fmt(x)


NAMED_CASES = 3  # a claim's headline names its exceptions when there are at most this many


def claim_view(c) -> dict:
    """A claim for people: ``headline`` (its outcome's sentence, a long case list replaced by a pointer to the
    folded list), ``summary`` (the fold's title: 'k of n cases hold; ...'), ``failing`` / ``holding`` (labels),
    ``details`` (the seeds, the undecided cases and the rule's notes), ``headers`` (the numbers' columns in
    words)."""
    failing, holding = c.failing_cases(), c.holding_cases()
    undecided = [f"{x.label} ({x.note})" for x in c.cases if x.holds is None]
    if c.outcome == "missing":
        headline, details = c.sentence, []
    else:
        def short(labels):
            many = f"the {len(labels)} cases listed in the fold below"
            return ", ".join(labels) if len(labels) <= NAMED_CASES else many
        headline = c.sentences[c.outcome].format(k=c.n_holds, n=c.n_cases, failing=short(failing),
                                                 holding=short(holding))
        details = [c.seeds_sentence()] + (["Undecided: " + "; ".join(undecided) + "."] if undecided else []) + c.notes
    summary = f"{c.n_holds} of {c.n_cases} decided cases hold"
    if failing and holding:
        summary += f"; the {len(failing)} exception{'s' if len(failing) > 1 else ''},"
    summary += " every case's numbers and seeds" if failing and holding else "; every case's numbers and seeds"
    headers = [column_header(k) for k in (c.cases[0].numbers if c.cases else {})]
    return {"headline": headline, "summary": summary, "failing": failing, "holding": holding,
            "details": [d for d in details if d], "headers": headers}


def render_html(**context) -> str:
    """The report's template rendered with ``context`` (every variable the template reads; the optional
    ones of issue 21 default to empty)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("normlab", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.filters["cell"] = cell
    defaults = {"headline": None, "effective_lr": pd.DataFrame(), "effective_lr_text": "", "rules": [],
                "groups": verdict.GROUPS, "study_notes": [], "fmt": fmt, "bottom_line": [], "question_figures": {},
                "scope": [], "feeds": feeds_table(), "claim_view": claim_view, "target_loss": np.nan}
    return env.get_template("report.html.j2").render(**{**defaults, **context})


def bottom_line(by_question: dict) -> list[dict]:
    """The report's bottom line: [{"text": sentence, "anchor": the section it links to, ...}], in order: 2-5
    plain sentences, each chosen by its claims' measured outcome (``verdict.bottom_line.SENTENCES``, the one
    table of which claims feed which sentence)."""
    return bottom_line_sentences(by_question)


def bottom_line_text(lines: list[dict], report_path) -> str:
    """The bottom line as plain text for the terminal: one sentence per line, then the report's path."""
    return "".join(f"- {line['text']}\n" for line in lines) + f"Report: {report_path}\n"


def write_figure_files(figs: dict, headline: dict | None, folder, question_figures: dict | None = None) -> None:
    """Every figure of the report as ``<folder>/<name>.png`` and their captions as ``<folder>/captions.json``
    ({file name: caption}): ``headline.png``, then ``q<N>-<k>.png`` (each question's figures), then
    ``<dataset>-<kk>.png`` (kk from 01, in the report's order, so that file names sort in it)."""
    import base64

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = ([("headline", headline)] if headline else []) + [
        (f"{q}-{k}", f) for q, fs in (question_figures or {}).items() for k, f in enumerate(fs, 1)] + [
        (f"{ds}-{k:02d}", f) for ds, fs in figs.items() for k, f in enumerate(fs, 1)]
    captions = {}
    for name, f in items:
        (folder / f"{name}.png").write_bytes(base64.b64decode(f["src"].split(",", 1)[1]))
        captions[f"{name}.png"] = f["caption"]
    io.write_text(folder / "captions.json", json.dumps(captions, indent=1, sort_keys=True) + "\n")


def build_report(table_paths: dict, provenance_paths: list, config: dict, out, benchmarks_dir="benchmarks",
                 spectra_paths=(), contour_paths=(), workers: int = 1, bottom_line_out=None,
                 figures_dir=None) -> None:
    """Render the report to ``out`` from the tables (paths by kind), the datasets' provenance and the
    spectral densities; its wall time per rule from the study's benchmark files under ``benchmarks_dir``;
    ``workers`` processes draw the figures (``figure_tasks.render_figures``). ``bottom_line_out``: also write
    the bottom line as plain text there (``bottom_line_text``); ``figures_dir``: also write every figure there
    as a PNG file with its caption (``write_figure_files``)."""
    t = load_tables(table_paths)
    spectra = figure_tasks.load_spectra(spectra_paths)
    grids = figure_tasks.load_contour_grids(contour_paths)
    by_question = verdict.claims_by_question(t)
    answer = verdict.summary(by_question)  # every claim, the slide's first (the rules table's order)
    lines = bottom_line(by_question)
    datasets = sorted(t["variants"]["dataset"].unique())
    provenance = {Path(p).stem: json.loads(Path(p).read_text()) for p in provenance_paths}
    runs = t["runs"]
    divergence = {ds: {"diverged": int(g["diverged"].sum()), "runs": len(g),
                       "by_variant": g.groupby("variant")["diverged"].sum().astype(int).to_dict()}
                  for ds, g in runs.groupby("dataset")}
    factor = config.get("sweep", {}).get("divergence_factor", 1000.0)
    runs_per_variant = runs.groupby(["dataset", "variant"]).size().to_dict()
    effective = verdict.effective_lr_table(t["gradients"])
    figs, headline, question_figs = _all_figures(datasets, t, spectra, grids, workers)
    html = render_html(divergence=divergence, divergence_factor=factor, bottom_line=lines,
        question_figures=question_figs, scope=scope_note(config, provenance),
        target_loss=config.get("sweep", {}).get("target_loss", np.nan),
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
    if figures_dir is not None:
        write_figure_files(figs, headline, figures_dir, question_figs)
    if bottom_line_out is not None:
        io.write_text(bottom_line_out, bottom_line_text(lines, out))


def _all_figures(datasets: list[str], t: dict, spectra: dict, grids: dict,
                 workers: int) -> tuple[dict[str, list[dict]], dict | None, dict[str, list[dict]]]:
    """Every figure of the report, drawn in one pool so the workers stay busy: (each dataset's figures, the
    headline figure (None when the study has nothing to show), each question's figures)."""
    seed = figure_tasks.display_seed(t)
    tasks = {ds: figure_tasks.dataset_figure_tasks(ds, t, spectra, grids) for ds in datasets}
    head = figure_tasks.headline_figure_task(t, grids, seed)
    questions = figure_tasks.question_figure_tasks(t, grids, spectra, seed)
    flat = ([head[1]] if head else []) + [task for q in questions for _, task in questions[q]] + [
        task for ds in datasets for _, task in tasks[ds]]
    pngs = iter(figure_tasks.render_figures(flat, workers))
    headline = ({"caption": head[0], "alt": "The headline figure: " + head[0], "src": figures.data_uri(next(pngs))}
                if head else None)
    question_figs = {q: [{"caption": c, "alt": f"{q.upper()}: {c}", "src": figures.data_uri(next(pngs))}
                         for c, _ in questions[q]] for q in questions}
    figs = {ds: [{"caption": c, "alt": f"{ds}: {c}", "src": figures.data_uri(next(pngs))} for c, _ in tasks[ds]]
            for ds in datasets}
    return figs, headline, question_figs

"""The report's pieces that need no workflow run: the palette covers every arm, projected slices are drawn and
labelled as distances orthogonal to the unit's weights, the headline figure (the slide on the depth-0 model)
is built from depth-0 slices only, and the template shows the headline first, the claims under their group
headings, the invariant sharpness, the effective learning rate and, in the methods, every claim's rule and
threshold and the configured running-statistics momentum."""

import html as htmllib
import itertools
import re

import numpy as np
import pandas as pd
import pytest

from normlab import figure_tasks as FT
from normlab import figures as F
from normlab import report as R
from normlab import verdict as V
from normlab.spec import NORMS
from normlab.variants import INPUTS, variant_grid


def test_the_palette_covers_every_arm():
    arms = {f"{v.input}-{v.norm}" for v in variant_grid(INPUTS, NORMS, [0, 2], batchnorm_input_norms=NORMS)}
    assert arms == set(F.PALETTE)  # layer norm, batch norm on the inputs, depth 0 (its input's arm) included
    assert len(set(F.PALETTE.values())) == len(F.PALETTE)


def panel(projected=False, ratio=3.0, **flags):
    a = np.linspace(-1.0, 1.0, 5)
    return {"alphas": a, "betas": a, "loss": np.add.outer(a ** 2, 9 * a ** 2) + 1.0, "origin": np.array([10.0, -10.0]),
            "ratio": ratio, "projected": projected, **flags}


def test_projected_slices_are_drawn_as_distances_orthogonal_to_the_weights():
    x, y = F.slice_axes(panel(projected=True))
    assert x[0] == -1.0 and y[-1] == 1.0  # distances from the checkpoint: the origin is not added
    x, y = F.slice_axes(panel())
    assert x[0] == 9.0 and y[-1] == -9.0  # the weights' own values
    assert F.axis_labels(panel(projected=True)) == ("distance along u1 \u22a5 w", "distance along u2 \u22a5 w")
    assert F.axis_labels(panel()) == ("w from largest-RMS input", "w from smallest-RMS input")
    png = F.contour_grid([[panel(projected=True), panel(censored=True)], [None, panel(flat_direction=True)]],
                         ["standardize-batchnorm-d2", "raw-none-d2"], ["layer 1", "layer 2"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_max_stable_lr_figure_with_depth_0():
    v = pd.DataFrame([{"input": i, "norm": n, "depth": d, "max_stable_lr": lr}
                      for (i, n, d), lr in ((("raw", "none", 0), 1e-6), (("raw", "none", 2), 0.1),
                                            (("standardize", "none", 0), 1.0), (("batchnorm", "none", 2), 0.5),
                                            (("standardize", "layernorm", 2), np.nan))])
    assert F.max_stable_lr(v)[:4] == b"\x89PNG"


def contour_rows():
    """contours.csv rows of the lecture slices: depth 0 (raw, standardized, BN on the inputs) and depth 2, seeds
    0 and 1, checkpoints init and end, best and common runs."""
    rows = []
    for (inp, depth), seed, tag, run in itertools.product(
            (("raw", 0), ("standardize", 0), ("batchnorm", 0), ("raw", 2), ("standardize", 2)), (0, 1),
            ("init", "end"), ("best", "common")):
        rows.append({"dataset": "lecture", "variant": f"{inp}-none-d{depth}", "input": inp, "norm": "none",
                     "depth": depth, "run": run, "seed": seed, "checkpoint": tag, "slice": "lecture",
                     "scope": "layer1", "axis_ratio_ggn": 1000.0 if inp == "raw" else 1.0, "censored": False,
                     "flat_direction": False, "degenerate": False, "projected": False})
    return pd.DataFrame(rows)


def grids_for(rows: pd.DataFrame) -> dict:
    grids = {}
    for r in rows.itertuples():
        key = f"{r.run}-s{r.seed}-{r.checkpoint}/lecture.{r.scope}."
        p = panel()
        grids.setdefault((r.dataset, r.variant), {}).update({key + k: p[k] for k in ("alphas", "betas", "loss",
                                                                                       "origin")})
    return grids


def test_slide_figure_task_reads_the_depth_0_slices_at_init():
    rows = contour_rows()
    caption, (fn, (panels, row_labels, col_labels)) = FT.slide_figure_task({"contours": rows}, grids_for(rows), 1)
    assert fn is F.contour_grid and row_labels == ["lecture"]
    assert col_labels == ["raw inputs", "standardized inputs", "BN on the raw inputs"]
    assert [p["ratio"] for p in panels[0]] == [1000.0, 1.0, 1.0]
    assert "no hidden layer" in caption and "seed 1" in caption
    assert fn(panels, row_labels, col_labels)[:4] == b"\x89PNG"
    # without a depth-0 slice (or its grid) there is no headline figure
    assert FT.slide_figure_task({"contours": rows[rows["depth"] > 0]}, grids_for(rows), 1) is None
    assert FT.slide_figure_task({"contours": rows}, {}, 1) is None
    assert FT.slide_figure_task({}, grids_for(rows), 1) is None


def test_panel_carries_the_projected_flag():
    rows = contour_rows().assign(projected=True)
    key = "best-s0-init/lecture.layer1."
    p = FT._panel(grids_for(rows)[("lecture", "raw-none-d0")], key, rows.iloc[:1])
    assert p["projected"] is True and p["ratio"] == 1000.0


def slide_claims():
    rows = contour_rows()
    return {"q1": [], "q2": [V.slide_claim(rows), V.lecture_slice_claim(rows, "init")],
            "q3": [], "q4": [], "q5": [V.input_bn_slice_claim(rows, "init")]}


def render(by_question, **extra):
    context = dict(divergence={}, divergence_factor=1000.0, runs_per_variant={}, title="t",
                   answer=V.summary(by_question), by_question=by_question, questions=V.QUESTIONS, edge=pd.DataFrame(),
                   datasets=[], provenance={}, variants=pd.DataFrame(), figures={},
                   methods={"versions": {}, "commit": "x", "python": "3", "config": "", "wall": []})
    return R.render_html(**{**context, **extra})


def test_the_headline_opens_the_summary_and_q2():
    by_q = slide_claims()
    headline = {"src": "data:image/png;base64,AAAA", "caption": "The slide, reproduced.", "alt": "slide"}
    html = render(by_q, headline=headline)
    answer = html[html.index('<section id="answer">'):html.index('<section id="q1">')]
    sentences = htmllib.unescape(re.sub(r"<[^>]+>", "", answer))
    first = sentences.index("At initialization (W = 0), on the slide's own model")
    assert first < sentences.index("At initialization, the lecture's picture")
    assert '<figure id="slide"><img src="data:image/png;base64,AAAA"' in answer
    q2 = html[html.index('<section id="q2">'):html.index('<section id="q3">')]
    assert q2.index("The slide itself: the model with no hidden layer") < q2.index('id="claim-slide"') \
        < q2.index("<h3>The networks (one or more hidden layers)</h3>") < q2.index('id="claim-lecture_slice_init"')
    assert "<h3>The networks" not in html[html.index('<section id="q1">'):html.index('<section id="q2">')]
    q5 = html[html.index('<section id="q5">'):]
    assert "<h3>Batch norm on the raw inputs instead of standardizing them</h3>" in q5
    assert '<figure id="slide">' not in render(by_q)


def test_methods_list_every_claim_with_its_rule_and_thresholds():
    by_q = slide_claims()
    claims = [c for _, c in V.summary(by_q)]
    html = render(by_q, rules=V.rules_table(claims), study_notes=R.study_notes({"sweep": {
        "running_stats_momentum": 0.25}, "analysis": {"smoothness": {"step_multipliers": [0.5, 1, 2, 4]}}}))
    methods = html[html.index('<section id="methods">'):]
    for c in claims:
        assert f'<a href="#claim-{c.key}">{c.key}</a>' in methods
    assert "LECTURE_ROUND = 2.5 (resolution 1.001" in methods and "LECTURE_RATIO = 2 (resolution 1.001" in methods
    assert "m = 0.25 (<code>sweep.running_stats_momentum</code>)" in methods
    assert "left out of the common learning rate" in methods and "c in {0.5, 1, 2, 4}" in methods
    rules = {r["key"]: r for r in V.rules_table(claims)}
    assert rules["input_bn_slice_init"]["thresholds"].startswith("LECTURE_RATIO = 2 (resolution 1.001: GGN axis ratio")
    assert rules["slide"]["rule"] == claims[0].rule and rules["slide"]["comparison"].startswith("checkpoint init")


def test_every_threshold_is_stated_by_a_claim_rule_text():
    # a claim's rule text names its threshold's value (so the methods table states it)
    by_rule = {}
    for t in V.THRESHOLDS:
        by_rule.setdefault(t.rule, []).append(t)
    assert {"slide", "smoothness_beta", "smoothness_loss", "converse_outcome", "converse_slice", "input_bn_outcome",
            "input_bn_slice", "input_bn_mode_gap"} <= set(by_rule)
    assert V.SMOOTH_RATIO > V.SMOOTHNESS_RESOLUTION and V.MATCH_RATIO > V.LOSS_RESOLUTION
    assert V.MODE_GAP_RATIO > V.LOSS_RESOLUTION


@pytest.mark.parametrize("with_tables", [True, False])
def test_q5_shows_the_invariant_sharpness_and_the_effective_learning_rate(with_tables):
    edge = pd.DataFrame([{"dataset": "a", "variant": v, "lr": 0.5, "lambda_max": 4.0, "two_over_lr": 4.0,
                          "ratio": 1.0, "ratio_min": 1.0, "ratio_max": 1.0, "n_seeds": 1, "lambda_max_invariant": inv}
                         for v, inv in (("standardize-none-d2", np.nan), ("standardize-batchnorm-d2", 123.0))])
    eff = pd.DataFrame([{"dataset": "a", "variant": "standardize-layernorm-d2", "run": "best", "lr": 0.5,
                         "effective_lr": 0.05, "effective_lr_min": 0.01, "effective_lr_max": 0.1, "ratio": 0.1,
                         "weight_norm_init": 1.0, "weight_norm_end": 3.16, "n_seeds": 3}])
    by_q = {q: [] for q in V.QUESTIONS}
    if not with_tables:
        edge, eff = edge.iloc[:0], eff.iloc[:0]
    html = render(by_q, edge=edge, effective_lr=eff, effective_lr_text=V.effective_lr_sentence(eff))
    q5 = html[html.index('<section id="q5">'):html.index('<section id="methods">')]
    assert ("<th>scale-invariant lambda_max</th>" in q5) == with_tables
    assert ("<td>no invariant weights</td>" in q5) == with_tables and ("<td>123</td>" in q5) == with_tables
    assert ("<h3>Effective learning rate of scale-invariant weights</h3>" in q5) == with_tables
    if with_tables:
        assert "lr / ||w||^2 was 0.1 to 0.1 times the nominal lr over the 1 normalized variant " in q5
        assert "<td>0.05</td><td>0.01 to 0.1</td><td>0.1</td><td>1</td><td>3.16</td><td>3</td>" in q5

"""The report's pieces that need no workflow run: the palette covers every arm, projected slices are drawn and
labelled as distances orthogonal to the unit's weights, the headline figure (the slide on the depth-0 model)
is built from depth-0 slices only, and the template shows the headline first, the claims under their group
headings, the invariant sharpness, the effective learning rate and, in the methods, every claim's rule and
threshold and the configured running-statistics momentum."""

import html as htmllib
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from normlab import contour_figures as CF
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
    x, y = CF.slice_axes(panel(projected=True))
    assert x[0] == -1.0 and y[-1] == 1.0  # distances from the checkpoint: the origin is not added
    x, y = CF.slice_axes(panel())
    assert x[0] == 9.0 and y[-1] == -9.0  # the weights' own values
    assert CF.axis_labels(panel(projected=True)) == ("distance along u1 \u22a5 w", "distance along u2 \u22a5 w")
    assert CF.axis_labels(panel()) == ("w from largest-RMS input", "w from smallest-RMS input")
    png = CF.contour_grid([[panel(projected=True), panel(censored=True)], [None, panel(flat_direction=True)]],
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
    assert fn is CF.contour_grid and row_labels == ["lecture"]
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
    html = render(by_q, headline=headline, bottom_line=R.bottom_line(by_q))
    answer = html[html.index('<section id="answer">'):html.index('<section id="q1">')]
    sentences = htmllib.unescape(re.sub(r"<[^>]+>", "", answer))
    first = sentences.index("Input normalization does round the contours of the first layer's weights W[1]")
    assert first < sentences.index("and the networks' layer-1 slice in 1 of 1 cases at initialization")
    assert '<figure id="headline"><img src="data:image/png;base64,AAAA"' in answer
    q2 = html[html.index('<section id="q2">'):html.index('<section id="q3">')]
    assert q2.index("The slide itself: the model with no hidden layer") < q2.index('id="claim-slide"') \
        < q2.index("<h3>The networks (one or more hidden layers)</h3>") < q2.index('id="claim-lecture_slice_init"')
    assert "<h3>The networks" not in html[html.index('<section id="q1">'):html.index('<section id="q2">')]
    q5 = html[html.index('<section id="q5">'):]
    assert "<h3>Batch norm on the raw inputs instead of standardizing them</h3>" in q5
    assert '<figure id="headline">' not in render(by_q)


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


# ------------------------------------------------------------------------------------- the bottom line (issue 22)

def claim(key, holds, depth=2, comparison="init", group=""):
    """A claim over cases set0, set1, ... whose outcomes are ``holds`` (True / False / None: undecided)."""
    cases = [V.Case(f"set{i}", depth, h, {"ratio_no_bn": 2.0, "censored_raw": False}, seeds={0: h}, effects={0: 2.0})
             for i, h in enumerate(holds)]
    sentences = {o: f"{key} {o} {{k}} of {{n}}; not in: {{failing}}." for o in ("all", "none", "mixed", "missing")}
    return V.Claim(key, "the rule", cases, sentences, comparison=comparison, group=group)


OUTCOMES = {"all": [True] * 4, "none": [False] * 4, "mixed": [True, True, True, False], "missing": [None] * 4}


def story(outcomes: dict, distractors=()) -> dict:
    """by_question with the claims ``{key: outcome}`` in the questions the real study puts them in."""
    where = {"slide": "q2", "lecture_slice_init": "q2", "lecture_slice_end": "q2", "hidden_spread_matched": "q3",
             "hidden_spread_end": "q3", "hidden_slice_init": "q3", "hidden_slice_end": "q3",
             "smoothness_beta_batchnorm_end": "q3", "gradient_spread_end": "q4", "learning_rate": "q5",
             "outcome_best_lr": "q5", "converse_outcome_none": "q5", "input_bn_outcome": "q5"}
    by_q = {q: [] for q in V.QUESTIONS}
    for key, outcome in [*outcomes.items(), *distractors]:
        comparison = key.rsplit("_", 1)[-1] if key.rsplit("_", 1)[-1] in V.PHASE else "best_lr"
        by_q[where.get(key, "q1")].append(claim(key, OUTCOMES[outcome], depth=None if key == "slide" else 2,
                                                comparison=comparison))
    return by_q


def lines(by_q) -> dict:
    return {line["name"]: line for line in R.bottom_line(by_q)}


@pytest.mark.parametrize("outcome, words", [
    ("all", "Input normalization does round the contours of the first layer's weights W[1]: on the slide's own model "
            "(no hidden layer), standardizing made them round in 4 of 4 datasets."),
    ("none", "Input normalization did not round the contours of the first layer's weights W[1]: on the slide's own "
             "model (no hidden layer), standardizing made them round in 0 of 4 datasets \N{EM DASH} contrary to the "
             "slide."),
    ("mixed", "Input normalization rounds the contours of the first layer's weights W[1], but not always: on the "
              "slide's own model (no hidden layer), standardizing made them round in 3 of 4 datasets (not in set3) "
              "\N{EM DASH} so the slide's picture holds only in part."),
])
def test_the_first_sentence_flips_with_the_slide_outcome(outcome, words):
    assert lines(story({"slide": outcome}))["first_layer"]["text"] == words
    assert lines(story({"slide": outcome}))["first_layer"]["anchor"] == "q2"


def test_the_first_sentence_gives_the_slide_exceptions_reasons():
    by_q = story({"slide": "mixed"})
    slide = next(c for c in by_q["q2"] if c.key == "slide")
    slide.reasons = {"set3": "whose two standardized inputs are correlated, c = 0.948", "set0": "a distractor"}
    assert ("standardizing made them round in 3 of 4 datasets (not in set3, whose two standardized inputs are "
            "correlated, c = 0.948) \N{EM DASH}") in lines(by_q)["first_layer"]["text"]
    # two exceptions, one with a reason: named apart by a semicolon
    slide.cases[0].holds = False
    assert "in 2 of 4 datasets (not in set0, a distractor; set3, whose" in lines(by_q)["first_layer"]["text"]
    slide.reasons = {}
    assert "in 2 of 4 datasets (not in set0, set3) \N{EM DASH}" in lines(by_q)["first_layer"]["text"]


def test_a_missing_claim_drops_its_clause_and_an_empty_sentence_is_left_out():
    by_q = story({"slide": "missing", "lecture_slice_init": "all", "hidden_slice_end": "none"})
    first = lines(by_q)["first_layer"]
    assert first["text"] == "Standardizing made the networks' layer-1 slice round in 4 of 4 cases at initialization."
    assert first["claims"] == ["lecture_slice_init"]
    deeper = lines(by_q)["deeper_layers"]["text"]
    assert deeper.startswith("Batch norm made the deeper layers' slices of J rounder in 0 of 4 cases after training")
    assert deeper.endswith("\N{EM DASH} contrary to the textbook story.")
    assert set(lines(by_q)) == {"first_layer", "deeper_layers"}
    nothing = R.bottom_line(story({"slide": "missing"}))
    assert len(nothing) == 1 and "do not answer the thread yet" in nothing[0]["text"]


def test_each_checkpoint_is_counted_and_mixed_outcomes_say_the_story_holds_in_part():
    text = lines(story({"hidden_slice_init": "all", "hidden_slice_end": "mixed"}))["deeper_layers"]["text"]
    assert text == ("Batch norm made the deeper layers' slices of J rounder in 4 of 4 cases at initialization and 3 of "
                    "4 after training \N{EM DASH} so the textbook story holds only in part.")


def test_a_clause_that_leads_when_the_one_before_it_is_missing_says_whom_it_is_about():
    alone = lines(story({"outcome_best_lr": "none"}))["gains"]["text"]
    assert alone == ("With standardized inputs, training without batch norm never ended clearly worse (0 of 4 cases): "
                     "the gains in final loss were marginal.")
    assert lines(story({"gradient_spread_end": "none"}))["smoothness"]["text"] == (
        "Batch norm did not even out the gradient magnitudes across layers (0 of 4 cases after training) "
        "\N{EM DASH} contrary to Santurkar et al. 2018.")
    both = lines(story({"smoothness_beta_batchnorm_end": "all", "gradient_spread_end": "all"}))["smoothness"]["text"]
    assert ", and it evened out the gradient magnitudes across layers in 4 of 4 cases" in both
    after = lines(story({"learning_rate": "all", "outcome_best_lr": "none"}))["gains"]["text"]
    assert after.startswith("With standardized inputs, batch norm raised the largest stable learning rate")
    assert ", but training without it never ended clearly worse (0 of 4 cases)" in after


@pytest.mark.parametrize("matched, end, expected, absent", [
    ("all", "none", "Input normalization does not reach the deeper layers: with standardized inputs, batch norm "
                    "evened out the scales of the inputs of layers 2 and up in 4 of 4 cases at matched loss.",
     "after training"),
    ("missing", "none", "it evened out the scales of the inputs of layers 2 and up in 0 of 4 cases after training",
     "matched"),
])
def test_the_first_present_claim_feeds_a_first_pick_clause(matched, end, expected, absent):
    text = lines(story({"hidden_spread_matched": matched, "hidden_spread_end": end}))["deeper_layers"]["text"]
    assert expected in text and absent not in text


def test_distractor_claims_do_not_feed_a_sentence():
    real = {"slide": "all", "hidden_spread_matched": "none", "smoothness_beta_batchnorm_end": "none",
            "learning_rate": "all", "outcome_best_lr": "mixed", "converse_outcome_none": "all"}
    distractors = [("hidden_spread_layernorm_matched", "all"), ("smoothness_beta_layernorm_end", "all"),
                   ("learning_rate_layernorm", "none"), ("converse_outcome_batchnorm", "none"),
                   ("input_conditioning_matched", "all"), ("lecture_slice", "none"), ("slide_extra", "none")]
    plain, noisy = R.bottom_line(story(real)), R.bottom_line(story(real, distractors))
    assert plain == noisy
    assert all(k in real for line in noisy for k in line["claims"])
    gains = lines(story(real))["gains"]["text"]
    assert gains == ("With standardized inputs, batch norm raised the largest stable learning rate 2x or more in 4 of "
                     "4 cases, but training without it ended clearly worse (final loss 10x or more) in only 3 of 4 "
                     "cases (not in set3 d2).")
    assert lines(story(real))["smoothness"]["text"].endswith("\N{EM DASH} contrary to Santurkar et al. 2018.")


@pytest.mark.parametrize("outcome, contrary", [("all", True), ("none", False), ("mixed", None)])
def test_the_converse_contradicts_the_quote_when_bn_on_raw_inputs_is_worse(outcome, contrary):
    text = lines(story({"converse_outcome_none": outcome}))["converse"]["text"]
    assert ("contrary to the thread's quote" in text) == bool(contrary)
    assert ("holds only in part" in text) == (contrary is None)
    assert text.startswith({"all": "Batch norm does not replace", "none": "Batch norm could stand in",
                            "mixed": "Batch norm does not reliably replace"}[outcome])


@pytest.mark.parametrize("outcomes, name, joined, verdict", [
    # the lead agrees with the quote (batch norm in the network stood in), batch norm on the inputs did not
    ({"converse_outcome_none": "none", "input_bn_outcome": "none"}, "converse",
     ", but batch norm on the raw inputs themselves never matched standardizing them (0 of 4 cases)", "in part"),
    # both against the quote: no "but", and the sentence says so
    ({"converse_outcome_none": "all", "input_bn_outcome": "none"}, "converse",
     "; batch norm on the raw inputs themselves never matched standardizing them (0 of 4 cases)", "contrary"),
    # both with the quote
    ({"converse_outcome_none": "none", "input_bn_outcome": "all"}, "converse",
     "; batch norm on the raw inputs themselves matched standardizing them in 4 of 4 cases", "agrees"),
    ({"slide": "all", "lecture_slice_end": "none"}, "first_layer",
     ", but the networks' layer-1 slice in 0 of 4 cases after training", "in part"),
    ({"slide": "none", "lecture_slice_end": "none"}, "first_layer",
     ", and the networks' layer-1 slice in 0 of 4 cases after training", "contrary"),
    ({"smoothness_beta_batchnorm_end": "all", "gradient_spread_end": "none"}, "smoothness",
     ", but it did not even out the gradient magnitudes across layers (0 of 4 cases after training)", "in part"),
    ({"smoothness_beta_batchnorm_end": "none", "gradient_spread_end": "none"}, "smoothness",
     ", nor did it even out the gradient magnitudes across layers (0 of 4 cases after training)", "contrary"),
    ({"smoothness_beta_batchnorm_end": "none", "gradient_spread_end": "all"}, "smoothness",
     ", but it evened out the gradient magnitudes across layers in 4 of 4 cases after training", "in part"),
    ({"hidden_spread_matched": "none", "hidden_slice_end": "all"}, "deeper_layers",
     ", but it made their slices of J rounder in 4 of 4 cases after training", "in part"),
    ({"hidden_spread_matched": "mixed", "hidden_slice_end": "none"}, "deeper_layers",
     ", and it made their slices of J rounder in 0 of 4 cases after training", "in part"),
])
def test_clauses_pointing_opposite_ways_join_with_but_and_the_story_holds_in_part(outcomes, name, joined, verdict):
    distractors = [("converse_outcome_batchnorm", "all"), ("smoothness_beta_layernorm_end", "all"),
                   ("hidden_spread_layernorm_matched", "none")]
    line = lines(story(outcomes, distractors))[name]
    assert joined in line["text"]
    assert line["agreement"] == verdict
    from normlab.verdict import bottom_line as B
    s = next(s for s in B.SENTENCES if s.name == name)
    ending = {"in part": f" \N{EM DASH} {s.in_part}.", "contrary": f" \N{EM DASH} {s.contrary}.", "agrees": "."}
    assert line["text"].endswith(ending[verdict])
    assert "\N{EM DASH}" not in line["text"] or verdict != "agrees"


@pytest.mark.parametrize("stands, verdict", [
    (["contrary", "contrary"], "contrary"), (["agrees", "agrees"], "agrees"), (["agrees", "contrary"], "in part"),
    (["contrary", "agrees"], "in part"), (["contrary", "in part"], "in part"), (["agrees", ""], "agrees"),
    (["", "contrary"], "contrary"), (["", ""], ""), ([], ""),
])
def test_a_sentence_contradicts_its_story_only_when_every_clause_does(stands, verdict):
    from normlab.verdict import bottom_line as B
    assert B.sentence_verdict(stands) == verdict


def test_the_feeds_table_lists_every_claim_of_the_bottom_line_once_and_the_methods_show_it():
    from normlab.verdict import bottom_line as B
    keys = [k for r in B.feeds_table() for k in r["keys"]]
    assert len(keys) == len(set(keys)) and {"slide", "hidden_spread_matched", "converse_outcome_none"} <= set(keys)
    assert 2 <= len(B.SENTENCES) <= 5
    html = render(story({"slide": "all"}))
    methods = html[html.index('<section id="methods">'):]
    assert '<h3 id="bottom-line-table">' in methods
    for k in keys:
        assert f'<a href="#claim-{k}">{k}</a>' in methods


def test_the_answer_comes_first_then_the_contents_and_each_question_opens_with_its_figure():
    by_q = story({"slide": "all", "learning_rate": "none"})
    fig = {"src": "data:image/png;base64,AAAA", "caption": "c", "alt": "a"}
    html = render(by_q, headline=fig, bottom_line=R.bottom_line(by_q),
                  question_figures={q: [fig] for q in V.QUESTIONS})
    assert html.index("<h1>") < html.index('<section id="answer">') < html.index('<ul id="bottom-line">') \
        < html.index('<figure id="headline">') < html.index("<nav") < html.index('<section id="q1">')
    bottom = html[html.index('<ul id="bottom-line">'):html.index("</ul>", html.index('<ul id="bottom-line">'))]
    assert bottom.count("<li>") == 2 and '<a href="#q2">' in bottom and '<a href="#q5">' in bottom
    for q in V.QUESTIONS:
        section = html[html.index(f'<section id="{q}">'):]
        after_h2 = section[section.index("</h2>") + 5:].lstrip()
        assert after_h2.startswith('<figure class="question-figure"><img src="data:image/png;base64,AAAA"')


def test_long_case_lists_are_folded_and_headers_are_words():
    c = claim("hidden_spread_init", [True, False, False, False, False], group="")
    by_q = {q: [] for q in V.QUESTIONS} | {"q3": [c]}
    html = render(by_q)
    block = html[html.index('id="claim-hidden_spread_init"'):]
    block = htmllib.unescape(block[:block.index("</div>")])
    assert "<strong>hidden_spread_init mixed 1 of 5; not in: the 4 cases listed in the fold below.</strong>" in block
    assert "<details><summary>1 of 5 decided cases hold; the 4 exceptions, every case's numbers and seeds</summary>" \
        in block
    assert "<p>Not in: set1 d2, set2 d2, set3 d2, set4 d2.</p>" in block
    assert block.index("<details>") < block.index("<table>")
    assert "<th>axis ratio without BN</th><th>censored, raw</th>" in block and "<td>no</td>" in block
    short = claim("hidden_spread_init", [True, False, True])
    assert R.claim_view(short)["headline"] == "hidden_spread_init mixed 2 of 3; not in: set1 d2."
    assert R.column_header("max_stable_lr_no_bn_upper") == "max stable LR without BN (bracket top)"
    assert R.column_header("final_loss_raw_bn") == "final loss, raw inputs with BN"
    assert R.column_header("coupling_standardized") == "GGN coupling c, standardized"


def study_config(**changes):
    cfg = {"datasets": {"lecture": {}, "wine": {}}, "variants": {"inputs": ["raw", "standardize"],
           "norms": ["none", "batchnorm"], "depths": [0, 2, 4], "width": 64, "activation": "relu", "eps": 1e-5},
           "sweep": {"optimizer": "sgd", "momentum": 0.9, "steps": 600, "batch_size": 64, "seeds": [0, 1, 2],
                     "n_lr": 13, "lr_min": 1e-4, "lr_max": 10.0, "running_stats_momentum": 0.1},
           "analysis": {"max_examples": 512}, "resources": {"train_threads": 1}}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = cfg
        for k in parents:
            node = node[k]
        node[leaf] = value
    return cfg


def test_the_scope_note_follows_the_config():
    base = " ".join(R.scope_note(study_config(), {"lecture": {"rows": 200}, "wine": {"rows": 178}}))
    assert "width 64 with relu activations and 2 and 4 hidden layers, and the slide's model" in base
    assert "Only plain SGD (no momentum)" in base and "600 steps of mini-batches of 64 rows" in base
    assert "Only 2 small tabular datasets (178 to 200 rows): lecture and wine" in base and "3 seeds" in base
    assert "Only batch norm after each hidden layer" in base
    deeper = " ".join(R.scope_note(study_config(variants__depths=[2, 8])))
    assert "2 and 8 hidden layers:" in deeper and "slide's model" not in deeper
    momentum = " ".join(R.scope_note(study_config(sweep__optimizer="momentum", sweep__momentum=0.5)))
    assert "Only SGD with heavy-ball momentum 0.5" in momentum
    assert "Only Adam" in " ".join(R.scope_note(study_config(sweep__optimizer="adam")))
    assert "1 seed per variant" in " ".join(R.scope_note(study_config(sweep__seeds=[7])))
    # which runs the slices and spectra are of: the best run by default, the common one where the config adds it
    assert "checkpoints of each variant's best-learning-rate run," in base
    both = " ".join(R.scope_note(study_config(analysis__curvature={"runs": ["common", "best"]})))
    assert "of each variant's best-learning-rate and the common-learning-rate runs," in both


@pytest.mark.parametrize("optimizer, printed", [("sgd", False), ("adam", False), ("momentum", True)])
def test_settings_without_effect_are_not_printed_as_used(optimizer, printed):
    used, unused = R.config_audit(study_config(sweep__optimizer=optimizer))
    assert ("momentum" in used["sweep"]) == printed
    assert any(u["key"] == "sweep.momentum" for u in unused) != printed
    assert "running_stats_momentum" not in used["sweep"]  # no batch norm on the inputs in this study
    assert "resources" not in used and used["sweep"]["optimizer"] == optimizer
    with_input_bn = R.config_audit(study_config(variants__inputs=["raw", "batchnorm"]))[0]
    assert with_input_bn["sweep"]["running_stats_momentum"] == 0.1
    html = render(story({}), methods={"versions": {}, "commit": "x", "python": "3", "wall": [],
                                      **R.methods(study_config(), {}, Path("/nonexistent"))})
    methods = " ".join(htmllib.unescape(re.sub(r"<[^>]+>", "", html[html.index('<section id="methods">'):])).split())
    assert '"momentum"' not in methods and "sweep.momentum: 0.9 (unused: optimizer sgd takes no momentum" in methods
    assert "which is what the optimizer sees" not in methods and "mini-batches of 64 rows" in methods
    assert "first 512 training rows" in methods


def test_the_terminal_gets_the_bottom_line_and_the_path():
    text = R.bottom_line_text(R.bottom_line(story({"slide": "all"})), "reports/r.html")
    assert text.startswith("- Input normalization does round") and text.endswith("Report: reports/r.html\n")

"""The report's figures on small synthetic tables (no workflow run): a contour panel names its weights and
writes its axis ratio (censored as '> bound', a flat direction as the symmetry, never 'singular') beside a
colorbar; the headline task picks the depth-0 raw vs standardized slides and the deeper layer's no-BN vs BN
slices of the display seed's best-LR run, not the distractor rows (other seeds, checkpoints, runs, depths,
datasets); the question tasks cover q1..q5 and draw without an exception on empty or missing tables; the
bytes are deterministic."""

import io
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from normlab import contour_figures as CF  # noqa: E402
from normlab import figure_tasks as FT  # noqa: E402
from normlab import figures as F  # noqa: E402
from normlab import verdict as V  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def panel(**extra):
    a = np.linspace(-1.0, 1.0, 5)
    return {"alphas": a, "betas": a, "loss": np.add.outer(a ** 2, 9 * a ** 2) + 1.0, "origin": np.array([0.5, -0.5]),
            "ratio": 3.0, "layer": 2, "unit": 17, "input_hi": 4, "input_lo": 9, "rms_hi": 3.2, "rms_lo": 0.011,
            **extra}


# ---- labels ---------------------------------------------------------------------------------------------------

def test_ratio_label_writes_numbers_bounds_and_symmetries_never_singular():
    assert CF.ratio_label(panel(ratio=942.18)) == "ratio 942"
    assert CF.ratio_label(panel(ratio=3430.0)) == "ratio 3.43e3"
    assert CF.ratio_label(panel(ratio=1e6, censored=True)) == "ratio > 1e6"
    flat = panel(ratio=np.nan, flat_direction=True, norm="batchnorm")
    assert CF.ratio_label(flat) == "ratio \u221e: BN scale symmetry"
    assert "LN" in CF.ratio_label(panel(ratio=np.nan, flat_direction=True, norm="layernorm"))
    assert CF.ratio_label(panel(ratio=np.nan, degenerate=True)).startswith("no ratio")
    assert CF.ratio_label(panel(ratio=np.nan)) == "ratio not measured"
    for p in (panel(ratio=np.nan, flat_direction=True), panel(ratio=np.nan, degenerate=True), panel(ratio=np.nan)):
        assert "singular" not in CF.ratio_label(p) and "n/a" not in CF.ratio_label(p)


def test_axis_labels_name_the_weights_with_unit_and_rms():
    assert CF.axis_labels(panel()) == ("W[2] from unit 4 (RMS 3.2)", "W[2] from unit 9 (RMS 0.011)")
    assert CF.axis_labels(panel(layer=1))[0] == "W[1] from feature 4 (RMS 3.2)"
    x, y = CF.axis_labels(panel(projected=True))
    assert x.startswith("u1 \u22a5 w of unit 17") and "unit 4 (RMS 3.2)" in x and y.startswith("u2 \u22a5")
    assert "(W[2], b[2])" in CF.axis_labels(panel(projected=True, norm="layernorm"))[0]
    # without the table's names: the generic labels
    bare = {k: v for k, v in panel().items() if k not in ("input_hi", "input_lo")}
    assert CF.axis_labels(bare) == ("w from largest-RMS input", "w from smallest-RMS input")


def test_a_contour_panel_has_equal_aspect_labels_and_ratio_title():
    fig, ax = plt.subplots()
    p = panel(ratio=1e6, censored=True)
    filled = CF.contour_panel(ax, p, CF.color_levels([p["loss"]]), title="raw inputs")
    assert filled is not None and ax.get_aspect() == 1.0
    assert ax.get_title() == "raw inputs\nratio > 1e6"
    assert ax.get_xlabel() == "W[2] from unit 4 (RMS 3.2)"
    plt.close(fig)


def figure_of(monkeypatch, fn, *args):
    """The matplotlib figure ``fn`` draws (to_png intercepted), and its PNG bytes."""
    seen = {}
    real = F.to_png

    def spy(fig, *a, **k):
        seen["fig"] = fig
        seen["axes"] = list(fig.axes)
        seen["texts"] = [t.get_text() for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label,
                                                                    *ax.texts)]
        return real(fig, *a, **k)

    monkeypatch.setattr(F, "to_png", spy)
    png = fn(*args)
    return seen, png


def test_contour_grid_has_a_colorbar_per_row(monkeypatch):
    rows = [[panel(), panel(censored=True, ratio=1e6)], [None, panel(flat_direction=True, norm="batchnorm")]]
    seen, png = figure_of(monkeypatch, CF.contour_grid, rows, ["raw inputs, no norm layer", "standardized inputs, "
                                                                "batch norm"], ["layer 1", "layer 2"])
    assert png[:8] == PNG
    bars = [ax for ax in seen["axes"] if "log10" in ax.get_ylabel()]
    assert len(bars) == 2
    assert "layer 1\nratio 3" in seen["texts"] and "layer 2\nratio > 1e6" in seen["texts"]
    assert "ratio \u221e: BN scale symmetry" in seen["texts"]


def test_contour_row_groups_share_a_colorbar_and_write_the_ratio(monkeypatch):
    groups = [("the slide", [("raw inputs", panel(ratio=942.0)), ("standardized inputs", panel(ratio=1.05))]),
              ("a deeper layer", [("no batch norm", panel(ratio=13.5)), ("batch norm", panel(projected=True))])]
    seen, png = figure_of(monkeypatch, CF.contour_row, groups)
    bars = [ax for ax in seen["axes"] if "log10" in ax.get_ylabel()]
    assert len(bars) == 2
    assert {"axis ratio 942", "axis ratio 1.05", "axis ratio 13.5"} <= set(seen["texts"])
    w, h = Image.open(io.BytesIO(png)).size
    assert w / h >= 2.7  # wide: <= ~420 px tall at 1120 px


def test_empty_inputs_draw_a_no_data_figure():
    assert CF.contour_grid([], [], [])[:8] == PNG
    assert CF.contour_grid([[None]], ["a"], ["b"])[:8] == PNG
    assert CF.contour_row([])[:8] == PNG
    empty = pd.DataFrame(columns=["dataset", "depth", "layer", "arm", "seed", "value"])
    assert F.layer_profiles(empty, "y")[:8] == PNG
    assert F.seed_points(empty, "y")[:8] == PNG
    assert F.loss_vs_lr(pd.DataFrame(columns=["dataset", "depth", "arm", "lr", "seed", "final_train_loss"]),
                        pd.DataFrame(columns=["dataset", "depth", "arm", "max_stable_lr"]))[:8] == PNG


def test_arm_words_and_one_palette():
    assert F.arm_label("standardize-batchnorm") == "standardized inputs, batch norm"
    assert F.arm_label("raw-none") == "raw inputs, no norm layer"
    assert F.arm_palette(["raw-none"]) == {"raw inputs, no norm layer": F.PALETTE["raw-none"]}
    assert len({F.arm_label(a) for a in F.PALETTE}) == len(F.PALETTE)


def test_png_bytes_are_deterministic_and_palette_coded():
    groups = [("g", [("a", panel()), ("b", panel(ratio=1.0))])]
    one, two = CF.contour_row(groups), CF.contour_row(groups)
    assert one == two
    assert Image.open(io.BytesIO(one)).mode == "P"


# ---- which rows the tasks select --------------------------------------------------------------------------------

SEED = 1


def contour_table():
    """contours.csv lecture rows: datasets lecture and wine; depth 0 (raw, standardize), depths 2 and 4 (none, BN,
    standardized and raw); seeds 0, 1; checkpoints init, end; runs best, common. The rows the headline must read
    (lecture, seed 1, best, depth 0 at init, depth 2 layer 2 at init) have ratios 942 / 1.05 / 13.5 / 1.87; every
    other row (the distractors) has ratio 555."""
    rows = []
    variants = [("raw", "none", 0), ("standardize", "none", 0), *[(i, n, d) for i, n, d in itertools.product(
        ("raw", "standardize"), ("none", "batchnorm"), (2, 4))]]
    for ds, (inp, norm, depth), seed, tag, run in itertools.product(("lecture", "wine"), variants, (0, 1),
                                                                  ("init", "end"), ("best", "common")):
        for layer in range(1, depth + 2):
            ratio = 555.0
            if (ds, seed, tag, run) == ("lecture", SEED, "init", "best"):
                ratio = {("raw", "none", 0, 1): 942.0, ("standardize", "none", 0, 1): 1.05,
                         ("standardize", "none", 2, 2): 13.5, ("standardize", "batchnorm", 2, 2): 1.87}.get(
                    (inp, norm, depth, layer), 555.0)
            rows.append({"dataset": ds, "variant": f"{inp}-{norm}-d{depth}", "input": inp, "norm": norm,
                         "depth": depth, "run": run, "seed": seed, "checkpoint": tag, "slice": "lecture",
                         "scope": f"layer{layer}", "axis_ratio_ggn": ratio, "censored": False,
                         "flat_direction": False, "degenerate": False,
                         "projected": norm == "batchnorm" and layer <= depth,
                         "unit": 3, "input_hi": 0, "input_lo": 1, "rms_hi": 10.0, "rms_lo": 0.1})
    return pd.DataFrame(rows)


def grids_for(rows: pd.DataFrame) -> dict:
    grids = {}
    p = panel()
    for r in rows.itertuples():
        key = f"{r.run}-s{r.seed}-{r.checkpoint}/lecture.{r.scope}."
        grids.setdefault((r.dataset, r.variant), {}).update({key + k: p[k] for k in ("alphas", "betas", "loss",
                                                                                       "origin")})
    return grids


def test_the_headline_picks_the_slide_and_the_deeper_layer_without_and_with_bn():
    rows = contour_table()
    caption, (fn, (groups,)) = FT.headline_figure_task({"contours": rows}, grids_for(rows), SEED)
    assert fn is CF.contour_row
    (slide_head, slide), (deep_head, deep) = groups
    assert [t for t, _ in slide] == ["raw inputs", "standardized inputs"]
    assert [p["ratio"] for _, p in slide] == [942.0, 1.05]
    assert [t for t, _ in deep] == ["no batch norm", "batch norm"]
    assert [p["ratio"] for _, p in deep] == [13.5, 1.87]  # depth 2 (the smallest >= 2), layer 2, standardized
    assert [p["layer"] for _, p in deep] == [2, 2] and deep[1][1]["projected"]
    assert "lecture" in slide_head and "depth-2" in deep_head and f"seed {SEED}" in caption
    assert fn(groups)[:8] == PNG


def test_the_headline_falls_back_without_depth_0_and_is_none_without_slices():
    rows = contour_table()
    nets = rows[rows["depth"] > 0]
    _, (_, (groups,)) = FT.headline_figure_task({"contours": nets}, grids_for(nets), SEED)
    assert "Layer 1 of the depth-2 network" in groups[0][0] and len(groups) == 2
    assert FT.headline_figure_task({"contours": rows}, {}, SEED) is None
    assert FT.headline_figure_task({}, grids_for(rows), SEED) is None
    only_d0 = rows[rows["depth"] == 0]
    _, (_, (groups,)) = FT.headline_figure_task({"contours": only_d0}, grids_for(only_d0), SEED)
    assert len(groups) == 1  # no deeper layer: the slide alone


def question_tables():
    """Small tidy tables for every question, with distractors: raw inputs, the common run, depth 0, another
    metric."""
    ds, seeds = ("lecture", "wine"), (0, 1)
    arms = [("standardize", "none"), ("standardize", "batchnorm"), ("raw", "none"), ("raw", "batchnorm")]
    base = [{"dataset": d, "input": i, "norm": n, "depth": dp, "variant": f"{i}-{n}-d{dp}", "seed": s}
            for d, (i, n), dp, s in itertools.product(ds, arms, (2, 4), seeds)]
    li, cv, gr, runs = [], [], [], []
    for b, run, layer in itertools.product(base, ("best", "common"), range(1, 6)):
        if layer > b["depth"] + 1:
            continue
        val = 1.0 + layer * (1 if b["norm"] == "batchnorm" else 10) + (1000 if run == "common" else 0)
        li += [{**b, "run": run, "checkpoint": c, "layer": layer, "metric": m, "value": val}
               for c in ("init", "end") for m in (V.SPREAD_METRIC, "rms_spread")]
        cv += [{**b, "run": run, "checkpoint": c, "scope": f"layer{layer}", "matrix": "ggn", "metric": "lambda_max",
                "value": val} for c in ("init", "end")]
        gr += [{**b, "run": run, "step": st, "layer": layer, "metric": m, "value": val}
               for st in (0, 100) for m in ("relative_grad_norm", "grad_norm")]
    for b, lr in itertools.product(base, (0.01, 0.1, 1.0)):
        runs.append({**b, "lr": lr, "grid": True, "diverged": lr == 1.0, "final_train_loss": 0.1 / lr})
    variants = pd.DataFrame([{**b, "max_stable_lr": 0.5} for b in base if b["seed"] == 0]).drop(columns="seed")
    return {"layer_inputs": pd.DataFrame(li), "curvature": pd.DataFrame(cv), "gradients": pd.DataFrame(gr),
            "runs": pd.DataFrame(runs), "variants": variants}


def test_question_tasks_cover_every_question_and_select_their_rows():
    t = question_tables()
    rows = contour_table()
    t["contours"] = rows
    tasks = FT.question_figure_tasks(t, grids_for(rows), {}, SEED)
    assert set(tasks) == set(V.QUESTIONS) and all(tasks[q] for q in V.QUESTIONS)
    assert len(tasks["q2"]) == 2
    # q1: the spread over layers, standardized networks only, best run (the common run's +1000 would shrink it)
    (_, (fn, (spread, *_))), = tasks["q1"]
    assert fn is F.seed_points and set(spread["arm"]) == {"standardize-none", "standardize-batchnorm"}
    d2 = spread[(spread["depth"] == 2) & (spread["arm"] == "standardize-none")]
    assert np.allclose(d2["value"], 31.0 / 11.0)  # layers 1..3: (1 + 30) / (1 + 10)
    # q3 and q4: per layer, standardized, best run, the rule's metric; q4 at the last step
    (_, (fn, (li, _))), = tasks["q3"]
    assert fn is F.layer_profiles and set(li["metric"]) == {V.SPREAD_METRIC} and set(li["run"]) == {"best"}
    assert set(li["input"]) == {"standardize"} and set(li["checkpoint"]) == {"end"}
    (_, (fn, (gr, _))), = tasks["q4"]
    assert set(gr["metric"]) == {"relative_grad_norm"} and set(gr["step"]) == {100} and set(gr["run"]) == {"best"}
    # q5: the converse arm included, a diverged run left out of the line
    (_, (fn, (runs, marks))), = tasks["q5"]
    assert fn is F.loss_vs_lr and "raw-batchnorm" in set(runs["arm"]) and "raw-none" not in set(runs["arm"])
    assert runs.loc[runs["lr"] == 1.0, "final_train_loss"].isna().all()
    assert set(marks["max_stable_lr"]) == {0.5}
    # q2's second figure: layer-1 slices without a normalization layer, every seed
    (_, (fn, (ratios, *_))) = tasks["q2"][1]
    assert set(ratios["arm"]) == {"raw-none", "standardize-none"} and set(ratios["seed"]) == {0, 1}
    for q in V.QUESTIONS:
        for _, (fn, args) in tasks[q]:
            assert fn(*args)[:8] == PNG, q


def test_question_tasks_without_tables_give_no_data_figures():
    tasks = FT.question_figure_tasks({}, {}, {}, None)
    assert set(tasks) == set(V.QUESTIONS) and tasks["q2"] == []
    for q in ("q1", "q3", "q4", "q5"):
        (_, (fn, args)), = tasks[q]
        assert fn is F.no_data and fn(*args)[:8] == PNG


@pytest.mark.parametrize("kind", ["layer_inputs", "curvature", "gradients", "runs"])
def test_question_tasks_with_an_empty_table_draw(kind):
    t = question_tables()
    t[kind] = t[kind].iloc[:0]
    for q, fs in FT.question_figure_tasks(t, {}, {}, 0).items():
        for _, (fn, args) in fs:
            assert fn(*args)[:8] == PNG, q

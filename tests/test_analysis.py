"""normlab.analysis: the measurements of one checkpoint, as the analyze rule runs them."""

import jax
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from normlab import analysis, model

LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def test_second_input_treatment_of_a_network_compiles_nothing():
    """The analyze rule measures every input treatment of a network in one process, counting on the second
    one to reuse all of the first one's compiled programs (same shapes, specs equal but for ``input``):
    any program lowered anew during the second would be traced and compiled or loaded again."""
    cfg = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())["analysis"]
    rng = np.random.default_rng(0)
    X_raw = rng.normal(0.0, [1000.0, 1.0], size=(64, 2))
    X_std = (X_raw - X_raw.mean(0)) / X_raw.std(0)
    y = (X_raw[:, 0] / 1000 + X_raw[:, 1] > 0).astype(np.int64)
    results, lowered = [], []
    listener = lambda event, secs, **kw: lowered.append(event) if event == LOWERING_EVENT else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for k, (treatment, X) in enumerate((("raw", X_raw), ("standardize", X_std))):
            spec = model.ModelSpec((2, 8, 8, 2), norm="batchnorm", input=treatment)
            params = model.init_params(spec, jax.random.PRNGKey(1))
            lowered.clear()
            results.append(analysis.measure_checkpoint(spec, params, X, y, cfg, "init"))
            if k == 0:
                assert lowered, "the first treatment compiles its programs"
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert lowered == []
    # and the measurements are the second treatment's own: its layer-1 inputs are standardized
    raw, std = ({r["metric"]: r["value"] for r in res["layer_inputs"] if r["layer"] == 1} for res in results)
    assert raw != std and results[0]["curvature"] != results[1]["curvature"]


SWEEP_CONFIG = {"steps": 10, "batch_size": 16, "log_every": 5, "eval_points": 11, "dtype": "float64"}


def _tiny_sweep():
    """A trained sweep of a 2-4-2 network: 3 LRs x 2 seeds, 10 steps in chunks of 5, evaluated after every
    step (float64)."""
    from normlab import train

    rng = np.random.default_rng(3)
    X = rng.normal(size=(48, 2))
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    data = {"X_train": X, "y_train": y, "X_test": X[:8], "y_test": y[:8]}
    spec = model.ModelSpec((2, 4, 2))
    cfg = train.TrainConfig.from_sweep_config(SWEEP_CONFIG)
    result = train.train_sweep(spec, cfg, data, [0.01, 0.1, 1.0], [7, 8], 32, progress=lambda msg: None)
    return spec, data, train.sweep_arrays(result), train.sweep_checkpoint_arrays(result)


def _quick_analysis_config():
    """The quick study's analysis settings on 32 rows, curvature at ``end`` only, no contour slices
    (test_landscape has them), both runs' curvature and slices (the runs filter has its own test)."""
    cfg = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())["analysis"]
    cfg["max_examples"] = 32
    cfg["curvature"]["checkpoints"], cfg["contours"]["checkpoints"] = ["end"], []  # contours: test_landscape
    cfg["curvature"]["runs"] = cfg["contours"]["runs"] = list(analysis.RUNS)
    return cfg


IDS = {"dataset": "tiny", "variant": "raw-none-d1", "input": "raw", "norm": "none", "depth": 1}


def test_analyze_variant_measures_the_common_and_best_runs_of_every_seed():
    """The common run is measured at ``common_lr``, the best at ``best_lr``, each seed's own run, each at its own
    checkpoints; a seed's init, which its runs share, is measured once; a variant whose two runs share an LR
    gets the same numbers for both. Layer-input statistics cover the whole training split."""
    from normlab import tables, train

    spec, data, sweep, ckpts = _tiny_sweep()
    cfg = _quick_analysis_config()
    lines = []
    res = analysis.analyze_variant(spec, data, sweep, ckpts, {**IDS, "common_lr": 0.01, "best_lr": 1.0}, cfg,
                                   SWEEP_CONFIG, lines.append)
    tags = [t for t in analysis.TAGS if t != "matched"]  # no matched_level in the row: no matched checkpoint
    assert sorted(res.checkpoints) == sorted(f"{r}-s{s}-{t}" for r in analysis.RUNS for s in (7, 8) for t in tags)
    for run, i in (("common", 0), ("best", 2)):
        for si, seed in enumerate((7, 8)):
            for tag in tags:
                expected = model.flatten_params(train.checkpoint_from_arrays(ckpts, tag, si, i))
                for name, arr in expected.items():
                    np.testing.assert_array_equal(res.checkpoints[f"{run}-s{seed}-{tag}"][name], arr)
    assert not np.array_equal(res.checkpoints["best-s7-end"]["layer1.W"], res.checkpoints["best-s8-end"]["layer1.W"])
    assert not np.array_equal(res.checkpoints["common-s7-end"]["layer1.W"], res.checkpoints["best-s7-end"]["layer1.W"])
    # measured once per distinct checkpoint (curvature at "end" only: one line per run and seed), then the
    # smoothness of every checkpoint in one call
    curvature_lines = [m for m in lines if "curvature done" in m]
    assert len(curvature_lines) == 4 and sum("best run (lr 1), seed 8, end" in m for m in curvature_lines) == 1
    assert sum("smoothness along the gradient" in m for m in lines) == 1
    X, y = analysis.analysis_batch(data, cfg["max_examples"])
    li = res.tables["layer_inputs"]
    for run, i in (("common", 0), ("best", 2)):
        for si, seed in enumerate((7, 8)):
            params = train.checkpoint_from_arrays(ckpts, "end", si, i)
            ref = analysis.measure_checkpoint(spec, params, X, y, cfg, "early", X_full=data["X_train"])
            rows = (li["run"] == run) & (li["checkpoint"] == "end") & (li["seed"] == seed)
            np.testing.assert_array_equal(li["value"][rows], [r["value"] for r in ref["layer_inputs"]])
            np.testing.assert_array_equal(li["lr"][rows], [0.01, 1.0][i // 2])
    # the whole training split, not the analysis set: the statistics differ from those of the first 32 rows
    params = train.checkpoint_from_arrays(ckpts, "end", 0, 2)
    subsample = analysis.measure_checkpoint(spec, params, X, y, cfg, "early")["layer_inputs"]
    assert [r["value"] for r in subsample] != list(li["value"][(li["run"] == "best") & (li["checkpoint"] == "end")
                                                               & (li["seed"] == 7)])
    # gradients: each seed's sweep row at each run's LR
    g = res.tables["gradients"]
    for seed in (7, 8):
        best = (g["run"] == "best") & (g["metric"] == "grad_norm") & (g["seed"] == seed)
        row = int(np.flatnonzero((sweep["lr"] == 1.0) & (sweep["seed"] == seed))[0])
        np.testing.assert_array_equal(g["value"][best], sweep["grad_norm"][row].reshape(-1))
    assert set(g["seed"]) == {7, 8}
    for kind in ("curvature", "layer_inputs", "checkpoints"):
        assert list(res.tables[kind])[:len(tables.ID_COLUMNS)] == tables.ID_COLUMNS
        assert "seed" in res.tables[kind]
    # smoothness: every run, seed and configured checkpoint; the shared init is stepped with each run's own lr
    sm = res.tables["smoothness"]
    assert list(sm)[:len(tables.ID_COLUMNS)] == tables.ID_COLUMNS
    assert {(r, s, t) for r, s, t in zip(sm["run"], sm["seed"], sm["checkpoint"], strict=True)} == {
        (r, s, t) for r in analysis.RUNS for s in (7, 8) for t in tags}
    for seed in (7, 8):
        loss = {run: sm["value"][(sm["run"] == run) & (sm["seed"] == seed) & (sm["checkpoint"] == "init")
                                 & (sm["metric"] == "loss")] for run in analysis.RUNS}
        assert len(loss["common"]) == len(cfg["smoothness"]["step_multipliers"])
        assert not np.allclose(loss["common"], loss["best"])  # lr 0.01 vs 1
    # where each checkpoint was taken: init after 0 updates, early after one chunk, end after all of them
    c = res.tables["checkpoints"]
    assert {(t, s) for t, s in zip(c["checkpoint"], c["step"], strict=True)} == {("init", 0), ("early", 5), ("end", 10)}
    assert not c["frozen"].any()
    # one LR for both runs: the same measurements under both names
    same = analysis.analyze_variant(spec, data, sweep, ckpts, {**IDS, "common_lr": 0.1, "best_lr": 0.1}, cfg,
                                    SWEEP_CONFIG)
    for kind in ("curvature", "smoothness"):
        c = same.tables[kind]
        np.testing.assert_array_equal(c["value"][c["run"] == "common"], c["value"][c["run"] == "best"])
    assert len(same.spectra) == len(res.spectra)


def test_measured_here_needs_the_tag_and_one_of_the_checkpoints_runs():
    section = {"checkpoints": ["init", "end"], "runs": ["best"]}
    assert analysis.measured_here(section, "end", {"best"})
    assert not analysis.measured_here(section, "end", {"common"})  # the tag, not the run
    assert not analysis.measured_here(section, "early", {"best"})  # the run, not the tag
    assert analysis.measured_here(section, "init", {"common", "best"})  # a checkpoint both runs share
    assert not analysis.measured_here({**section, "runs": ["common"]}, "end", {"best"})
    assert analysis.measured_here({"checkpoints": ["end"]}, "end", {"common"})  # no runs given: every run


def test_curvature_and_slices_are_measured_on_the_configured_runs():
    """``runs: [best]`` (the default study's): curvature and slices of the best run at each configured checkpoint,
    and of the common run only at init, which is the best run's own checkpoint (one measurement, its rows under
    both names); ``[common]`` the other way round. Layer-input scales stay on both runs at every checkpoint."""
    spec, data, sweep, ckpts = _tiny_sweep()
    cfg = _quick_analysis_config()
    cfg["curvature"]["checkpoints"] = cfg["contours"]["checkpoints"] = ["init", "end"]
    cfg["smoothness"] = None
    for kept, other in (("best", "common"), ("common", "best")):
        cfg["curvature"]["runs"] = cfg["contours"]["runs"] = [kept]
        lines = []
        res = analysis.analyze_variant(spec, data, sweep, ckpts, {**IDS, "common_lr": 0.01, "best_lr": 1.0}, cfg,
                                       SWEEP_CONFIG, lines.append)
        expected = {(r, s, t) for s in (7, 8) for r, t in ((kept, "init"), (kept, "end"), (other, "init"))}
        for kind in ("curvature", "contours"):
            t = pd.DataFrame(res.tables[kind])
            assert set(zip(t["run"], t["seed"], t["checkpoint"], strict=True)) == expected, (kept, kind)
        cv = pd.DataFrame(res.tables["curvature"])
        init = cv[cv["checkpoint"] == "init"]
        np.testing.assert_array_equal(init[init["run"] == "common"]["value"], init[init["run"] == "best"]["value"])
        assert sum("curvature done" in m for m in lines) == 4  # init and end of two seeds, each measured once
        assert sum("contours done" in m for m in lines) == 4
        li = pd.DataFrame(res.tables["layer_inputs"])
        assert set(zip(li["run"], li["checkpoint"], strict=True)) == {
            (r, t) for r in analysis.RUNS for t in ("init", "early", "end")}
    # both runs: the common run's end too
    cfg["curvature"]["runs"] = cfg["contours"]["runs"] = ["common", "best"]
    both = analysis.analyze_variant(spec, data, sweep, ckpts, {**IDS, "common_lr": 0.01, "best_lr": 1.0}, cfg,
                                    SWEEP_CONFIG)
    cv = pd.DataFrame(both.tables["curvature"])
    measured = set(zip(cv["run"], cv["checkpoint"], strict=True))
    assert measured == {(r, t) for r in analysis.RUNS for t in ("init", "end")}


def test_grid_seeds_are_the_smallest_seeds():
    cfg = {"grid_seeds": 1}
    assert analysis.grid_seeds([2, 0, 1], cfg) == {0}  # the smallest, not the first listed
    assert analysis.grid_seeds([2, 0, 1], {"grid_seeds": 2}) == {0, 1}
    assert analysis.grid_seeds([2, 0, 1], {"grid_seeds": 3}) == {0, 1, 2}
    assert analysis.grid_seeds([2, 0, 1], {}) == {0}  # the default
    assert analysis.grid_seeds([5], {"grid_seeds": 3}) == {5}


def test_only_the_grid_seeds_slices_get_their_grids():
    """Every seed's slices are measured (their GGN axis ratios, which the claims use); only the smallest seed's
    get their grids of J (the report's pictures), and the level-set fit that needs one."""
    spec, data, sweep, ckpts = _tiny_sweep()
    cfg = _quick_analysis_config()
    cfg["contours"]["checkpoints"], cfg["smoothness"] = ["end"], None
    res = analysis.analyze_variant(spec, data, sweep, ckpts, {**IDS, "common_lr": 0.01, "best_lr": 1.0}, cfg,
                                   SWEEP_CONFIG)
    losses = {k.split("/")[0] for k in res.contour_grids if k.endswith(".loss")}
    assert losses == {"common-s7-end", "best-s7-end"}
    assert {k.split("/")[0] for k in res.contour_grids if k.endswith(".ggn")} == {
        f"{r}-s{s}-end" for r in analysis.RUNS for s in (7, 8)}
    c = pd.DataFrame(res.tables["contours"])
    for seed in (7, 8):
        rows = c[c["seed"] == seed]
        assert len(rows) == len(c) // 2 and np.isfinite(rows["axis_ratio_ggn"].astype(float)).any()
    assert c[c["seed"] == 8]["axis_ratio_levelset"].astype(float).isna().all()
    every = analysis.analyze_variant(spec, data, sweep, ckpts, {**IDS, "common_lr": 0.01, "best_lr": 1.0},
                                     {**cfg, "contours": {**cfg["contours"], "grid_seeds": 2}}, SWEEP_CONFIG)
    assert {k.split("/")[0] for k in every.contour_grids if k.endswith(".loss")} == {
        f"{r}-s{s}-end" for r in analysis.RUNS for s in (7, 8)}
    e = pd.DataFrame(every.tables["contours"])
    np.testing.assert_allclose(e["axis_ratio_ggn"].astype(float), c["axis_ratio_ggn"].astype(float), rtol=1e-12)


def test_a_checkpoint_after_divergence_is_flagged_frozen_not_dropped():
    spec, data, sweep, ckpts = _tiny_sweep()
    sweep = dict(sweep)
    row = int(np.flatnonzero((sweep["lr"] == 1.0) & (sweep["seed"] == 8))[0])
    sweep["diverged"] = np.asarray(sweep["diverged"]).copy()
    sweep["diverged_step"] = np.asarray(sweep["diverged_step"]).copy()
    sweep["diverged"][row], sweep["diverged_step"][row] = True, 3  # diverged at update 3: before early (5)
    cfg = _quick_analysis_config()
    cfg["curvature"]["checkpoints"] = []
    res = analysis.analyze_variant(spec, data, sweep, ckpts, {**IDS, "common_lr": 0.01, "best_lr": 1.0}, cfg,
                                   SWEEP_CONFIG)
    c = res.tables["checkpoints"]
    frozen = {(r, s, t) for r, s, t, f in zip(c["run"], c["seed"], c["checkpoint"], c["frozen"], strict=True) if f}
    assert frozen == {("best", 8, "early"), ("best", 8, "end")}
    li = res.tables["layer_inputs"]
    assert ((li["run"] == "best") & (li["seed"] == 8) & (li["checkpoint"] == "end")).any()  # measured, kept


def test_replay_chunk_is_a_divisor_of_the_steps_within_log_every_and_the_memory_budget():
    from normlab import matched

    assert matched.replay_chunk(600, 30, 3, 34_442, 4) == 30  # the default study's largest model: 12 MB
    assert matched.replay_chunk(12, 5, 1, 10, 8) == 4  # the largest divisor of 12 up to 5
    assert matched.replay_chunk(10, 5, 2, 100, 8, budget=2 * 100 * 8 * 3) == 2  # 3 steps fit: 2 divides 10
    assert matched.replay_chunk(10, 5, 2, 100, 8, budget=2 * 100 * 8 * 5) == 5  # exactly 5 fit
    assert matched.replay_chunk(10, 5, 2, 100, 8, budget=1) == 1
    assert matched.replay_chunk(7, 30, 1, 1, 4) == 7


@pytest.mark.parametrize("budget", [None, 1])
def test_the_matched_checkpoint_is_the_first_update_reaching_the_level(budget, monkeypatch):
    """The replay stops each seed at the first update whose analysis-set loss is <= the level: checked against
    the loss after every update of the same runs trained by ``train.train_runs`` (chunked, evaluated at every
    step), for a level each seed reaches at a different step, one it reaches at init and one it never reaches;
    the parameters taken are those after that update (their loss is the logged one). The replay's chunks are
    ``log_every`` updates (5 of 10), or one (``budget`` 1 byte: no step's parameters fit): the same steps."""
    from normlab import matched, train

    if budget is not None:
        monkeypatch.setattr(matched, "REPLAY_PARAMS_BYTES", budget)

    spec, data, sweep, ckpts = _tiny_sweep()
    cfg = train.TrainConfig.from_sweep_config(SWEEP_CONFIG)
    X, y = analysis.analysis_batch(data, 32)
    every = train.train_runs(spec, cfg, data, [1.0, 1.0], [7, 8], 32, progress=lambda msg: None,
                             eval_steps=np.arange(11))
    loss = every["train_loss"]  # (2 seeds, 11 steps)
    # a level reached mid-run, halfway between two logged losses: the replay evaluates the loss in another
    # compiled program than train_runs' (rounding apart), so a level equal to a logged loss could tie either way
    values = np.unique(loss[:, 1:])
    level = float(values[len(values) // 2] + values[len(values) // 2 - 1]) / 2
    runs = matched.replay_to_level(spec, cfg, data["X_train"], data["y_train"], X, y, 1.0, [7, 8], level)
    for k, seed in enumerate((7, 8)):
        hits = np.flatnonzero(loss[k] <= level)
        r = runs[seed]
        if hits.size:
            assert (r.step, r.reached) == (int(hits[0]), True)
            np.testing.assert_allclose(r.loss, loss[k, r.step], rtol=1e-12)
            np.testing.assert_allclose(float(model.loss(spec, r.params, X, y)), loss[k, r.step], rtol=1e-10)
        else:
            assert (r.step, r.reached) == (10, False)
        assert not r.frozen
    assert {runs[7].step, runs[8].step} != {0, 10}
    never = matched.replay_to_level(spec, cfg, data["X_train"], data["y_train"], X, y, 1.0, [7], 0.0)[7]
    assert (never.step, never.reached) == (10, False)
    at_init = matched.replay_to_level(spec, cfg, data["X_train"], data["y_train"], X, y, 1.0, [7], 1e9)[7]
    assert (at_init.step, at_init.reached) == (0, True)
    init_W = train.checkpoint_from_arrays(ckpts, "init", 0, 0)["layer1"]["W"]
    np.testing.assert_array_equal(at_init.params["layer1"]["W"], init_W)
    no_level = matched.replay_to_level(spec, cfg, data["X_train"], data["y_train"], X, y, 1.0, [7], float("nan"))[7]
    assert (no_level.step, no_level.reached) == (0, False)


def test_curvature_not_finite_in_float32_is_measured_again_in_float64(monkeypatch):
    """A checkpoint whose float32 curvature has a non-finite lambda_max or trace (products that under- or
    overflow, e.g. raw inputs saturating the softmax) is measured again in float64; a metric that may be NaN by
    definition (eff_cond of a zero trace) does not trigger it."""
    spec, data, sweep, ckpts = _tiny_sweep()
    cfg = _quick_analysis_config()
    cfg["curvature"]["dtype"] = "float32"
    X, y = analysis.analysis_batch(data, 32)
    params = model.unflatten_params({k.split("/", 1)[1]: v[0] for k, v in ckpts.items() if k.startswith("init/")})
    calls = []

    def fake_curvature_at(spec_, params_, X_, y_, cfg_, seed=0):
        calls.append(np.asarray(X_).dtype)
        bad = np.asarray(X_).dtype == np.float32 and len(calls) == 1 and mode == "lambda"
        rows = [{"scope": "model", "matrix": "ggn", "metric": "lambda_max", "value": np.nan if bad else 1.0},
                {"scope": "model", "matrix": "ggn", "metric": "eff_cond", "value": np.nan}]
        return rows, [], {}

    monkeypatch.setattr(analysis, "curvature_at", fake_curvature_at)
    for mode, expected in (("lambda", [np.float32, np.float64]), ("eff_cond", [np.float32])):
        calls.clear()
        lines = []
        out = analysis.measure_checkpoint(spec, params, X, y, cfg, "end", lines.append)
        assert calls == expected, mode
        assert out["curvature"][0]["value"] == 1.0
        assert any("measured again in float64" in m for m in lines) == (mode == "lambda")

"""normlab.analysis: the measurements of one checkpoint, as the analyze rule runs them."""

import jax
import numpy as np
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


def _tiny_sweep():
    """A trained sweep of a 2-4-2 network: 3 LRs x 2 seeds, 10 steps logged every 5 (float64)."""
    from normlab import train

    rng = np.random.default_rng(3)
    X = rng.normal(size=(48, 2))
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    data = {"X_train": X, "y_train": y, "X_test": X[:8], "y_test": y[:8]}
    spec = model.ModelSpec((2, 4, 2))
    cfg = train.TrainConfig(steps=10, batch_size=16, log_every=5, dtype="float64")
    result = train.train_sweep(spec, cfg, data, [0.01, 0.1, 1.0], [7, 8], 32, progress=lambda msg: None)
    return spec, data, train.sweep_arrays(result), train.seed_checkpoint_arrays(result, 7)


def test_analyze_variant_measures_the_common_and_best_runs_of_the_first_seed():
    """The common run is measured at ``common_lr``, the best at ``best_lr``, both of the first seed, each at its
    own checkpoints; the init, which every run shares, is measured once; a variant whose two runs share an LR
    gets the same numbers for both."""
    from normlab import tables, train

    spec, data, sweep, ckpts = _tiny_sweep()
    cfg = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())["analysis"]
    cfg["curvature"]["checkpoints"], cfg["contours"]["checkpoints"] = ["end"], []  # contours: test_landscape
    ids = {"dataset": "tiny", "variant": "raw-none-d1", "input": "raw", "norm": "none", "depth": 1}
    lines = []
    res = analysis.analyze_variant(spec, data, sweep, ckpts, {**ids, "common_lr": 0.01, "best_lr": 1.0}, cfg,
                                   lines.append)
    assert sorted(res.checkpoints) == sorted(f"{r}-{t}" for r in analysis.RUNS for t in analysis.TAGS)
    for run, i in (("common", 0), ("best", 2)):
        for tag in analysis.TAGS:
            expected = model.flatten_params(train.checkpoint_from_arrays(ckpts, tag, i))
            for name, arr in expected.items():
                np.testing.assert_array_equal(res.checkpoints[f"{run}-{tag}"][name], arr)
    assert not np.array_equal(res.checkpoints["common-end"]["layer1.W"], res.checkpoints["best-end"]["layer1.W"])
    # measured once per distinct checkpoint (curvature at "end" only: one line per end checkpoint)
    assert len(lines) == 2 and sum("best run (lr 1), end" in m for m in lines) == 1
    X, y = analysis.analysis_batch(data, cfg["max_examples"])
    li = res.tables["layer_inputs"]
    for run, i in (("common", 0), ("best", 2)):
        ref = analysis.measure_checkpoint(spec, train.checkpoint_from_arrays(ckpts, "end", i), X, y, cfg, "early")
        rows = (li["run"] == run) & (li["checkpoint"] == "end")
        np.testing.assert_array_equal(li["value"][rows], [r["value"] for r in ref["layer_inputs"]])
        np.testing.assert_array_equal(li["lr"][rows], [0.01, 1.0][i // 2])
    # gradients: the first seed's sweep row at each run's LR
    g = res.tables["gradients"]
    best = (g["run"] == "best") & (g["metric"] == "grad_norm")
    row = int(np.flatnonzero((sweep["lr"] == 1.0) & (sweep["seed"] == 7))[0])
    np.testing.assert_array_equal(g["value"][best], sweep["grad_norm"][row].reshape(-1))
    assert set(g["seed"]) == {7}
    assert list(res.tables["curvature"])[:len(tables.ID_COLUMNS)] == tables.ID_COLUMNS
    # one LR for both runs: the same measurements under both names
    same = analysis.analyze_variant(spec, data, sweep, ckpts, {**ids, "common_lr": 0.1, "best_lr": 0.1}, cfg)
    c = same.tables["curvature"]
    np.testing.assert_array_equal(c["value"][c["run"] == "common"], c["value"][c["run"] == "best"])
    assert len(same.spectra) == len(res.spectra)

"""Known-answer tests of normlab.layer_inputs on hand-built matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab import layer_inputs as LI
from normlab import model as M

S = np.array([1.0, -1.0, 1.0, -1.0])  # mean 0, RMS 1
T = np.array([1.0, 1.0, -1.0, -1.0])  # mean 0, RMS 1, orthogonal to S


def test_rms_mean_dead_and_spread():
    A = np.stack([S, 1000.0 * T, np.zeros(4), 3.0 + 0 * S], axis=1)  # RMS 1, 1000, dead, 3
    np.testing.assert_allclose(LI.unit_rms(A), [1.0, 1000.0, 0.0, 3.0])
    np.testing.assert_allclose(LI.unit_mean(A), [0.0, 0.0, 0.0, 3.0])
    assert LI.live_units(A, 1e-6).tolist() == [True, True, False, True]
    assert LI.rms_spread(A, 1e-6) == pytest.approx(1000.0)  # the zero column is excluded, not 1000 / 0
    # the threshold decides what counts as dead: RMS 1 <= 2 -> dead too, spread 1000 / 3
    assert LI.rms_spread(A, 2.0) == pytest.approx(1000.0 / 3.0)
    assert np.isnan(LI.rms_spread(np.zeros((4, 3)), 1e-6))
    stats = LI.layer_input_stats(A, 1e-6)
    assert stats["rms_spread"] == pytest.approx(1000.0)
    assert stats["dead_fraction"] == pytest.approx(0.25)
    assert stats["rms_min"] == pytest.approx(1.0) and stats["rms_max"] == pytest.approx(1000.0)
    # |mean| / RMS over live units: 0, 0, 1 -> 1/3
    assert stats["mean_abs_mean_over_rms"] == pytest.approx(1.0 / 3.0)


def test_augmented_second_moment_by_hand():
    A = np.array([[1.0, 2.0], [3.0, 4.0]])
    # a~ rows: (1, 2, 1), (3, 4, 1); E[a~ a~^T] = ((1,2,1)(1,2,1)^T + (3,4,1)(3,4,1)^T) / 2
    expected = np.array([[5.0, 7.0, 2.0], [7.0, 10.0, 3.0], [2.0, 3.0, 1.0]])
    np.testing.assert_allclose(LI.augmented_second_moment(A), expected)
    np.testing.assert_allclose(LI.second_moment_eigenvalues(A, 0.0), np.linalg.eigvalsh(expected), rtol=1e-12)


def test_scales_1_and_1000_condition_number():
    # centred, uncorrelated columns of RMS 1 and 1000 plus a dead unit: E[a~ a~^T] = diag(1, 1e6, 1)
    A = np.stack([S, 1000.0 * T, np.zeros(4)], axis=1)
    ev = LI.second_moment_eigenvalues(A, 1e-6)
    np.testing.assert_allclose(ev, [1.0, 1.0, 1e6], rtol=1e-12)  # dead unit excluded: 3 eigenvalues, not 4
    stats = LI.layer_input_stats(A, 1e-6)
    assert stats["cond"] == pytest.approx(1e6)
    assert stats["eff_cond"] == pytest.approx(1e6 / ((1e6 + 2.0) / 3.0))
    assert stats["null_dims"] == 0
    assert stats["dead_fraction"] == pytest.approx(1.0 / 3.0)
    # standardized version: every eigenvalue 1, perfectly round
    B = np.stack([S, T], axis=1)
    s = LI.layer_input_stats(B, 1e-6)
    assert s["cond"] == pytest.approx(1.0) and s["eff_cond"] == pytest.approx(1.0) and s["rms_spread"] == 1.0


def test_uncentred_input_is_ill_conditioned_through_the_bias_direction():
    # one unit with mean 10, std 1: E[a~ a~^T] = [[101, 10], [10, 1]], eigenvalues by the 2x2 formula
    A = (10.0 + S)[:, None]
    tr, det = 102.0, 101.0 - 100.0
    lam = np.array([(tr - np.sqrt(tr**2 - 4 * det)) / 2, (tr + np.sqrt(tr**2 - 4 * det)) / 2])
    np.testing.assert_allclose(LI.second_moment_eigenvalues(A, 1e-6), lam, rtol=1e-10)
    assert LI.layer_input_stats(A, 1e-6)["cond"] == pytest.approx(lam[1] / lam[0], rel=1e-8)


def test_cond_ignores_null_directions():
    # two identical units: a~ = (s, s, 1), E = [[1,1,0],[1,1,0],[0,0,1]], eigenvalues 0, 1, 2
    A = np.stack([S, S], axis=1)
    ev = LI.second_moment_eigenvalues(A, 1e-6)
    np.testing.assert_allclose(ev, [0.0, 1.0, 2.0], atol=1e-12)
    stats = LI.layer_input_stats(A, 1e-6)
    assert stats["cond"] == pytest.approx(2.0)  # over the non-null spectrum: 2 / 1, not 2 / 0
    assert stats["eff_cond"] == pytest.approx(2.0)  # 2 / mean(0, 1, 2)
    assert stats["null_dims"] == 1
    c = LI.conditioning(np.array([-1e-17, 1e-14, 0.5, 4.0]))
    assert c["cond"] == pytest.approx(8.0) and c["null_dims"] == 2
    assert c["eff_cond"] == pytest.approx(4.0 / ((4.5 - 1e-17 + 1e-14) / 4))
    assert np.isnan(LI.conditioning(np.zeros(3))["eff_cond"])
    # the null tolerance is 1e-10 lambda_max: 3e-10 below 4e-10 is null, 5e-10 above it is not
    assert LI.conditioning(np.array([3e-10, 1.0, 4.0]))["null_dims"] == 1
    below = LI.conditioning(np.array([5e-10, 1.0, 4.0]))
    assert below["null_dims"] == 0 and below["cond"] == pytest.approx(4.0 / 5e-10)


def test_network_layer_inputs_are_the_forward_pass_inputs():
    rng = np.random.default_rng(0)
    spec = M.ModelSpec((3, 4, 2), norm="none")
    params = {"layer1": {"W": jnp.asarray(rng.normal(size=(3, 4))), "b": jnp.asarray(rng.normal(size=4))},
              "layer2": {"W": jnp.asarray(rng.normal(size=(4, 2))), "b": jnp.zeros(2)}}
    X = rng.normal(size=(10, 3)).astype(np.float32)
    inputs = LI.network_layer_inputs(spec, params, X)
    assert [a.dtype for a in inputs] == [np.float64, np.float64]
    np.testing.assert_allclose(inputs[0], X)
    np.testing.assert_allclose(inputs[1], np.maximum(X @ np.asarray(params["layer1"]["W"])
                                                     + np.asarray(params["layer1"]["b"]), 0), rtol=1e-6)


# --- robust spread --------------------------------------------------------------------------------


def test_percentile_spread_by_hand():
    # sorted 1, 2, 4, 8, 100; numpy's linear percentile sits at q (k - 1): p10 at 0.4 -> 1 + 0.4 (2 - 1) = 1.4,
    # p90 at 3.6 -> 8 + 0.6 (100 - 8) = 63.2
    r = np.array([8.0, 1.0, 100.0, 4.0, 2.0])
    assert LI.spread_p90_p10(r) == pytest.approx(63.2 / 1.4, rel=1e-12)
    assert LI.spread_max_min(r) == pytest.approx(100.0)
    # two units: p10 = 1 + 0.1 (3 - 1) = 1.2, p90 = 1 + 0.9 (3 - 1) = 2.8
    assert LI.spread_p90_p10(np.array([3.0, 1.0])) == pytest.approx(2.8 / 1.2, rel=1e-12)
    assert np.isnan(LI.spread_p90_p10(np.array([5.0])))  # one live unit: no spread to speak of
    assert np.isnan(LI.spread_p90_p10(np.array([])))
    assert LI.spread_max_min(np.array([5.0])) == 1.0 and np.isnan(LI.spread_max_min(np.array([])))


def _columns_with_rms(rms, rows=8, seed=0):
    """(rows, k) matrix of random +-1 columns scaled to the given RMS values (exactly)."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(rows, len(rms)))
    return signs * np.asarray(rms, np.float64)


def test_one_near_dead_unit_decides_max_min_but_not_the_percentile_ratio():
    regular = np.linspace(0.9, 1.1, 20)
    A = _columns_with_rms(np.concatenate([regular, [1e-4, 0.0]]))  # 20 regular, 1 near-dead, 1 dead unit
    s = LI.layer_input_stats(A, 1e-6)
    assert s["dead_fraction"] == pytest.approx(1.0 / 22.0)
    assert s["rms_spread"] == pytest.approx(1.1 / 1e-4, rel=1e-12)  # huge: one unit decides it
    # 21 live values: p10 at position 2 = regular[1], p90 at position 18 = regular[17]
    assert s["rms_spread_p90_p10"] == pytest.approx(regular[17] / regular[1], rel=1e-12)
    assert s["rms_spread_p90_p10"] < 1.2
    assert s["rms_min"] == pytest.approx(1e-4) and s["rms_max"] == pytest.approx(1.1)
    # the same at the top: one unit of RMS 1e4 among them
    B = _columns_with_rms(np.concatenate([regular, [1e4]]))
    t = LI.layer_input_stats(B, 1e-6)
    assert t["rms_spread"] == pytest.approx(1e4 / 0.9, rel=1e-12)
    assert t["rms_spread_p90_p10"] == pytest.approx(regular[18] / regular[2], rel=1e-12)
    # the dead threshold: a unit of RMS 1e-4 is dead at threshold 1e-3, and the max/min spread drops to 1.1 / 0.9
    u = LI.layer_input_stats(A, 1e-3)
    assert u["rms_spread"] == pytest.approx(1.1 / 0.9) and u["dead_fraction"] == pytest.approx(2.0 / 22.0)


# --- centred and uncentred conditioning -----------------------------------------------------------

H = np.array([[1, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1],
              [-1, 1, 1], [-1, -1, 1], [-1, 1, -1], [-1, -1, -1]], np.float64)  # centred, orthogonal, RMS 1


def test_a_common_mean_makes_the_uncentred_matrix_ill_conditioned_not_the_covariance():
    A = 10.0 + H  # three units on one scale, each with mean 10
    s = LI.layer_input_stats(A, 1e-6)
    assert s["cov_cond"] == pytest.approx(1.0, rel=1e-12)
    assert s["cov_eff_cond"] == pytest.approx(1.0, rel=1e-12)
    assert s["cov_null_dims"] == 0
    assert s["rms_spread"] == pytest.approx(1.0) and s["rms_spread_p90_p10"] == pytest.approx(1.0)
    # E[a~ a~^T]: eigenvalue 1 on the two unit directions orthogonal to (1, 1, 1); on span{(1,1,1)/sqrt3, bias}
    # the 2x2 block [[1 + 300, 10 sqrt3], [10 sqrt3, 1]] has trace 302 and determinant 1
    lam_max = (302.0 + np.sqrt(302.0**2 - 4.0)) / 2.0
    lam_min = 1.0 / lam_max
    np.testing.assert_allclose(LI.second_moment_eigenvalues(A, 1e-6), [lam_min, 1.0, 1.0, lam_max], rtol=1e-9)
    assert s["cond"] == pytest.approx(lam_max / lam_min, rel=1e-8)  # ~9.1e4
    assert s["eff_cond"] == pytest.approx(lam_max / (304.0 / 4.0), rel=1e-10)
    assert s["mean_abs_mean_over_rms"] == pytest.approx(10.0 / np.sqrt(101.0))


def test_units_on_different_scales_are_ill_conditioned_centred_and_uncentred():
    A = H * np.array([1.0, 1.0, 1000.0])  # centred units of RMS 1, 1, 1000
    s = LI.layer_input_stats(A, 1e-6)
    assert s["cov_cond"] == pytest.approx(1e6, rel=1e-12)
    assert s["cov_eff_cond"] == pytest.approx(1e6 / ((2.0 + 1e6) / 3.0), rel=1e-12)
    assert s["cond"] == pytest.approx(1e6, rel=1e-12)  # E[a~ a~^T] = diag(1, 1, 1e6, 1)
    assert s["eff_cond"] == pytest.approx(1e6 / ((3.0 + 1e6) / 4.0), rel=1e-12)


def test_uncentred_condition_bounds_the_centred_one():
    # lambda_min(E[a~ a~^T]) <= lambda_min(C) and lambda_max(E[a~ a~^T]) >= lambda_max(C): centring can only
    # make the live units rounder, never hide a spread of scales
    rng = np.random.default_rng(3)
    for _ in range(5):
        A = rng.normal(size=(50, 4)) * rng.uniform(0.1, 10, 4) + rng.normal(0, 5, 4)
        s = LI.layer_input_stats(A, 1e-6)
        assert s["cond"] >= s["cov_cond"] * (1 - 1e-9)


def test_cov_null_dims_and_dead_units_are_kept_out_of_the_covariance():
    # units: S, S (identical), a dead zero column, a constant 2 (live, zero variance)
    A = np.stack([S, S, np.zeros(4), 2.0 + 0 * S], axis=1)
    np.testing.assert_allclose(LI.covariance_eigenvalues_of(LI.moments_of(A), 1e-6), [0.0, 0.0, 2.0], atol=1e-12)
    s = LI.layer_input_stats(A, 1e-6)
    assert s["cov_null_dims"] == 2 and s["cov_cond"] == pytest.approx(1.0)
    assert s["cov_eff_cond"] == pytest.approx(2.0 / (2.0 / 3.0))
    assert s["dead_fraction"] == pytest.approx(0.25)
    # no live unit: NaN conditionings of an empty covariance, the bias alone for E[a~ a~^T]
    z = LI.layer_input_stats(np.zeros((4, 2)), 1e-6)
    assert np.isnan(z["cov_cond"]) and np.isnan(z["cov_eff_cond"]) and z["cov_null_dims"] == 0
    assert z["cond"] == 1.0 and z["dead_fraction"] == 1.0
    assert np.isnan(z["rms_min"]) and np.isnan(z["rms_spread_p90_p10"])
    # a unit whose RMS equals the threshold is dead: at threshold 1 only the constant 2 stays live
    t = LI.layer_input_stats(A, 1.0)
    assert t["dead_fraction"] == pytest.approx(0.75) and t["rms_min"] == pytest.approx(2.0)


def test_non_finite_inputs_give_nan_metrics():
    A = np.stack([S, np.array([1.0, np.inf, 0.0, 1.0])], axis=1)
    s = LI.layer_input_stats(A, 1e-6)
    assert list(s) == list(LI.METRICS)
    assert all(np.isnan(v) for v in s.values())


# --- whole-split accumulation ---------------------------------------------------------------------


def _params(spec, seed):
    """He-initialized weights with random biases, gammas and betas (a zero input row maps to non-zero
    layer inputs, so padding rows that leaked into a sum would show)."""
    rng = np.random.default_rng(100 + seed)
    params = M.init_params(spec, jax.random.PRNGKey(seed), jnp.float64)
    shift = {"b": 0.0, "gamma": 1.0, "beta": 0.0}
    return {layer: {k: v + rng.normal(size=v.shape) * 0.5 if k in shift else v for k, v in p.items()}
            for layer, p in params.items()}


def test_row_chunks_pad_with_zero_weight_rows():
    X = np.arange(103 * 2, dtype=np.float64).reshape(103, 2)
    chunks, w = LI.row_chunks(X, 10)
    assert chunks.shape == (11, 10, 2) and w.shape == (11, 10)  # 11 chunks of 10 >= ceil(103 / 11) rows
    assert w.sum() == 103 and np.all(w.ravel()[103:] == 0) and np.all(chunks.reshape(-1, 2)[103:] == 0)
    np.testing.assert_array_equal(chunks.reshape(-1, 2)[:103], X)
    assert LI.row_chunks(X, 1000)[0].shape == (1, 103, 2)
    with pytest.raises(ValueError):
        LI.row_chunks(X[:0], 10)
    for m in range(1, 40):  # every chunk holds a real row, and chunks never exceed batch_rows
        for b in range(1, 12):
            c, w = LI.row_chunks(np.ones((m, 1)), b)
            assert w.sum() == m and c.shape[1] <= b and np.all(w.sum(axis=1) >= 1)


def test_chunked_accumulation_equals_the_one_shot_moments():
    rng = np.random.default_rng(1)
    X = 1e3 + rng.normal(size=(103, 5)) * np.array([1e-2, 1.0, 3.0, 10.0, 1e2])  # large common mean
    spec0 = M.ModelSpec((5, 3))  # depth 0: layer 1's input is X itself
    mom = LI.layer_input_moments(spec0, _params(spec0, 0), X, batch_rows=10)[0]
    ref = LI.moments_of(X)
    assert mom.count == 103
    np.testing.assert_allclose(mom.mean, ref.mean, rtol=1e-12)
    np.testing.assert_allclose(mom.covariance, ref.covariance, rtol=0, atol=1e-12 * np.abs(ref.covariance).max())
    np.testing.assert_allclose(np.diag(mom.covariance), np.diag(ref.covariance), rtol=1e-10)  # var 1e-4 vs mean 1e3
    # a network: every layer's moments in chunks of 10 rows equal those of all its rows at once
    spec = M.ModelSpec((5, 6, 6, 3), norm="layernorm")
    params = _params(spec, 1)
    chunked = LI.layer_input_moments(spec, params, X, batch_rows=10)
    direct = [LI.moments_of(a) for a in LI.network_layer_inputs(spec, params, X)]
    for a, b in zip(chunked, direct, strict=True):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12, atol=1e-12 * np.abs(b.mean).max())
        np.testing.assert_allclose(a.covariance, b.covariance, rtol=0, atol=1e-12 * np.abs(b.covariance).max())


BN_X = np.random.default_rng(2).normal(size=(300, 4)) * np.array([1.0, 2.0, 0.5, 3.0]) + 1.0
BN_SPEC = M.ModelSpec((4, 6, 2), norm="batchnorm")  # the next two tests share its compiled programs


def test_batch_norm_uses_the_reference_rows_statistics_on_every_row():
    X, spec, params = BN_X, BN_SPEC, _params(BN_SPEC, 2)
    ref_rows = X[:64]
    got = LI.layer_input_moments(spec, params, X, norm_batch=ref_rows, batch_rows=32)
    stats = jax.jit(M.population_stats, static_argnums=0)(spec, params, ref_rows)
    forward = jax.jit(M.forward_with_inputs, static_argnums=0)
    fixed = [LI.moments_of(a) for a in forward(spec, params, X, stats)[1]]
    train_mode = [LI.moments_of(a) for a in forward(spec, params, X)[1]]
    for a, b in zip(got, fixed, strict=True):
        np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-10, atol=1e-12)
    assert not np.allclose(got[1].covariance, train_mode[1].covariance, rtol=1e-3)  # the reference rows matter
    # the whole split as the reference: BN's training mode on the whole split, even in chunks
    whole = LI.layer_input_moments(spec, params, X, norm_batch=X, batch_rows=32)
    for a, b in zip(whole, train_mode, strict=True):
        np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="norm_batch"):
        LI.layer_input_moments(spec, params, X)


def _sparse_split(m=1347, dense=13, seed=4):
    """A digits-like training split, standardized on itself: dense Gaussian features and three sparse ones
    (non-zero in 3 of m rows: all 3, 1, and 0 of them in the first 512 rows)."""
    rng = np.random.default_rng(seed)
    X = np.zeros((m, dense + 3))
    X[:, :dense] = rng.normal(size=(m, dense))
    for j, hits in enumerate(([0, 1, 2], [3, 600, 900], [700, 800, 1000])):
        X[hits, dense + j] = 1.0
    return (X - X.mean(axis=0)) / X.std(axis=0)


def test_whole_split_spread_is_not_the_subsample_spread_on_sparse_features():
    X = _sparse_split()
    spec = M.ModelSpec((16, 8, 3), norm="batchnorm")
    summary, units = LI.checkpoint_layer_input_rows(spec, _params(spec, 0), X, 1e-6, norm_batch=X[:512],
                                                    batch_rows=500)
    first = {r["metric"]: r["value"] for r in summary if r["layer"] == 1}
    assert first["rms_spread"] == pytest.approx(1.0, abs=1e-9)  # every feature has RMS 1 on the split
    assert first["rms_spread_p90_p10"] == pytest.approx(1.0, abs=1e-9)
    assert first["cov_cond"] < 1.5 and first["dead_fraction"] == 0
    np.testing.assert_allclose([u["rms"] for u in units if u["layer"] == 1], 1.0, rtol=1e-9)
    # the 512-row subsample invents a spread: sparse features of RMS sqrt(3 * 448 / 512) ~ 1.6 and ~0.05
    sub = LI.layer_input_stats(X[:512], 1e-6)
    assert sub["rms_spread"] > 30 and sub["dead_fraction"] == 0


def test_rows_layout_and_seeds_in_one_program_match_one_by_one():
    X, spec = BN_X, BN_SPEC
    per_seed = [_params(spec, s) for s in (0, 1)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *per_seed)
    together = LI.seed_checkpoint_layer_input_rows(spec, stacked, X, 1e-6, norm_batch=X[:64], batch_rows=32)
    assert len(together) == 2
    for params, (summary, units) in zip(per_seed, together, strict=True):
        one, one_units = LI.checkpoint_layer_input_rows(spec, params, X, 1e-6, norm_batch=X[:64], batch_rows=32)
        assert [(r["layer"], r["metric"]) for r in summary] == [(r["layer"], r["metric"]) for r in one]
        # rounding differs between the vmapped and the plain program; a condition number of ~2e4 amplifies it
        np.testing.assert_allclose([r["value"] for r in summary], [r["value"] for r in one], rtol=1e-9)
        np.testing.assert_allclose([u["rms"] for u in units], [u["rms"] for u in one_units], rtol=1e-12)
    assert [(r["layer"], r["metric"]) for r in one] == [(l, k) for l in (1, 2) for k in LI.METRICS]
    assert [(u["layer"], u["unit"]) for u in one_units] == [(1, j) for j in range(4)] + [(2, j) for j in range(6)]
    assert set(one_units[0]) == {"layer", "unit", "mean", "rms", "live"}
    # the two seeds differ (the vmapped program does not broadcast one seed's parameters)
    assert not np.allclose([r["value"] for r in together[0][0]], [r["value"] for r in together[1][0]], equal_nan=True)


def test_input_batch_norm_uses_the_reference_rows_input_statistics():
    """Under input batch norm A[0] over the whole split is every row standardized with the reference rows'
    per-feature (mean, biased variance) (``model.input_batch_stats(norm_batch)``), not each chunk's own; the
    layers above see those inputs (and hidden BN the statistics of the reference rows through them), so the
    moments equal those of a model without input norm on the pre-standardized split."""
    X = BN_X * np.array([1000.0, 1.0, 0.01, 5.0]) + np.array([300.0, 0.0, 1.0, -2.0])
    ref_rows = X[:64]
    mean, var = ref_rows.mean(axis=0), ref_rows.var(axis=0)
    for norm in ("none", "batchnorm"):
        spec = M.ModelSpec((4, 6, 2), norm=norm, input_norm="batchnorm")
        params = _params(spec, 3)
        X_std = (X - mean) / np.sqrt(var + spec.eps)
        got = LI.layer_input_moments(spec, params, X, norm_batch=ref_rows, batch_rows=32)
        ref0 = LI.moments_of(X_std)
        np.testing.assert_allclose(got[0].mean, ref0.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got[0].covariance, ref0.covariance, rtol=1e-9, atol=1e-12)
        assert not np.allclose(got[0].rms, 1.0, rtol=1e-2)  # the split's statistics are not the reference's
        plain = M.ModelSpec((4, 6, 2), norm=norm)
        same = LI.layer_input_moments(plain, params, X_std, norm_batch=X_std[:64], batch_rows=32)
        for a, b in zip(got, same, strict=True):
            np.testing.assert_allclose(a.mean, b.mean, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-9, atol=1e-12)
        # the same through forward_with_inputs with the fixed statistics
        input_stats = M.input_batch_stats(ref_rows)
        stats = M.population_stats(spec, params, ref_rows, input_stats) if norm == "batchnorm" else None
        fixed = M.forward_with_inputs(spec, params, X, stats, input_stats)[1]
        np.testing.assert_allclose(got[1].covariance, LI.moments_of(fixed[1]).covariance, rtol=1e-9, atol=1e-12)
        with pytest.raises(ValueError, match="norm_batch"):
            LI.layer_input_moments(spec, params, X)
    # the whole split as the reference: its own (training-mode) standardization, RMS 1 per feature
    whole = LI.layer_input_moments(spec, params, X, norm_batch=X, batch_rows=32)
    np.testing.assert_allclose(whole[0].rms, np.sqrt(X.var(axis=0) / (X.var(axis=0) + spec.eps)), rtol=1e-9)
    np.testing.assert_allclose(LI.network_layer_inputs(spec, params, X)[0], LI.network_layer_inputs(
        plain, params, (X - X.mean(axis=0)) / np.sqrt(X.var(axis=0) + spec.eps))[0], rtol=1e-9, atol=1e-12)

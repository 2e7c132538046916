"""Known-answer tests of normlab.layer_inputs on hand-built matrices."""

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

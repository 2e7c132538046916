"""The lecture's slide as known answers: the depth-0 model (no hidden layer) around its zero start.

A model of depth 0 is softmax (or linear) regression on the inputs, so the lecture slice of its only layer
(the output layer) over the weights (W[a, j], W[b, j]) of inputs a = hi, b = lo into output unit j has a
closed-form 2x2 Gauss-Newton matrix:

* softmax cross-entropy (mean over m examples): G = (1/m) sum_i p_ij (1 - p_ij) x_i x_i^T over (x_ia, x_ib),
  p_ij the softmax probability of class j on example i (1/k at W = 0, b = 0);
* mse (mean over m examples and n_out outputs): G = (2 / (m n_out)) sum_i x_i x_i^T, whatever W.

At W = 0 the slice's axis ratio is that of the two inputs' second-moment matrix: on ``lecture`` (two
features on scales 1000:1) ~1000 raw and ~1 standardized, the slide.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab import datasets, model, preprocess, variants
from normlab import landscape as ls

F64 = jnp.float64


def _closed_form(spec, params, X, j, a, b):
    """The closed-form 2x2 GGN of the depth-0 model's slice on (W[a, j], W[b, j]) (module docstring),
    float64 numpy; written out independently of normlab.landscape."""
    X = np.asarray(X, np.float64)
    m = X.shape[0]
    x = X[:, [a, b]]  # (m, 2)
    if spec.loss == "softmax_cross_entropy":
        logits = X @ np.asarray(params["layer1"]["W"], np.float64) + np.asarray(params["layer1"]["b"], np.float64)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = p / p.sum(axis=1, keepdims=True)
        w = p[:, j] * (1.0 - p[:, j])
        return (x * w[:, None]).T @ x / m
    n_out = spec.sizes[-1]
    return 2.0 / (m * n_out) * x.T @ x


def _data(seed, m=40, scales=(0.3, 5.0, 1.0)):
    """(m, 3) inputs on three scales, not centred (a common mean enters the second moment)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, len(scales))) * np.array(scales) + np.array([0.5, -1.0, 2.0])


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_depth0_slice_ggn_equals_the_closed_form(loss):
    spec = model.ModelSpec(sizes=(3, 3), loss=loss)
    assert spec.depth == 0 and spec.n_layers == 1
    params = model.init_params(spec, jax.random.PRNGKey(3), F64)
    assert all(not np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(params))  # the zero start
    X = _data(1)
    y = (np.random.default_rng(2).integers(0, 3, size=40) if loss == "softmax_cross_entropy"
         else np.random.default_rng(2).normal(size=(40, 3)))
    rng = np.random.default_rng(4)
    moved = {"layer1": {"W": jnp.asarray(rng.normal(size=(3, 3)) * 0.7), "b": jnp.asarray(rng.normal(size=3))}}
    for name, p in (("zero", params), ("moved", moved)):
        one = ls.lecture_slice(spec, p, X, y, 1, n_points=5, extent=0.5)
        every, = ls.lecture_slices(spec, p, X, y, n_points=5, extent=0.5)
        j, hi, lo = one.info["unit"], one.info["input_hi"], one.info["input_lo"]
        assert (hi, lo) == (1, 0)  # RMS: feature 1 the largest, feature 0 the smallest
        assert (every.info["unit"], every.info["input_hi"], every.info["input_lo"]) == (j, hi, lo)
        ref = _closed_form(spec, p, X, j, hi, lo)
        if name == "zero" and loss == "softmax_cross_entropy":
            # every p_ij = 1/k: G = (1/m) (1/k)(1 - 1/k) X^T X over the two inputs, the same for every unit
            x = X[:, [hi, lo]]
            np.testing.assert_allclose(ref, (1 / 3) * (2 / 3) * x.T @ x / 40, rtol=1e-14)
            assert j == 0  # equal traces: the lowest unit
        for s in (one, every):
            np.testing.assert_allclose(s.ggn, ref, rtol=1e-6, atol=0, err_msg=name)
            assert not s.projected and not s.flat_direction and not s.degenerate
            np.testing.assert_allclose(s.origin, np.asarray(p["layer1"]["W"])[[hi, lo], j])
        row = ls.slice_row(one)
        lam = np.linalg.eigvalsh(ref)
        assert row["axis_ratio_ggn"] == pytest.approx(math.sqrt(lam[1] / lam[0]), rel=1e-6)
        assert row["projected"] is False and not row["singular"]
        # the grid is the loss at the shifted weights
        np.testing.assert_allclose(one.loss, every.loss, rtol=1e-12)
        W = np.asarray(p["layer1"]["W"]).copy()
        W[hi, j] += one.alphas[0]
        W[lo, j] += one.betas[-1]
        corner = model.loss(spec, {"layer1": {"W": jnp.asarray(W), "b": p["layer1"]["b"]}}, jnp.asarray(X),
                            jnp.asarray(y))
        assert one.loss[0, -1] == pytest.approx(float(corner), rel=1e-12)
    # a given unit: the closed form of that unit (at W != 0 the units' p_ij differ)
    given = ls.lecture_slice(spec, moved, X, y, 1, n_points=3, extent=0.5, unit=2)
    np.testing.assert_allclose(given.ggn, _closed_form(spec, moved, X, 2, 1, 0), rtol=1e-6, atol=0)


def _lecture_split():
    """The ``lecture`` dataset's training split, raw and standardized (``normlab.preprocess``), and its
    analysis set's size (config ``analysis.max_examples``)."""
    df = datasets.lecture_dataset()
    data = preprocess.prepare(df, "target", 0.25, 0, ("raw", "standardize"))
    return {t: (data[t]["X_train"][:512], data[t]["y_train"][:512]) for t in ("raw", "standardize")}


def test_lecture_dataset_at_zero_init_is_the_slide():
    """The depth-0 arms of the study on ``lecture`` at init (W = 0): the layer-1 lecture slice's axis ratio
    is the ratio of the two features' scales: ~1000 raw, within the features' RMS ratio (at least it: a 2x2
    PSD matrix's eigenvalues bracket its diagonal; at most 1% above it: with scales this far apart the sample
    correlation c adds only a factor ~1/sqrt(1 - c^2)), and ~1 standardized (within 1.1: equal scales leave
    only sqrt((1 + |c|) / (1 - |c|)), 1.05 here)."""
    split = _lecture_split()
    ratios = {}
    for treatment, (X, y) in split.items():
        spec = variants.model_spec(variants.Variant(treatment, "none", 0), 2, 2, 16, "relu", 1e-5)
        params = model.init_params(spec, jax.random.PRNGKey(0), F64)
        sl, = ls.lecture_slices(spec, params, X, y, n_points=5, extent=1.0)
        row = ls.slice_row(sl)
        assert not row["singular"] and not row["projected"]
        rms = np.sqrt(np.mean(np.square(X), axis=0))
        np.testing.assert_allclose(sl.info["input_rms"], rms, rtol=1e-12)
        rms_ratio = rms.max() / rms.min()
        ratio = row["axis_ratio_ggn"]
        assert ratio >= rms_ratio * (1 - 1e-9), (treatment, ratio, rms_ratio)
        if treatment == "raw":
            assert ratio <= 1.01 * rms_ratio, (ratio, rms_ratio)
        # the closed form at p = 1/2: G = X^T X / (4 m), the same ratio as the features' second moment
        x = X[:, [sl.info["input_hi"], sl.info["input_lo"]]]
        np.testing.assert_allclose(sl.ggn, x.T @ x / (4 * X.shape[0]), rtol=1e-6)
        ratios[treatment] = ratio
    assert 900 < ratios["raw"] < 1100
    assert 1.0 <= ratios["standardize"] < 1.1

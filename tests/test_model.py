"""Known-answer tests of normlab.model (the MLP of docs/methods.md) and normlab.io (checkpoint files).

Every reference value is computed here with numpy from the definitions in docs/methods.md, not
with normlab. Parameters are drawn with numpy (no JAX random kernels to compile), in float64.
"""

import json
import os
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab import io
from normlab import model as M

# ---------------------------------------------------------------- independent numpy reference


def np_bn(z, gamma, beta, eps, mean=None, var=None):
    """BN by its definition: batch mean, biased batch variance, eps, then gamma and beta."""
    z = np.asarray(z, np.float64)
    if mean is None:
        mean = z.sum(axis=0) / z.shape[0]
        var = ((z - mean) ** 2).sum(axis=0) / z.shape[0]
    return (z - mean) / np.sqrt(var + eps) * gamma + beta


def np_ln(z, gamma, beta, eps):
    mean = z.mean(axis=1, keepdims=True)
    var = ((z - mean) ** 2).mean(axis=1, keepdims=True)
    return (z - mean) / np.sqrt(var + eps) * gamma + beta


def np_forward(sizes, norm, activation, eps, params, X, stats=None):
    """(outputs, inputs A[0..L-1], pre-norm Z[1..L]) of the docs/methods.md network, in numpy."""
    L = len(sizes) - 1
    act = (lambda z: np.maximum(z, 0.0)) if activation == "relu" else np.tanh
    a, inputs, pre = np.asarray(X, np.float64), [], []
    for l in range(1, L + 1):
        p = {k: np.asarray(v, np.float64) for k, v in params[f"layer{l}"].items()}
        inputs.append(a)
        z = a @ p["W"] + p.get("b", 0.0)
        pre.append(z)
        if l == L:
            return z, inputs, pre
        if norm == "batchnorm":
            m, v = (None, None) if stats is None else stats[l - 1]
            z = np_bn(z, p["gamma"], p["beta"], eps, m, v)
        elif norm == "layernorm":
            z = np_ln(z, p["gamma"], p["beta"], eps)
        a = act(z)


def np_softmax_ce(out, y):
    out = out - out.max(axis=1, keepdims=True)
    logp = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y])


def random_params(spec, seed):
    """Generic parameters (no zero biases, no unit gammas) in the layout docs/methods.md prescribes."""
    rng = np.random.default_rng(seed)
    L = len(spec.sizes) - 1
    params = {}
    for l in range(1, L + 1):
        n_in, n_out = spec.sizes[l - 1], spec.sizes[l]
        p = {"W": rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)}
        hidden = l < L
        if not (spec.norm == "batchnorm" and hidden):
            p["b"] = 0.5 * rng.normal(size=n_out)
        if spec.norm != "none" and hidden:
            p["gamma"] = 1.0 + 0.3 * rng.normal(size=n_out)
            p["beta"] = 0.3 * rng.normal(size=n_out)
        params[f"layer{l}"] = {k: jnp.asarray(v) for k, v in p.items()}
    return params


RNG = np.random.default_rng(12345)
X = RNG.normal(size=(32, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + np.array([0.0, 5.0, -1.0, 0.0, 2.0])
Y = RNG.integers(0, 3, 32)

# ---------------------------------------------------------------- normalization layers


@pytest.mark.parametrize("eps", [1e-5, 0.3])
def test_batch_norm_equals_definition(eps):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(9, 6)) * rng.uniform(0.1, 50, 6) + rng.normal(size=6) * 10
    gamma, beta = rng.normal(size=6), rng.normal(size=6)
    got = np.asarray(M.batch_norm(jnp.asarray(z), jnp.asarray(gamma), jnp.asarray(beta), eps))
    np.testing.assert_allclose(got, np_bn(z, gamma, beta, eps), rtol=1e-12, atol=1e-12)
    # biased variance (divide by m), not the unbiased one (m - 1): with gamma=1, beta=0, each unit's
    # output has mean 0 and variance var / (var + eps), exactly
    out = np.asarray(M.batch_norm(jnp.asarray(z), jnp.ones(6), jnp.zeros(6), eps))
    var = z.var(axis=0, ddof=0)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), var / (var + eps), rtol=1e-12)
    # explicit statistics replace the batch ones
    mean_s, var_s = rng.normal(size=6), rng.uniform(0.5, 2, 6)
    got = np.asarray(M.batch_norm(jnp.asarray(z), jnp.asarray(gamma), jnp.asarray(beta), eps,
                                  (jnp.asarray(mean_s), jnp.asarray(var_s))))
    np.testing.assert_allclose(got, (z - mean_s) / np.sqrt(var_s + eps) * gamma + beta, rtol=1e-12)


def test_layer_norm_normalizes_each_example():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(7, 10)) * np.arange(1, 8)[:, None] + np.arange(7)[:, None] * 3.0
    eps = 1e-3
    out = np.asarray(M.layer_norm(jnp.asarray(z), jnp.ones(10), jnp.zeros(10), eps))
    var = z.var(axis=1)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-12)  # per example (row), not per unit
    np.testing.assert_allclose(out.var(axis=1), var / (var + eps), rtol=1e-12)
    assert np.abs(out.mean(axis=0)).max() > 1e-3  # the columns are not what gets normalized
    gamma, beta = rng.normal(size=10), rng.normal(size=10)
    got = np.asarray(M.layer_norm(jnp.asarray(z), jnp.asarray(gamma), jnp.asarray(beta), eps))
    np.testing.assert_allclose(got, np_ln(z, gamma, beta, eps), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("norm,activation", [("none", "relu"), ("batchnorm", "relu"), ("layernorm", "tanh")])
def test_forward_with_inputs_matches_numpy(norm, activation):
    spec = M.ModelSpec((5, 7, 6, 3), activation=activation, norm=norm, eps=1e-3)
    params = random_params(spec, 2)
    out, inputs, pre = M.forward_with_inputs(spec, params, jnp.asarray(X))
    ref_out, ref_inputs, ref_pre = np_forward(spec.sizes, norm, activation, spec.eps, params, X)
    assert len(inputs) == len(pre) == spec.n_layers == 3
    np.testing.assert_array_equal(np.asarray(inputs[0]), X)  # A[0] = X
    for l in range(3):
        assert inputs[l].shape == (32, spec.sizes[l])
        np.testing.assert_allclose(np.asarray(inputs[l]), ref_inputs[l], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(pre[l]), ref_pre[l], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=1e-10, atol=1e-12)
    # the output layer is linear and never normalized: outputs are its pre-norm values
    np.testing.assert_array_equal(np.asarray(out), np.asarray(pre[-1]))
    # consistency of the returned pieces: A[l] = act(norm(Z[l])) with Z[l] = A[l-1] W[l] (+ b[l])
    act = (lambda z: np.maximum(z, 0)) if activation == "relu" else np.tanh
    for l in (1, 2):
        p = {k: np.asarray(v) for k, v in params[f"layer{l}"].items()}
        z = np.asarray(pre[l - 1])
        np.testing.assert_allclose(z, np.asarray(inputs[l - 1]) @ p["W"] + p.get("b", 0), rtol=1e-10, atol=1e-12)
        normed = {"none": lambda z: z, "batchnorm": lambda z, p=p: np_bn(z, p["gamma"], p["beta"], 1e-3),
                  "layernorm": lambda z, p=p: np_ln(z, p["gamma"], p["beta"], 1e-3)}[norm](z)
        np.testing.assert_allclose(np.asarray(inputs[l]), act(normed), rtol=1e-10, atol=1e-12)
    # loss: mean softmax cross-entropy over the examples
    np.testing.assert_allclose(float(M.loss(spec, params, jnp.asarray(X), jnp.asarray(Y))),
                               np_softmax_ce(ref_out, Y), rtol=1e-12)


def test_batchnorm_layer_inputs_are_standardized_before_gamma_beta():
    """With gamma=1, beta=0 (init) the BN output of every hidden unit has batch mean 0 and variance
    var/(var+eps) regardless of the scale of X: the layer's own statistics, not the data's."""
    spec = M.ModelSpec((5, 8, 8, 2), activation="tanh", norm="batchnorm", eps=1e-5)
    params = random_params(spec, 3)
    for l in (1, 2):
        params[f"layer{l}"]["gamma"] = jnp.ones(8)
        params[f"layer{l}"]["beta"] = jnp.zeros(8)
    _, inputs, pre = M.forward_with_inputs(spec, params, jnp.asarray(X * 1000.0))
    for l in (1, 2):
        bn = np.arctanh(np.clip(np.asarray(inputs[l]), -1 + 1e-15, 1 - 1e-15))  # undo tanh
        var = np.asarray(pre[l - 1]).var(axis=0)
        np.testing.assert_allclose(bn.mean(axis=0), 0.0, atol=1e-6)
        np.testing.assert_allclose(bn.var(axis=0), var / (var + 1e-5), rtol=1e-6)


def test_bias_absent_under_batchnorm_hidden_layers_present_in_output():
    for norm, expect_b, expect_affine in [("batchnorm", [False, False, True], [True, True, False]),
                                          ("layernorm", [True, True, True], [True, True, False]),
                                          ("none", [True, True, True], [False, False, False])]:
        spec = M.ModelSpec((5, 4, 4, 3), norm=norm)
        assert [M.has_bias(spec, l) for l in (1, 2, 3)] == expect_b, norm
        assert [M.has_affine_norm(spec, l) for l in (1, 2, 3)] == expect_affine, norm
    # and the parameters a BN network is built with follow the same layout (shapes per docs/methods.md)
    spec = M.ModelSpec((5, 4, 4, 3), norm="batchnorm")
    params = random_params(spec, 0)
    out, _, pre = M.forward_with_inputs(spec, params, jnp.asarray(X))
    assert sorted(params["layer1"]) == ["W", "beta", "gamma"]
    assert sorted(params["layer3"]) == ["W", "b"]
    # a bias added before BN would be removed by the mean subtraction: the forward pass must not
    # need one; and the output layer's bias shifts the outputs one for one
    shifted = {k: dict(v) for k, v in params.items()}
    shifted["layer3"]["b"] = params["layer3"]["b"] + 1.0
    np.testing.assert_allclose(np.asarray(M.forward(spec, shifted, jnp.asarray(X))), np.asarray(out) + 1.0,
                               rtol=1e-12)


def test_population_stats_equal_batch_stats_of_reference():
    spec = M.ModelSpec((5, 6, 6, 3), norm="batchnorm", eps=1e-4)
    params = random_params(spec, 4)
    stats = M.population_stats(spec, params, jnp.asarray(X))
    _, _, ref_pre = np_forward(spec.sizes, "batchnorm", "relu", 1e-4, params, X)
    assert len(stats) == spec.depth == 2
    for (mean, var), z in zip(stats, ref_pre[:-1], strict=True):
        np.testing.assert_allclose(np.asarray(mean), z.mean(axis=0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(var), z.var(axis=0, ddof=0), rtol=1e-10, atol=1e-12)
    # evaluating the reference batch with its own population stats = training mode on that batch
    np.testing.assert_allclose(np.asarray(M.forward(spec, params, jnp.asarray(X), stats)),
                               np.asarray(M.forward(spec, params, jnp.asarray(X))), rtol=1e-10, atol=1e-12)
    # new data with fixed statistics: each example's output does not depend on the rest of its batch
    X_new = X[:5] * 2.0 - 1.0
    one_by_one = np.concatenate([np.asarray(M.forward(spec, params, jnp.asarray(X_new[i:i + 1]), stats))
                                 for i in range(5)])
    np_stats = [(np.asarray(m), np.asarray(v)) for m, v in stats]
    ref = np_forward(spec.sizes, "batchnorm", "relu", 1e-4, params, X_new, np_stats)[0]
    np.testing.assert_allclose(one_by_one, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(M.forward(spec, params, jnp.asarray(X_new), stats)), ref, rtol=1e-10)


def test_losses_and_accuracy():
    spec = M.ModelSpec((5, 3), loss="softmax_cross_entropy")
    W = np.zeros((5, 3))
    params = {"layer1": {"W": jnp.asarray(W), "b": jnp.asarray([0.0, np.log(2.0), 0.0])}}
    # logits (0, log 2, 0) for every row: p = (1/4, 1/2, 1/4)
    y = np.array([0, 1, 1, 2])
    expected = -np.mean(np.log([0.25, 0.5, 0.5, 0.25]))
    np.testing.assert_allclose(float(M.loss(spec, params, jnp.asarray(X[:4]), jnp.asarray(y))), expected, rtol=1e-12)
    assert float(M.accuracy(spec, params, jnp.asarray(X[:4]), jnp.asarray(y))) == 0.5
    mse = M.ModelSpec((5, 2), loss="mse")
    p2 = {"layer1": {"W": jnp.zeros((5, 2)), "b": jnp.asarray([1.0, -2.0])}}
    target = np.array([[0.0, 0.0], [1.0, 1.0]])
    # squared errors: (1, 4), (0, 9): mean over all entries = 14 / 4
    assert float(M.loss(mse, p2, jnp.asarray(X[:2]), jnp.asarray(target))) == pytest.approx(3.5, rel=1e-12)


# ---------------------------------------------------------------- spec and checkpoint round trips


def test_model_spec_json_round_trip():
    spec = M.ModelSpec([64, 32, 32, 10], activation="tanh", norm="batchnorm", eps=1e-3, loss="mse",
                       input="standardize")
    text = spec.to_json()
    d = json.loads(text)
    assert d == {"sizes": [64, 32, 32, 10], "activation": "tanh", "norm": "batchnorm", "eps": 1e-3, "loss": "mse",
                 "input": "standardize", "input_norm": "none", "depth": 2}
    assert M.ModelSpec.from_json(text) == spec and M.ModelSpec.from_json(text).input == "standardize"
    assert spec.depth == 2 and spec.n_layers == 3
    assert spec.to_json() == M.ModelSpec.from_json(text).to_json()  # byte-stable
    for bad in ({"norm": "groupnorm"}, {"activation": "gelu"}, {"loss": "hinge"}):
        with pytest.raises(ValueError):
            M.ModelSpec((3, 2), **bad)
    with pytest.raises(ValueError):
        M.ModelSpec((3,))


def test_model_spec_identity_ignores_the_input_treatment():
    # the input treatment is provenance: code compiled for one treatment's network serves the others
    raw = M.ModelSpec((13, 8, 3), norm="batchnorm", input="raw")
    std = M.ModelSpec((13, 8, 3), norm="batchnorm", input="standardize")
    assert raw == std and hash(raw) == hash(std) and raw.to_json() != std.to_json()
    assert raw != M.ModelSpec((13, 8, 3), norm="none", input="raw")
    assert raw != M.ModelSpec((13, 8, 8, 3), norm="batchnorm", input="raw")


def test_flatten_unflatten_round_trip_and_layer_order():
    spec = M.ModelSpec((5,) + (3,) * 10 + (2,), norm="batchnorm")  # 11 layers: layer10 must sort after layer9
    params = random_params(spec, 5)
    flat = M.flatten_params(params)
    assert "layer11.b" in flat and "layer1.W" in flat and "layer1.b" not in flat
    assert flat["layer2.W"].shape == (3, 3) and isinstance(flat["layer2.W"], np.ndarray)
    back = M.unflatten_params(dict(reversed(list(flat.items()))))
    assert list(back) == [f"layer{l}" for l in range(1, 12)]
    for k, p in params.items():
        assert sorted(back[k]) == sorted(p)
        for n in p:
            np.testing.assert_array_equal(np.asarray(back[k][n]), np.asarray(p[n]))


def test_checkpoint_file_round_trip(tmp_path):
    spec = M.ModelSpec((5, 6, 3), norm="batchnorm")
    params = random_params(spec, 6)
    path = tmp_path / "ckpt.npz"
    io.write_npz(path, M.flatten_params(params))
    with np.load(path) as f:
        assert sorted(f.files) == ["layer1.W", "layer1.beta", "layer1.gamma", "layer2.W", "layer2.b"]
        back = M.unflatten_params(f)
    np.testing.assert_array_equal(np.asarray(M.forward(spec, back, jnp.asarray(X))),
                                  np.asarray(M.forward(spec, params, jnp.asarray(X))))


# ---------------------------------------------------------------- io


def test_write_npz_is_byte_deterministic_and_readable(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    arrays = {"b": rng.normal(size=(3, 4)).astype(np.float32), "a": np.arange(5), "c": np.array(["x", "yz"])}
    io.write_npz(tmp_path / "one.npz", arrays)
    # a later clock and another insertion order must not change a byte (zip members carry dates)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3 * 86400 + 7)
    io.write_npz(tmp_path / "two.npz", dict(reversed(list(arrays.items()))))
    monkeypatch.undo()
    one, two = (tmp_path / "one.npz").read_bytes(), (tmp_path / "two.npz").read_bytes()
    assert one == two
    with np.load(tmp_path / "one.npz") as f:
        assert sorted(f.files) == ["a", "b", "c"]
        for k, v in arrays.items():
            np.testing.assert_array_equal(f[k], v)
            assert f[k].dtype == v.dtype
    with zipfile.ZipFile(tmp_path / "one.npz") as zf:
        assert [i.date_time for i in zf.infolist()] == [(1980, 1, 1, 0, 0, 0)] * 3


def test_atomic_path_leaves_nothing_when_body_raises(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            assert tmp.exists() and tmp.parent == target.parent
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind either
    # an existing file survives a failed rewrite untouched
    io.write_text(target, "good\n")
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(target) as tmp:
            tmp.write_text("bad")
            raise KeyboardInterrupt
    assert target.read_text() == "good\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_outputs_from_equals_forward_for_every_layer(norm):
    """From Z[l] = A[l-1] W[l] + b[l] (``affine``), the layers above l give the network's outputs: with l a
    Python int for every layer 1..L (L returns Z[L] itself), and with l traced for every hidden layer, where
    one compiled program serves every l (the scan skips the steps k <= l)."""
    spec = M.ModelSpec((3, 4, 4, 4, 2), norm=norm, activation="tanh")
    params = M.init_params(spec, jax.random.PRNGKey(3), jnp.float64)
    params = jax.tree.map(lambda a: a + 0.1, params)  # generic biases, gammas, betas
    X = jnp.asarray(np.random.default_rng(0).normal(size=(10, 3)))
    out, inputs, pre = M.forward_with_inputs(spec, params, X)
    for l in range(1, spec.n_layers + 1):
        np.testing.assert_allclose(M.affine(params[f"layer{l}"], inputs[l - 1]), pre[l - 1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(M.outputs_from(spec, params, l, pre[l - 1]), out, rtol=1e-12, atol=1e-12)
    traced = jax.jit(lambda p, l, z: M.outputs_from(spec, p, l, z))
    for l in range(1, spec.n_layers):
        np.testing.assert_allclose(traced(params, l, pre[l - 1]), out, rtol=1e-12, atol=1e-12)
    assert traced._cache_size() == 1
    # a wrong layer (the tail of layer 2 from layer 1's Z) does not give the outputs
    assert not np.allclose(M.outputs_from(spec, params, 2, pre[0]), out)
    with pytest.raises(ValueError, match="one width"):
        jax.jit(lambda l, z: M.outputs_from(M.ModelSpec((3, 4, 5, 2)), params, l, z))(1, pre[0])
    with pytest.raises(ValueError, match="not in 1..4"):
        M.outputs_from(spec, params, 5, out)


def test_outputs_from_serves_a_model_without_hidden_layers():
    """Depth 0 (the lecture's own model): Z[1] are the outputs, and forward is logistic regression."""
    spec = M.ModelSpec((3, 2))
    params = M.init_params(spec, jax.random.PRNGKey(0), jnp.float64)
    X = jnp.asarray(np.random.default_rng(1).normal(size=(6, 3)))
    z = M.affine(params["layer1"], X)
    np.testing.assert_allclose(z, X @ params["layer1"]["W"] + params["layer1"]["b"], rtol=1e-12)
    np.testing.assert_array_equal(M.outputs_from(spec, params, 1, z), z)
    np.testing.assert_allclose(M.forward(spec, params, X), z, rtol=1e-12)


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_outputs_from_batches_over_a_leading_seed_axis(norm):
    """Parameters of several seeds stacked on a leading axis run through jax.vmap of ``outputs_from`` (traced
    layer) and give each seed's own outputs."""
    spec = M.ModelSpec((3, 4, 4, 2), norm=norm)
    seeds = [M.init_params(spec, jax.random.PRNGKey(s), jnp.float64) for s in range(3)]
    X = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)))
    by_seed = jax.tree.map(lambda *a: jnp.stack(a), *seeds)
    Z1 = jax.vmap(lambda p: M.affine(p["layer1"], X))(by_seed)
    got = jax.vmap(lambda p, z: M.outputs_from(spec, p, jnp.int32(1), z))(by_seed, Z1)
    for s, p in enumerate(seeds):
        np.testing.assert_allclose(got[s], M.forward(spec, p, X), rtol=1e-12, atol=1e-12)
    assert not np.allclose(got[0], got[1])

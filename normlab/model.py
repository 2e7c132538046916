"""The multilayer perceptron of docs/methods.md, as pure functions of a parameter pytree.

Layers are numbered l = 1..L with L = depth + 1 (``normlab.spec``). Hidden layer l computes
``z = a @ W + b`` (``b`` is absent under batch norm, where BN's beta takes its role), then the
normalization (if any), then the activation. The output layer is linear and never normalized; a model of
depth 0 is that output layer alone (logistic / softmax or linear regression on the inputs).

Parameters are a dict ``{"layer1": {"W": (n_in, n_out), "b": (n_out,), ...}, ...}``; the same names
flattened with a dot (``layer1.W``) are the array names of the saved ``.npz`` checkpoints. Every function
is pure JAX, so parameters with a leading seed axis run through ``jax.vmap`` of it.
Under ``spec.input_norm == "batchnorm"`` the network first standardizes each input feature with the batch's
statistics (``network_input``); A[0], the input of layer 1, is that standardized batch.
Batch norm always uses the statistics of the batch it is given (training mode) unless explicit
statistics are passed: there are no running statistics to update, so no analysis pass can
change them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from normlab.spec import (  # noqa: F401  (the spec's names, re-exported for the model's callers)
    ACTIVATIONS,
    LOSSES,
    NORMS,
    ModelSpec,
    equal_hidden_widths,
    has_affine_norm,
    has_bias,
    layer_names,
    layer_param_count,
    matmul_flops,
)

Params = dict[str, dict[str, jax.Array]]


def init_params(spec: ModelSpec, key: jax.Array, dtype=jnp.float32) -> Params:
    """He-normal weights (variance 2 / fan_in) for hidden layers, LeCun-normal (1 / fan_in) for the
    linear output layer; zero biases and betas, unit gammas. All weights come from one draw of
    standard normals (layer 1's first, row-major), cut and scaled per layer: one random-number kernel
    for the whole model, not one per layer to compile.

    A model of depth 0 (no hidden layer: logistic / softmax or linear regression, a convex loss) starts at
    zero, whatever the key: the lecture's picture is the cost around W = 0, where every class has
    probability 1/k."""
    params: Params = {}
    counts = [spec.sizes[l - 1] * spec.sizes[l] for l in range(1, spec.n_layers + 1)]
    z = jax.random.normal(key, (sum(counts),), dtype)
    start = 0
    for l in range(1, spec.n_layers + 1):
        n_in, n_out = spec.sizes[l - 1], spec.sizes[l]
        gain = 2.0 if l < spec.n_layers else 1.0
        W = z[start:start + counts[l - 1]].reshape(n_in, n_out) * jnp.sqrt(gain / n_in).astype(dtype)
        if spec.depth == 0:
            W = jnp.zeros_like(W)
        start += counts[l - 1]
        p = {"W": W}
        if has_bias(spec, l):
            p["b"] = jnp.zeros((n_out,), dtype)
        if has_affine_norm(spec, l):
            p["gamma"] = jnp.ones((n_out,), dtype)
            p["beta"] = jnp.zeros((n_out,), dtype)
        params[f"layer{l}"] = p
    return params


def batch_norm(z: jax.Array, gamma: jax.Array, beta: jax.Array, eps: float, stats=None) -> jax.Array:
    """Batch norm of pre-activations ``z`` (m, n): per unit, subtract the batch mean, divide by
    sqrt(biased batch variance + eps), then scale by gamma and shift by beta. ``stats`` = (mean, var),
    each (n,), replaces the batch statistics (evaluation with fixed statistics)."""
    if stats is None:
        mean = jnp.mean(z, axis=0)
        var = jnp.mean(jnp.square(z - mean), axis=0)
    else:
        mean, var = stats
    return (z - mean) / jnp.sqrt(var + eps) * gamma + beta


def input_batch_stats(X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-feature (mean, biased variance) of a batch X (m, n_features), each (n_features,)."""
    mean = jnp.mean(X, axis=0)
    return mean, jnp.mean(jnp.square(X - mean), axis=0)


def network_input(spec: ModelSpec, X: jax.Array, input_stats=None) -> jax.Array:
    """A[0], the input of layer 1, from the batch X (m, n_features): X itself, or under
    ``spec.input_norm == "batchnorm"`` each feature standardized, (X - mean) / sqrt(var + eps), with the
    batch's statistics (training mode) or ``input_stats`` = (mean, var), each (n_features,) (e.g. running
    statistics at test time)."""
    if spec.input_norm == "none":
        return X
    mean, var = input_batch_stats(X) if input_stats is None else input_stats
    return (X - mean) / jnp.sqrt(var + spec.eps)


def layer_norm(z: jax.Array, gamma: jax.Array, beta: jax.Array, eps: float) -> jax.Array:
    """Layer norm: per example, standardize across the n units of ``z`` (m, n), then gamma, beta."""
    mean = jnp.mean(z, axis=1, keepdims=True)
    var = jnp.mean(jnp.square(z - mean), axis=1, keepdims=True)
    return (z - mean) / jnp.sqrt(var + eps) * gamma + beta


def activation(spec: ModelSpec, z: jax.Array) -> jax.Array:
    """The hidden layers' activation (``spec.activation``), elementwise on z (any shape)."""
    return jax.nn.relu(z) if spec.activation == "relu" else jnp.tanh(z)


def forward_with_inputs(spec: ModelSpec, params: Params, X: jax.Array, norm_stats=None, input_stats=None):
    """Run the network on X (m, n_features).

    Returns ``(outputs, layer_inputs, pre_norm)``: outputs (m, n_outputs); layer_inputs[l-1] = A[l-1],
    the input of layer l (A[0] = ``network_input(spec, X)``: X unless the network normalizes its inputs),
    each (m, sizes[l-1]); pre_norm[l-1] = Z[l] before normalization.
    ``norm_stats``: optional list of per-hidden-layer (mean, var) used by batch norm instead of the
    batch statistics (see ``population_stats``); ``input_stats``: the inputs' (mean, var) used instead
    of the batch's under ``spec.input_norm == "batchnorm"``.
    """
    a = network_input(spec, X, input_stats)
    layer_inputs, pre_norm = [], []
    for l in range(1, spec.n_layers + 1):
        p = params[f"layer{l}"]
        layer_inputs.append(a)
        z = affine(p, a)
        pre_norm.append(z)
        if l == spec.n_layers:
            return z, layer_inputs, pre_norm
        a = norm_activation(spec, z, p.get("gamma"), p.get("beta"), None if norm_stats is None else norm_stats[l - 1])
    raise AssertionError("unreachable")


def norm_activation(spec: ModelSpec, z: jax.Array, gamma: jax.Array | None, beta: jax.Array | None,
                    stats=None) -> jax.Array:
    """A hidden layer's normalization (``spec.norm``; gamma and beta unused under ``none``) and activation
    of its pre-activations z (m, n). ``stats``: batch norm's (mean, var) instead of the batch's."""
    if spec.norm == "batchnorm":
        z = batch_norm(z, gamma, beta, spec.eps, stats)
    elif spec.norm == "layernorm":
        z = layer_norm(z, gamma, beta, spec.eps)
    return activation(spec, z)


def affine(p: dict, a: jax.Array) -> jax.Array:
    """Layer l's pre-activation ``Z[l] = a @ W + b`` from its input a (m, n_in) and its arrays p
    (``W`` (n_in, n_out), ``b`` (n_out,) if present): (m, n_out). Z[l] is linear in (W, b), so a
    direction (dW, db) of layer l moves it by ``affine({"W": dW, "b": db}, A[l-1])`` with the layers
    below computed once."""
    z = a @ p["W"]
    return z + p["b"] if "b" in p else z


def outputs_from(spec: ModelSpec, params: Params, l, z: jax.Array) -> jax.Array:
    """Network outputs (m, n_out) from layer l's pre-normalization Z[l] (m, sizes[l]): layer l's
    normalization and activation (if l is hidden), then layers l+1..L. Equals ``forward`` when
    ``z = affine(params["layer<l>"], A[l-1])`` on the same batch (BN in training mode on it). The arrays
    of layers 1..l-1 and layer l's W and b are not read.

    ``l``: a Python int in 1..L (the layers above l are unrolled; l = L returns z, the outputs, which also
    serves a model of depth 0), or a traced integer for a hidden layer 1 <= l <= L-1, so that one compiled
    program serves every hidden layer. A traced l needs one hidden width (``equal_hidden_widths``): layers
    2..L-1 run as a scan over their stacked arrays whose steps k <= l are skipped (``lax.cond``), so only
    the layers above l cost time, and the scan is differentiable in reverse mode (a loop from l + 1 would
    not be).
    """
    L = spec.n_layers
    if isinstance(l, int | np.integer):
        if not 1 <= l <= L:
            raise ValueError(f"layer {l} is not in 1..{L}")
        for k in range(int(l), L):
            p = params[f"layer{k}"]
            z = affine(params[f"layer{k + 1}"], norm_activation(spec, z, p.get("gamma"), p.get("beta")))
        return z
    if L < 2 or not equal_hidden_widths(spec):
        raise ValueError(f"a traced layer index needs hidden layers of one width, got sizes {spec.sizes}")
    w = spec.sizes[1]
    hidden = [params[f"layer{k}"] for k in range(1, L)]

    def stacked(name, fill, layers):
        return jnp.stack([p[name] if name in p else jnp.full(w, fill, z.dtype) for p in layers])

    gamma, beta = stacked("gamma", 1, hidden), stacked("beta", 0, hidden)
    h = norm_activation(spec, z, gamma[l - 1], beta[l - 1])
    if L > 2:
        def step(h, layer):
            p, g, bt, k = layer
            return jax.lax.cond(k > l, lambda h: norm_activation(spec, affine(p, h), g, bt), lambda h: h, h), None

        upper = {"W": jnp.stack([p["W"] for p in hidden[1:]]), "b": stacked("b", 0, hidden[1:])}
        h, _ = jax.lax.scan(step, h, (upper, gamma[1:], beta[1:], jnp.arange(2, L)))
    return affine(params[f"layer{L}"], h)


def forward(spec: ModelSpec, params: Params, X: jax.Array, norm_stats=None, input_stats=None) -> jax.Array:
    """Network outputs (m, n_outputs) on X (m, n_features); BN (on hidden layers, and on the inputs under
    ``spec.input_norm``) in training mode unless norm_stats (input_stats) are given."""
    return forward_with_inputs(spec, params, X, norm_stats, input_stats)[0]


def population_stats(spec: ModelSpec, params: Params, X_ref: jax.Array, input_stats=None):
    """Per hidden layer (mean, biased var) of Z[l] over the reference batch X_ref with BN in training
    mode: the fixed statistics used to evaluate a BN model on new data (e.g. test accuracy). The inputs
    are normalized (under ``spec.input_norm``) with ``input_stats`` if given, else with X_ref's own."""
    _, _, pre_norm = forward_with_inputs(spec, params, X_ref, input_stats=input_stats)
    stats = []
    for z in pre_norm[:-1]:
        mean = jnp.mean(z, axis=0)
        stats.append((mean, jnp.mean(jnp.square(z - mean), axis=0)))
    return stats


def loss_from_outputs(spec: ModelSpec, out: jax.Array, y: jax.Array) -> jax.Array:
    """Scalar loss. softmax_cross_entropy: y holds integer class labels (m,), mean over examples.
    mse: y holds targets (m,) or (m, n_outputs), mean of squared error over all entries."""
    if spec.loss == "softmax_cross_entropy":
        logp = jax.nn.log_softmax(out, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y.astype(jnp.int32)[:, None], axis=1))
    target = y.reshape(out.shape).astype(out.dtype)
    return jnp.mean(jnp.square(out - target))


def loss(spec: ModelSpec, params: Params, X: jax.Array, y: jax.Array, norm_stats=None, input_stats=None) -> jax.Array:
    """J(params) on the batch (X, y), BN in training mode on that batch unless norm_stats (input_stats)."""
    return loss_from_outputs(spec, forward(spec, params, X, norm_stats, input_stats), y)


def accuracy(spec: ModelSpec, params: Params, X, y, norm_stats=None, input_stats=None) -> jax.Array:
    """Fraction of correctly classified rows (classification losses only); statistics as in ``forward``."""
    return jnp.mean(jnp.argmax(forward(spec, params, X, norm_stats, input_stats), axis=-1) == y)


def flatten_params(params: Params) -> dict[str, np.ndarray]:
    """``{"layer1.W": array, ...}``: the array names of the checkpoint .npz files."""
    return {f"{layer}.{name}": np.asarray(v) for layer, p in params.items() for name, v in p.items()}


def unflatten_params(arrays: Any) -> Params:
    """Inverse of ``flatten_params``; accepts a dict or an opened .npz file."""
    params: Params = {}
    for key in arrays.keys():
        layer, name = key.split(".", 1)
        params.setdefault(layer, {})[name] = jnp.asarray(arrays[key])
    return dict(sorted(params.items(), key=lambda kv: int(kv[0][5:])))

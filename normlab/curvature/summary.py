"""The per-checkpoint curvature summary of a normlab model (``analyze_curvature``): one ``Spectrum`` per
(scope, matrix), its tidy rows and densities, the scale-invariant sharpness lambda_max(S A S) of the
normalized models (``invariant_lambda_max``), and the cost policy that picks how each block is computed
(dense or iterative, closed form for the output layer, whole-model or layer products).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from normlab.curvature.estimators import (
    default_grid,
    dense_matrix,
    eff_cond,
    gaussian_density,
    hutchinson_trace,
    negative_mass,
    slq,
)
from normlab.curvature.krylov import _child_key, lanczos_lambda_max
from normlab.curvature.mlp import (
    MATRICES,
    SpecLoss,
    _loss_value,
    invariant_scale,
    layer_operator,
    layer_operator_applies,
    model_operator,
    model_scopes,
    output_layer_matrix,
)
from normlab.curvature.operators import CurvatureOperator, scaled_operator
from normlab.invariance import invariant_layers
from normlab.spec import ModelSpec, layer_param_count, matmul_flops


@dataclasses.dataclass
class Spectrum:
    """Curvature summary of one (scope, matrix). dense: exact eigendecomposition was used.
    lambda_max, trace, trace_stderr (0 when dense): loss units per squared parameter unit.
    top (k,) descending, vectors (k, n) flat block eigenvectors, negative_mass (see ``negative_mass``),
    nodes/weights (p, m) quadrature (dense: (1, n) eigenvalues with weights 1/n)."""

    n: int
    dense: bool
    lambda_max: float
    trace: float
    trace_stderr: float
    top: np.ndarray
    vectors: np.ndarray
    negative_mass: float
    nodes: np.ndarray
    weights: np.ndarray

    @property
    def eff_cond(self) -> float:
        return eff_cond(self.lambda_max, self.trace, self.n)


def dense_spectrum(vals, vecs, top_k: int = 5) -> Spectrum:
    """The exact ``Spectrum`` of a block from all its eigenpairs: vals (n,) ascending, vecs (n, n) as columns
    (``np.linalg.eigh``'s output)."""
    vals_np, n = np.asarray(vals), len(vals)
    k = min(top_k, n)
    vecs_np = np.asarray(vecs)[:, ::-1][:, :k].T.copy()
    return Spectrum(n, True, float(vals_np[-1]), float(vals_np.sum()), 0.0, vals_np[::-1][:k].copy(),
                    vecs_np, negative_mass(vals_np), vals_np[None, :], np.full((1, n), 1.0 / n, vals_np.dtype))


def spectrum(op: CurvatureOperator, key: jax.Array, top_k: int = 5, dense_max_params: int = 1024,
             num_steps: int = 60, trace_probes: int = 64, slq_probes: int = 8,
             batch_size: int = 8) -> Spectrum:
    """Summarize one operator.

    Dense eigh when ``op.n <= dense_max_params``. Otherwise SLQ with ``slq_probes`` Rademacher probes of
    ``num_steps`` Lanczos steps each (top-k eigenpairs and lambda_max from the first probe's run) and
    a Hutchinson trace with ``trace_probes`` probes, deflated by the first probe's Lanczos basis (its
    trace exact, the probes estimate the rest: same products, a smaller standard error). All products go
    ``min(batch_size, slq_probes)`` vectors at a time, so the model's product is compiled once.
    """
    return _spectrum(op, key, top_k, dense_max_params, num_steps, trace_probes, slq_probes, batch_size)[0]


def _product_width(batch_size: int, slq_probes: int) -> int:
    """How many vectors ``spectrum`` sends through the operator at a time (its compiled product's batch)."""
    return max(1, min(batch_size, slq_probes))


def _spectrum(op: CurvatureOperator, key, top_k, dense_max_params, num_steps, trace_probes, slq_probes,
              batch_size) -> tuple[Spectrum, np.ndarray | None]:
    """``spectrum`` and, for a dense block, the dense matrix (n, n) it was decomposed from (else None)."""
    n = op.n
    b = _product_width(batch_size, slq_probes)
    if n <= dense_max_params:
        A = dense_matrix(op, batch_size=b)
        return dense_spectrum(*np.linalg.eigh(A), top_k), A
    q = slq(op, key, slq_probes, num_steps, batch_size=b, top_k=top_k)
    tr = hutchinson_trace(op, key, trace_probes, batch_size=b, basis=q.top.basis, basis_trace=q.top.basis_trace)
    top = np.asarray(q.top.values)
    return Spectrum(n, False, float(top[0]), float(tr.trace), float(tr.stderr),
                    top, np.asarray(q.top.vectors), negative_mass(q.nodes, q.weights),
                    np.asarray(q.nodes), np.asarray(q.weights)), None


@dataclasses.dataclass
class CurvatureResult:
    """Output of ``analyze_curvature``.

    rows: tidy dicts with keys scope, matrix, metric, value (``curvature.csv`` without run/checkpoint).
    densities: one dict per (scope, matrix) with scope, matrix, grid (g,), density (g,), sigma, nodes
    (p, m), weights (p, m). spectra: the full ``Spectrum`` per (scope, matrix), eigenvectors included.
    """

    rows: list[dict]
    densities: list[dict]
    spectra: dict[tuple[str, str], Spectrum]


def spectrum_rows(scope: str, matrix: str, s: Spectrum) -> list[dict]:
    """Tidy rows for one spectrum: lambda_max, trace, eff_cond, lambda_1..k, negative_mass (Hessian
    only), and the extras trace_stderr, n_params, dense (1 if exact eigh, 0 if Lanczos/Hutchinson/SLQ)."""
    vals = [("lambda_max", s.lambda_max), ("trace", s.trace), ("eff_cond", s.eff_cond)]
    vals += [(f"lambda_{i + 1}", float(v)) for i, v in enumerate(s.top)]
    if matrix == "hessian":
        vals.append(("negative_mass", s.negative_mass))
    vals += [("trace_stderr", s.trace_stderr), ("n_params", float(s.n)), ("dense", float(s.dense))]
    return [{"scope": scope, "matrix": matrix, "metric": m, "value": float(v)} for m, v in vals]


# ``analyze_curvature`` builds the output layer's block in closed form (``output_layer_matrix``) and takes its
# dense eigendecomposition when it has at most this many parameters (or at most ``dense_max_params``): exact, and
# no products to compile. The block costs O(m n^2) to build and O(n^3) to decompose on the host, where Lanczos +
# Hutchinson + SLQ cost little per matrix but compile three programs per model shape: up to about a thousand
# parameters (the digits networks' output layer, 650) the closed form is the cheaper; from a few thousand its
# eigendecomposition costs more than compiling the products once the block is measured at several checkpoints.
OUTPUT_DENSE_MAX_PARAMS = 1024


def output_block_in_closed_form(spec: ModelSpec, dense_max_params: int,
                                output_dense_max_params: int = OUTPUT_DENSE_MAX_PARAMS) -> bool:
    """Whether ``analyze_curvature`` takes the output layer's block from ``output_layer_matrix`` (dense, exact, no
    products): when it has at most ``max(dense_max_params, output_dense_max_params)`` parameters."""
    return layer_param_count(spec, spec.n_layers) <= max(dense_max_params, output_dense_max_params)


# ``analyze_curvature`` uses ``layer_operator`` for a checkpoint's layer blocks when their products, made
# with whole-model products, would cost at least this many floating-point operations (forward matmuls x
# products x matrices): below it the time saved is less than compiling the extra programs (one per matrix for
# the hidden layers, one per matrix for the output layer, per model shape). On the default study's models
# (512 examples) that is whole-model products for the depth-2 networks, layer products from depth 4 up.
LAYER_OPERATOR_MIN_FLOPS = 4e9


def _layered_scopes(spec: ModelSpec, scopes: Sequence[str]) -> dict[str, int]:
    """{scope: l} for the scopes ``layer_operator`` can serve."""
    layers = {sc: int(sc[5:]) for sc in scopes if sc.startswith("layer") and sc[5:].isdigit()}
    return {sc: l for sc, l in layers.items() if layer_operator_applies(spec, l)}


def layer_products_pay(spec: ModelSpec, m: int, scopes: Sequence[str], n_matrices: int,
                       dense_max_params: int, num_steps: int, trace_probes: int, slq_probes: int,
                       output_dense_max_params: int = OUTPUT_DENSE_MAX_PARAMS) -> bool:
    """Whether ``analyze_curvature`` (same arguments; m examples) should use ``layer_operator``: the products
    its layer blocks need (n for a dense block, ``slq_probes * num_steps + trace_probes`` otherwise; none for
    an output block in closed form), at the cost of whole-model products (``normlab.spec.matmul_flops``), reach
    ``LAYER_OPERATOR_MIN_FLOPS``."""
    products = 0
    for l in _layered_scopes(spec, scopes).values():
        n = layer_param_count(spec, l)
        if l == spec.n_layers and output_block_in_closed_form(spec, dense_max_params, output_dense_max_params):
            continue
        if n > dense_max_params:
            products += slq_probes * num_steps + trace_probes
        else:
            products += n
    return products * n_matrices * matmul_flops(spec, m) >= LAYER_OPERATOR_MIN_FLOPS


def invariant_scopes(spec: ModelSpec, scopes: Sequence[str]) -> list[str]:
    """The scopes of ``scopes`` that get a scale-invariant lambda_max: ``model`` and each hidden layer
    ``layer<l>`` with invariant groups (``normlab.invariance.invariant_layers``); none for a model without
    batch norm or layer norm on its hidden layers."""
    layers = invariant_layers(spec)
    if not layers:
        return []
    wanted = {"model"} | {f"layer{l}" for l in layers}
    return [sc for sc in scopes if sc in wanted]


def invariant_lambda_max(op: CurvatureOperator, scale: np.ndarray, key, num_steps: int, *, batch_size: int = 1,
                         alloc_steps: int | None = None, dense: np.ndarray | None = None,
                         lambda_max: float | None = None) -> float:
    """lambda_max(S A S) over op's block, A op's matrix and S = diag(scale), scale (N,) in the model's flat
    order (``mlp.invariant_scale``). Units: A's times scale's squared (loss units on the invariant groups).

    The cheapest route first: ``dense`` (n, n), A's block already built (a dense spectrum), gives s A s
    exactly (s = the block's entries of scale); on a block where scale is one constant c (a layer-norm layer's
    W and b: one group) S A S = c^2 A, so c^2 ``lambda_max`` (A's, already measured, with its accuracy).
    Otherwise ``lanczos_lambda_max`` on ``scaled_operator(op, scale)``: a Krylov subspace of ``num_steps``
    dimensions (clipped to n) from ``batch_size`` Gaussian start vectors drawn from ``key``, run side by side
    (the width of op's compiled product, so that no new product is compiled), num_steps / batch_size steps
    each; the largest Ritz value on the union of the runs' subspaces. ``alloc_steps``: the length of the
    Lanczos state (that of the block's own SLQ runs, whose compiled step program is then reused). NaN when the
    recurrence or the dense block is not finite."""
    s = np.asarray(scale, np.float64)[op.indices]
    if dense is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            M = s[:, None] * np.asarray(dense, np.float64) * s[None, :]
        return float(np.linalg.eigvalsh(M)[-1]) if np.all(np.isfinite(M)) else float("nan")
    if lambda_max is not None and np.all(s == s[0]):
        return float(s[0] ** 2 * lambda_max)
    return lanczos_lambda_max(scaled_operator(op, scale), key, num_steps, runs=batch_size, alloc_steps=alloc_steps)


def analyze_curvature(spec: ModelSpec, params, X, y, *, key: jax.Array | None = None,
                      top_k: int = 5, dense_max_params: int = 1024, num_steps: int = 60,
                      trace_probes: int = 64, slq_probes: int = 8,
                      grid: np.ndarray | None = None, grid_size: int = 512, sigma_rel: float = 0.01,
                      sigma: float | None = None, scopes: Sequence[str] | None = None,
                      matrices: Sequence[str] = MATRICES, batch_size: int = 8,
                      layer_products: bool | None = None,
                      output_dense_max_params: int = OUTPUT_DENSE_MAX_PARAMS,
                      invariant_steps: int = 0) -> CurvatureResult:
    """Curvature of a normlab model's analysis loss, for each scope and matrix.

    params: the model's parameters (their dtype is used throughout; X is cast to it). X (m, n_in),
    y (m,) labels or targets: the analysis batch (BN in training mode on it). scopes default to
    ``model_scopes(spec)``. Per (scope, matrix): dense eigh when the block has <= ``dense_max_params``
    parameters, else Lanczos + Hutchinson + SLQ (see ``spectrum``); the output layer's block is dense, from
    ``output_layer_matrix`` (its Hessian and Gauss-Newton blocks are one matrix, built without products),
    where ``output_block_in_closed_form``. ``negative_mass``
    is the exact fraction of |eigenvalue| mass on negative eigenvalues when dense, the SLQ estimate
    otherwise.
    Densities are on ``grid`` if given (then ``sigma`` is required, same units), else on
    ``default_grid(nodes, grid_size, sigma_rel, sigma)``. Rows include the analysis loss (scope
    ``model``, matrix ``none``, metric ``loss``). ``layer_products``: the blocks of layers 2..L go through
    ``layer_operator`` (products from the layer up; the same matrices) -- None decides by cost
    (``layer_products_pay``).

    ``invariant_steps`` > 0 adds, for a model with batch norm or layer norm on its hidden layers, the
    scale-invariant sharpness of each scope of ``invariant_scopes`` (``model`` and the hidden layers): rows
    (scope, ``<matrix>_invariant``, ``lambda_max``, lambda_max(S A S)), A the scope's block of the matrix and
    S = diag(``mlp.invariant_scale``), the norms of the weight groups BN / LN make scale-invariant
    (``invariant_lambda_max``: exact from the block's dense matrix where the spectrum was dense, c^2
    lambda_max where S is one constant c on the block (a layer-norm layer), else a Krylov subspace of
    ``invariant_steps`` dimensions on the same operator: ``invariant_steps`` products, sent as many at a time
    as the spectra's, through their compiled product and Lanczos step). No density, trace or spectrum for
    them. 0 leaves them out.
    """
    key = np.zeros(2, np.uint32) if key is None else key
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    X = jnp.asarray(X, dtype)
    y = jnp.asarray(y) if spec.loss == "softmax_cross_entropy" else jnp.asarray(y, dtype)
    scopes = model_scopes(spec) if scopes is None else list(scopes)
    rows = [{"scope": "model", "matrix": "none", "metric": "loss",
             "value": float(_loss_value(SpecLoss(spec), params, X, y))}]
    densities, spectra = [], {}
    output_scope, output_block = f"layer{spec.n_layers}", None
    layered = _layered_scopes(spec, scopes)
    if layer_products is None:
        layer_products = layer_products_pay(spec, X.shape[0], scopes, len(matrices), dense_max_params, num_steps,
                                            trace_probes, slq_probes, output_dense_max_params)
    closed_form = output_block_in_closed_form(spec, dense_max_params, output_dense_max_params)
    invariant = set(invariant_scopes(spec, scopes)) if invariant_steps > 0 else set()
    scale = invariant_scale(spec, params) if invariant else None
    width = _product_width(batch_size, slq_probes)
    for i, scope in enumerate(scopes):
        for j, matrix in enumerate(matrices):
            if scope == output_scope and closed_form:
                # exact, and no products: n per matrix for a dense block; slq_probes x num_steps + trace_probes
                # per matrix, and three programs to compile, for Lanczos + Hutchinson + SLQ
                if output_block is None:
                    output_block = dense_spectrum(*np.linalg.eigh(output_layer_matrix(spec, params, X, y)), top_k)
                s = output_block
            else:
                if layer_products and scope in layered:
                    op = layer_operator(spec, params, X, y, matrix, layered[scope])
                else:
                    op = model_operator(spec, params, X, y, matrix, scope)
                s, block = _spectrum(op, _child_key(key, 100 * i + j), top_k, dense_max_params, num_steps,
                                     trace_probes, slq_probes, batch_size)
            spectra[(scope, matrix)] = s
            rows += spectrum_rows(scope, matrix, s)
            if scope in invariant:  # never the output layer: op and block are this scope's
                value = invariant_lambda_max(op, scale, _child_key(key, 100 * i + 50 + j), invariant_steps,
                                             batch_size=width, alloc_steps=num_steps, dense=block,
                                             lambda_max=s.lambda_max)
                rows.append({"scope": scope, "matrix": f"{matrix}_invariant", "metric": "lambda_max",
                             "value": value})
            if grid is None:
                g, sg = default_grid(s.nodes, grid_size, sigma_rel, sigma)
            else:
                if sigma is None:
                    raise ValueError("a fixed grid needs an explicit sigma")
                g, sg = np.asarray(grid), float(sigma)
            dens = gaussian_density(s.nodes, s.weights, g, sg)
            densities.append({"scope": scope, "matrix": matrix, "grid": np.asarray(g),
                              "density": dens, "sigma": sg, "nodes": s.nodes,
                              "weights": s.weights})
    return CurvatureResult(rows, densities, spectra)

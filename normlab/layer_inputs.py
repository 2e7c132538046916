"""Layer-input scales: how round the contours are in the W[l] directions.

Under the K-FAC view the Gauss-Newton block of W[l] is E[a a^T] (x) E[g g^T] with a = A[l-1], the
input of layer l (A[0] = ``model.network_input``: X, or under input batch norm the standardized
inputs). So the spread of the input units' scales, and the conditioning of the second-moment matrix
E[a~ a~^T] of a~ = [a; 1] (the 1 carries the bias), are the per-layer analogue of the
input-normalization picture; the centred covariance of a is reported next to it, since a common
mean alone (e.g. ReLU outputs, or BN before ReLU) makes E[a~ a~^T] ill-conditioned while the units may
be on one scale.

Everything is computed from a layer's ``Moments`` (row count, mean, centred covariance), float64:
``moments_of`` for one matrix held in memory, ``layer_input_moments`` for every layer of a network over
a whole split, accumulated in fixed-size chunks of rows by one compiled program per model shape (forward
passes only). ``checkpoint_layer_input_rows`` turns one checkpoint into the tidy rows of
``layer_inputs.csv`` and ``layer_units.csv``.

Batch norm over the whole split uses fixed statistics of a reference batch ``norm_batch``, applied to every
row: under input batch norm (``spec.input_norm``) the per-feature (mean, biased variance) of norm_batch's
raw inputs (``model.input_batch_stats``), which make A[0]; under hidden batch norm the per-unit (mean,
biased variance) of the pre-activations over norm_batch with BN in training mode
(``model.population_stats``, its inputs normalized with those same input statistics). Passing the analysis
set makes the measured function the one whose loss and curvature the analysis reports (its rows get
exactly the analysis loss's layer inputs), and the whole pass runs in one sweep of chunks; passing the whole
split gives BN's training mode on the whole split. (A chunk's own statistics would make the measured
inputs depend on the chunk size, and the chunks' zero padding would enter them.)

Units: RMS and means in the units of the layer input; condition numbers are dimensionless.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from normlab import model

NULL_TOL = 1e-10  # eigenvalues <= NULL_TOL * lambda_max form the null space of a conditioning
DEFAULT_BATCH_ROWS = 4096  # rows per chunk of the whole-split accumulation

METRICS = ("rms_spread", "rms_spread_p90_p10", "dead_fraction", "cond", "eff_cond", "null_dims",
           "cov_cond", "cov_eff_cond", "cov_null_dims", "rms_min", "rms_max", "mean_abs_mean_over_rms")


@dataclasses.dataclass(frozen=True)
class Moments:
    """First and second moments of one layer's input over ``count`` rows, float64.

    mean (n,): E[a]. covariance (n, n): E[(a - E a)(a - E a)^T] (biased, divided by ``count``).
    """

    count: float
    mean: np.ndarray
    covariance: np.ndarray

    @property
    def rms(self) -> np.ndarray:
        """Per-unit sqrt(E[a_j^2]) = sqrt(var_j + mean_j^2), (n,)."""
        return np.sqrt(np.maximum(np.diag(self.covariance), 0.0) + np.square(self.mean))

    def second_moment(self) -> np.ndarray:
        """E[a a^T] = covariance + mean mean^T, (n, n)."""
        return self.covariance + np.outer(self.mean, self.mean)

    def finite(self) -> bool:
        """Whether every moment is finite (a diverged network's inputs may overflow)."""
        return bool(np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.covariance)))


def moments_of(A: np.ndarray) -> Moments:
    """Moments of the rows of A (m, n) held in memory, in float64; NaN moments for a column holding inf."""
    A = np.asarray(A, np.float64)
    mean = A.mean(axis=0)
    with np.errstate(invalid="ignore"):
        centred = A - mean
    return Moments(float(A.shape[0]), mean, centred.T @ centred / A.shape[0])


# --- per-unit scales ------------------------------------------------------------------------------


def unit_mean(A: np.ndarray) -> np.ndarray:
    """Per-unit mean over the batch; A (m, n) -> (n,)."""
    return A.mean(axis=0)


def unit_rms(A: np.ndarray) -> np.ndarray:
    """Per-unit root-mean-square over the batch, sqrt(E[a_j^2]); A (m, n) -> (n,)."""
    return np.sqrt(np.mean(np.square(A), axis=0))


def live_units(A: np.ndarray, dead_threshold: float) -> np.ndarray:
    """Boolean mask (n,): units whose RMS exceeds ``dead_threshold`` (a dead ReLU, or a constant zero
    feature, is not live)."""
    return unit_rms(A) > dead_threshold


def spread_max_min(rms: np.ndarray) -> float:
    """max / min of the live units' RMS values ``rms`` (k,); 1 = one scale; NaN if k = 0."""
    rms = np.asarray(rms, np.float64)
    return float(rms.max() / rms.min()) if rms.size else float("nan")


def spread_p90_p10(rms: np.ndarray) -> float:
    """90th / 10th percentile of the live units' RMS values ``rms`` (k,), numpy's default ``linear``
    percentile (position q (k - 1) in the sorted values, linearly interpolated). With k >= 11 live units
    one outlier at either end leaves the ratio unchanged. NaN if k < 2."""
    rms = np.asarray(rms, np.float64)
    if rms.size < 2:
        return float("nan")
    p10, p90 = np.percentile(rms, [10.0, 90.0])
    return float(p90 / p10)


def rms_spread(A: np.ndarray, dead_threshold: float) -> float:
    """max / min of the per-unit RMS over live units of A (m, n) (1 = all live units on one scale);
    NaN if none."""
    return spread_max_min(unit_rms(A)[live_units(A, dead_threshold)])


# --- conditioning ---------------------------------------------------------------------------------


def augmented_second_moment(A: np.ndarray) -> np.ndarray:
    """E[a~ a~^T] with a~ = [a; 1]: (n+1, n+1), the K-FAC input factor of a layer with a bias."""
    Aa = np.concatenate([A, np.ones((A.shape[0], 1), A.dtype)], axis=1)
    return Aa.T @ Aa / A.shape[0]


def augmented_from_moments(mom: Moments, keep: np.ndarray | None = None) -> np.ndarray:
    """E[a~ a~^T] (k+1, k+1) over the units selected by ``keep`` (bool (n,), all if None) plus the bias
    coordinate: [[E[a a^T], E[a]], [E[a]^T, 1]]."""
    keep = np.ones(mom.mean.size, bool) if keep is None else keep
    mu = mom.mean[keep]
    k = mu.size
    out = np.empty((k + 1, k + 1))
    out[:k, :k] = mom.covariance[np.ix_(keep, keep)] + np.outer(mu, mu)
    out[:k, k] = out[k, :k] = mu
    out[k, k] = 1.0
    return out


def _eigenvalues(S: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the symmetric S; NaN (same count) if S is not finite."""
    return np.linalg.eigvalsh(S) if np.all(np.isfinite(S)) else np.full(S.shape[0], np.nan)


def second_moment_eigenvalues_of(mom: Moments, dead_threshold: float) -> np.ndarray:
    """Ascending eigenvalues of E[a~ a~^T] over the live units plus the bias coordinate."""
    return _eigenvalues(augmented_from_moments(mom, mom.rms > dead_threshold))


def covariance_eigenvalues_of(mom: Moments, dead_threshold: float) -> np.ndarray:
    """Ascending eigenvalues of the centred covariance of the live units (empty if none is live)."""
    live = mom.rms > dead_threshold
    return _eigenvalues(mom.covariance[np.ix_(live, live)])


def second_moment_eigenvalues(A: np.ndarray, dead_threshold: float) -> np.ndarray:
    """Ascending eigenvalues of E[a~ a~^T] of A (m, n) over the live units plus the bias coordinate."""
    return second_moment_eigenvalues_of(moments_of(A), dead_threshold)


def conditioning(eigenvalues: np.ndarray, null_tol: float = NULL_TOL) -> dict[str, float]:
    """cond = lambda_max / smallest non-null lambda (eigenvalues <= null_tol * lambda_max are the null
    space, counted in ``null_dims``); eff_cond = lambda_max / mean(lambda), which never divides by ~0.
    All NaN for a non-finite spectrum; NaN conditionings and 0 null dims for an empty one."""
    ev = np.asarray(eigenvalues, np.float64)
    if not ev.size:
        return {"cond": float("nan"), "eff_cond": float("nan"), "null_dims": 0.0}
    if not np.all(np.isfinite(ev)):
        return {"cond": float("nan"), "eff_cond": float("nan"), "null_dims": float("nan")}
    top = ev.max()
    nonnull = ev[ev > null_tol * top]
    return {
        "cond": float(top / nonnull.min()) if nonnull.size else float("nan"),
        "eff_cond": float(top / ev.mean()) if ev.mean() > 0 else float("nan"),
        "null_dims": float(ev.size - nonnull.size),
    }


# --- one layer's summary --------------------------------------------------------------------------


def moment_stats(mom: Moments, dead_threshold: float) -> dict[str, float]:
    """The summary metrics (``METRICS``, in that order) of one layer input from its moments.

    Over the live units (RMS > dead_threshold): rms_spread (max / min RMS), rms_spread_p90_p10 (90th /
    10th percentile, ``spread_p90_p10``), rms_min, rms_max, mean_abs_mean_over_rms (mean of |E a_j| /
    RMS_j: 0 centred, 1 constant); dead_fraction over all units; cond, eff_cond, null_dims of the
    uncentred E[a~ a~^T] (live units + bias); cov_cond, cov_eff_cond, cov_null_dims of the centred
    covariance of the live units. Every metric is NaN when the moments are not finite.
    """
    if not mom.finite():
        return dict.fromkeys(METRICS, float("nan"))
    rms = mom.rms
    live = rms > dead_threshold
    r = rms[live]
    out = {"rms_spread": spread_max_min(r), "rms_spread_p90_p10": spread_p90_p10(r),
           "dead_fraction": float(1.0 - live.mean()) if live.size else float("nan")}
    out.update(conditioning(second_moment_eigenvalues_of(mom, dead_threshold)))
    out.update({f"cov_{k}": v for k, v in conditioning(covariance_eigenvalues_of(mom, dead_threshold)).items()})
    if r.size:
        out["rms_min"], out["rms_max"] = float(r.min()), float(r.max())
        out["mean_abs_mean_over_rms"] = float(np.mean(np.abs(mom.mean[live]) / r))
    else:
        out["rms_min"] = out["rms_max"] = out["mean_abs_mean_over_rms"] = float("nan")
    return {k: out[k] for k in METRICS}


def layer_input_stats(A: np.ndarray, dead_threshold: float) -> dict[str, float]:
    """``moment_stats`` of one layer's input batch A (m, n) held in memory."""
    return moment_stats(moments_of(A), dead_threshold)


def rows_from_moments(moments: list[Moments], dead_threshold: float):
    """Tidy rows of one checkpoint from its per-layer moments (moments[l-1]: layer l's input A[l-1]):
    (summary [{layer, metric, value}] with the metrics of ``METRICS`` per layer, units [{layer, unit,
    mean, rms, live}])."""
    summary, units = [], []
    for l, mom in enumerate(moments, start=1):
        summary.extend({"layer": l, "metric": k, "value": v} for k, v in moment_stats(mom, dead_threshold).items())
        rms = mom.rms
        live = rms > dead_threshold
        units.extend({"layer": l, "unit": j, "mean": float(mom.mean[j]), "rms": float(rms[j]), "live": bool(live[j])}
                     for j in range(rms.size))
    return summary, units


# --- whole-split accumulation over a network ------------------------------------------------------


def row_chunks(X, batch_rows: int):
    """X (m, n) as float64 chunks of equal size: (chunks (k, r, n), weights (k, r)) with k = ceil(m /
    batch_rows) and r = ceil(m / k) <= batch_rows; the k r - m padding rows (fewer than r, so every chunk holds
    a real row) are zeros of weight 0."""
    X = np.asarray(X, np.float64)
    m = X.shape[0]
    if m < 1 or batch_rows < 1:
        raise ValueError(f"need at least one row and batch_rows >= 1, got {m} rows, batch_rows {batch_rows}")
    k = -(-m // batch_rows)
    r = -(-m // k)
    padded = np.zeros((k * r,) + X.shape[1:])
    padded[:m] = X
    return padded.reshape((k, r) + X.shape[1:]), (np.arange(k * r) < m).astype(np.float64).reshape(k, r)


def needs_norm_batch(spec: model.ModelSpec) -> bool:
    """Whether the network's layer inputs depend on batch statistics: batch norm on its inputs
    (``spec.input_norm``) or on its hidden layers (``spec.norm``)."""
    return spec.norm == "batchnorm" or spec.input_norm == "batchnorm"


def reference_stats(spec: model.ModelSpec, params, norm_batch):
    """The fixed statistics of the reference rows norm_batch (r, n_features), or (None, None) when
    norm_batch is None: (norm_stats, input_stats) for ``model.forward_with_inputs``. input_stats: the
    per-feature (mean, biased variance) of norm_batch (``model.input_batch_stats``) under input batch norm,
    else None; norm_stats: per hidden layer the (mean, biased variance) of Z[l] over norm_batch with BN in
    training mode and the inputs normalized with input_stats (``model.population_stats``) under hidden batch
    norm, else None. Pure JAX."""
    if norm_batch is None:
        return None, None
    input_stats = model.input_batch_stats(norm_batch) if spec.input_norm == "batchnorm" else None
    stats = model.population_stats(spec, params, norm_batch, input_stats) if spec.norm == "batchnorm" else None
    return stats, input_stats


def _input_moments(spec: model.ModelSpec, params, chunks, weights, norm_batch):
    """Per layer input: (count, mean (n,), scatter (n, n) = sum of (a - mean)(a - mean)^T) over the rows of
    ``chunks`` (k, r, n_features) of weight 1 in ``weights`` (k, r). Each chunk's own mean and scatter are
    merged into the running ones (Chan et al.'s pairwise update), so no sum of a a^T ever has its mean
    subtracted: no cancellation when |mean| >> std. ``norm_batch`` (r, n_features) or None: the reference
    rows whose statistics input batch norm and hidden batch norm use (``reference_stats``). Pure JAX (jit,
    vmap)."""
    stats, input_stats = reference_stats(spec, params, norm_batch)

    def step(carry, chunk):
        x, w = chunk
        n_b = jnp.sum(w)
        out = []
        for (n, mean, scatter), a in zip(carry, model.forward_with_inputs(spec, params, x, stats, input_stats)[1],
                                         strict=True):
            mean_b = jnp.sum(a * w[:, None], axis=0) / jnp.maximum(n_b, 1.0)
            d = (a - mean_b) * w[:, None]  # weights are 0 or 1, so d^T d counts each row once
            delta = mean_b - mean
            total = n + n_b  # >= 1: every chunk holds a row of weight 1 (``row_chunks``)
            between = jnp.outer(delta, delta) * (n * n_b / total)
            out.append((total, mean + delta * (n_b / total), scatter + d.T @ d + between))
        return out, None

    widths = spec.sizes[:-1]
    dtype = chunks.dtype
    init = [(jnp.zeros((), dtype), jnp.zeros((w,), dtype), jnp.zeros((w, w), dtype)) for w in widths]
    sums, _ = jax.lax.scan(step, init, (chunks, weights))
    return sums


@functools.partial(jax.jit, static_argnums=0)
def _input_moments_jit(spec, params, chunks, weights, norm_batch):
    return _input_moments(spec, params, chunks, weights, norm_batch)


@functools.partial(jax.jit, static_argnums=0)
def _input_moments_seeds_jit(spec, params, chunks, weights, norm_batch):
    return jax.vmap(lambda p: _input_moments(spec, p, chunks, weights, norm_batch))(params)


def _moments(count, mean, scatter) -> Moments:
    count = float(count)
    return Moments(count, np.asarray(mean, np.float64), np.asarray(scatter, np.float64) / count)


def _prepare(spec: model.ModelSpec, params, X, norm_batch, batch_rows: int):
    if needs_norm_batch(spec) and norm_batch is None:
        raise ValueError("a batch-norm model (on its inputs or hidden layers) needs norm_batch, the rows whose "
                         "statistics BN uses")
    params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    chunks, weights = row_chunks(X, batch_rows)
    nb = np.asarray(norm_batch, np.float64) if needs_norm_batch(spec) else None
    return params64, chunks, weights, nb


def layer_input_moments(spec: model.ModelSpec, params: model.Params, X, norm_batch=None,
                        batch_rows: int = DEFAULT_BATCH_ROWS) -> list[Moments]:
    """Moments of every layer input A[0..L-1] over all rows of X (m, n_features), float64.

    Forward passes only, over chunks of at most ``batch_rows`` rows (memory bounded by the chunk and the
    (n, n) sums); one compiled program per model shape, X shape and chunk size. Parameters and X are cast
    to float64. norm_batch (r, n_features): batch norm's reference rows (required under batch norm on the
    inputs or the hidden layers, unused otherwise; ``reference_stats``): input BN normalizes every row's
    features with the per-feature (mean, biased variance) of these rows, hidden BN every row's
    pre-activations with the per-unit ones over these rows in training mode.
    """
    params64, chunks, weights, nb = _prepare(spec, params, X, norm_batch, batch_rows)
    sums = jax.device_get(_input_moments_jit(spec, params64, chunks, weights, nb))
    return [_moments(n, mean, scatter) for n, mean, scatter in sums]


def seed_layer_input_moments(spec: model.ModelSpec, params: model.Params, X, norm_batch=None,
                             batch_rows: int = DEFAULT_BATCH_ROWS) -> list[list[Moments]]:
    """``layer_input_moments`` of parameters stacked on a leading seed axis (every array (n_seeds, ...)),
    all seeds in one compiled, vmapped program: result[i][l-1] is seed i's layer-l input moments."""
    params64, chunks, weights, nb = _prepare(spec, params, X, norm_batch, batch_rows)
    sums = jax.device_get(_input_moments_seeds_jit(spec, params64, chunks, weights, nb))
    return [[_moments(n[i], mean[i], scatter[i]) for n, mean, scatter in sums] for i in range(sums[0][0].shape[0])]


def checkpoint_layer_input_rows(spec: model.ModelSpec, params: model.Params, X_train, dead_threshold: float,
                                norm_batch=None, batch_rows: int = DEFAULT_BATCH_ROWS):
    """Tidy rows of one checkpoint over the whole training split X_train (m, n_features): (summary
    [{layer, metric, value}], units [{layer, unit, mean, rms, live}]); layer l's input is A[l-1].
    norm_batch: BN's reference rows (the analysis set), see ``layer_input_moments``."""
    return rows_from_moments(layer_input_moments(spec, params, X_train, norm_batch, batch_rows), dead_threshold)


def seed_checkpoint_layer_input_rows(spec: model.ModelSpec, params: model.Params, X_train, dead_threshold: float,
                                     norm_batch=None, batch_rows: int = DEFAULT_BATCH_ROWS):
    """``checkpoint_layer_input_rows`` of parameters stacked on a leading seed axis: one (summary, units)
    pair per seed, in the stacking order, from one vmapped program."""
    return [rows_from_moments(moms, dead_threshold)
            for moms in seed_layer_input_moments(spec, params, X_train, norm_batch, batch_rows)]


def network_layer_inputs(spec: model.ModelSpec, params: model.Params, X) -> list[np.ndarray]:
    """A[0..L-1] on the batch X (A[0] = ``model.network_input``; BN, on the inputs and the hidden layers, in
    training mode on X), as float64 numpy arrays. One compiled forward
    pass per model shape (run eagerly, each of its operations would be a program of its own to trace,
    compile or load from the cache)."""
    return [np.asarray(a, np.float64) for a in _layer_inputs_jit(spec, params, X)]


@functools.partial(jax.jit, static_argnums=0)
def _layer_inputs_jit(spec: model.ModelSpec, params: model.Params, X):
    return model.forward_with_inputs(spec, params, X)[1]

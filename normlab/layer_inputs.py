"""Layer-input scales: how round the contours are in the W[l] directions.

Under the K-FAC view the Gauss-Newton block of W[l] is E[a a^T] (x) E[g g^T] with a = A[l-1], the
input of layer l (A[0] = X). So the spread of the input units' scales, and the conditioning of the
second-moment matrix E[a~ a~^T] of a~ = [a; 1] (the 1 carries the bias), are the per-layer analogue of
the input-normalization picture. All statistics are over the rows of one batch (the analysis set).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from normlab import model


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


def rms_spread(A: np.ndarray, dead_threshold: float) -> float:
    """max / min of the per-unit RMS over live units (1 = all live units on one scale); NaN if none."""
    rms = unit_rms(A)[live_units(A, dead_threshold)]
    return float(rms.max() / rms.min()) if rms.size else float("nan")


def augmented_second_moment(A: np.ndarray) -> np.ndarray:
    """E[a~ a~^T] with a~ = [a; 1]: (n+1, n+1), the K-FAC input factor of a layer with a bias."""
    Aa = np.concatenate([A, np.ones((A.shape[0], 1), A.dtype)], axis=1)
    return Aa.T @ Aa / A.shape[0]


def second_moment_eigenvalues(A: np.ndarray, dead_threshold: float) -> np.ndarray:
    """Ascending eigenvalues of E[a~ a~^T] over the live units plus the bias coordinate."""
    Aa = A[:, live_units(A, dead_threshold)]
    return np.linalg.eigvalsh(augmented_second_moment(Aa.astype(np.float64)))


def conditioning(eigenvalues: np.ndarray, null_tol: float = 1e-10) -> dict[str, float]:
    """cond = lambda_max / smallest non-null lambda (eigenvalues <= null_tol * lambda_max are the null
    space, counted in ``null_dims``); eff_cond = lambda_max / mean(lambda), which never divides by ~0."""
    ev = np.asarray(eigenvalues, np.float64)
    top = ev.max()
    nonnull = ev[ev > null_tol * top]
    return {
        "cond": float(top / nonnull.min()) if nonnull.size else float("nan"),
        "eff_cond": float(top / ev.mean()) if ev.mean() > 0 else float("nan"),
        "null_dims": float(ev.size - nonnull.size),
    }


def layer_input_stats(A: np.ndarray, dead_threshold: float) -> dict[str, float]:
    """Summary metrics of one layer's input batch A (m, n): rms_spread, dead_fraction, cond, eff_cond,
    null_dims, rms_min, rms_max (live units), mean_abs_mean_over_rms (how far from centred)."""
    rms = unit_rms(A)
    live = live_units(A, dead_threshold)
    out = {"rms_spread": rms_spread(A, dead_threshold), "dead_fraction": float(1.0 - live.mean())}
    out.update(conditioning(second_moment_eigenvalues(A, dead_threshold)))
    if live.any():
        out["rms_min"], out["rms_max"] = float(rms[live].min()), float(rms[live].max())
        out["mean_abs_mean_over_rms"] = float(np.mean(np.abs(unit_mean(A)[live]) / rms[live]))
    return out


def network_layer_inputs(spec: model.ModelSpec, params: model.Params, X) -> list[np.ndarray]:
    """A[0..L-1] on the batch X (BN in training mode on X), as float64 numpy arrays. One compiled forward
    pass per model shape (run eagerly, each of its operations would be a program of its own to trace,
    compile or load from the cache)."""
    return [np.asarray(a, np.float64) for a in _layer_inputs_jit(spec, params, X)]


@functools.partial(jax.jit, static_argnums=0)
def _layer_inputs_jit(spec: model.ModelSpec, params: model.Params, X):
    return model.forward_with_inputs(spec, params, X)[1]

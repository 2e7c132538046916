"""Exact flat directions of a normlab MLP, and whether a slice's plane spans two dimensions or holds one.

A flat direction v of J is one along which the network's outputs, hence J, do not change: J(w + t v) =
J(w) for every small t. Its Gauss-Newton curvature is zero, so a plane holding one has a singular 2x2 GGN
whatever the data: its axis ratio measures the symmetry, not how the inputs are scaled. The flat
directions checked here span the subspace F (parameter units), a direct sum over layers:

* batch norm, hidden layer l: each unit j's own incoming weight vector W[l][:, j] (the unit is
  scale-invariant, J(c W[:, j]) = J(W[:, j]); BN has no bias), restricted to the live inputs of A[l-1]
  (a dead input's weight does not move Z[l], so the radial direction that matters on the batch is the
  live part of the column). One direction per unit.
* layer norm, hidden layer l: the layer's whole (W[l], b[l]) (LN is scale-invariant per example), W
  restricted to the live inputs, and the shifts (u 1^T, c 1) (u of size n_in, c a number: every unit's
  pre-activation moves by the same amount per example, which LN's mean removes).
* softmax cross-entropy, output layer L: the shifts (u 1^T, c 1) (all logits of an example move
  together).

The scale directions are flat up to the normalization's eps (J(c w) - J(w) is of order eps / var per unit
of c); the shifts are exactly flat. Everything here runs on the host in float64 (numpy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from normlab.model import ModelSpec, Params

# A plane is degenerate when sin^2 of the angle between its two directions is at most PLANE_TOL, and holds a
# flat direction when some direction in it is within that of F (sin^2 of the angle to F <= PLANE_TOL, i.e.
# within 1e-4 rad). Float32 rounding of a direction that lies exactly in F leaves sin^2 ~ 1e-14; an
# eigenvector computed in float32 lies within ~1e-5 rad of the eigenspace it approximates.
PLANE_TOL = 1e-8


def _shift_part(vW: np.ndarray, vb: np.ndarray | None):
    # projection onto the shifts {(u 1^T, c 1)}: each row of W and the bias replaced by their mean
    W = np.broadcast_to(vW.mean(axis=1, keepdims=True), vW.shape)
    return W, (None if vb is None else np.full(vb.shape, vb.mean()))


def _layer_flat_part(spec: ModelSpec, p: Mapping, v: Mapping, l: int, live) -> dict[str, np.ndarray]:
    """P_F v restricted to layer l (1..L): the orthogonal projection of the direction's arrays v (a
    mapping of layer l's array names) onto F's part in layer l; live: (n_in,) bool, the live inputs of
    A[l-1]. Arrays F does not touch (gamma, beta, and every array of a layer without a symmetry) are
    zero."""
    out = {k: np.zeros(np.shape(x)) for k, x in v.items()}
    vW = np.asarray(v["W"], np.float64)
    vb = np.asarray(v["b"], np.float64) if "b" in v else None
    hidden = l < spec.n_layers
    live_rows = np.asarray(live, bool)[:, None]
    if hidden and spec.norm == "batchnorm":
        r = np.asarray(p["W"], np.float64) * live_rows  # one radial direction per column
        rr = np.sum(r * r, axis=0)
        coef = np.where(rr > 0, np.sum(vW * r, axis=0) / np.where(rr > 0, rr, 1.0), 0.0)
        out["W"] = r * coef
    elif (hidden and spec.norm == "layernorm") or (not hidden and spec.loss == "softmax_cross_entropy"):
        sW, sb = _shift_part(vW, vb)
        out["W"] = np.array(sW)
        if vb is not None:
            out["b"] = sb
        if hidden:  # LN: the layer's radial direction, made orthogonal to the shifts
            rW = np.asarray(p["W"], np.float64) * live_rows
            rb = np.asarray(p["b"], np.float64) if "b" in p else None
            tW, tb = _shift_part(rW, rb)
            rW = rW - tW
            rb = None if rb is None else rb - tb
            rr = float(np.sum(rW * rW) + (0.0 if rb is None else np.sum(rb * rb)))
            if rr > 0:
                coef = (float(np.sum(vW * rW)) + (0.0 if rb is None else float(np.sum(vb * rb)))) / rr
                out["W"] = out["W"] + coef * rW
                if rb is not None:
                    out["b"] = out["b"] + coef * rb
    return out


def flat_part(spec: ModelSpec, params: Params, v: Params, live_inputs: Mapping[int, np.ndarray] | None = None,
              ) -> Params:
    """The orthogonal projection P_F v of a direction v (a pytree shaped like params) onto F, the span
    of the flat directions listed in the module docstring. live_inputs: {l: (sizes[l-1],) bool} the
    live inputs of A[l-1] (layers not given: every input counts as live). float64 numpy arrays."""
    live_inputs = live_inputs or {}
    out = {}
    for name, p in params.items():
        l = int(name[5:])
        live = live_inputs.get(l)
        if live is None:
            live = np.ones(np.shape(p["W"])[0], bool)
        out[name] = _layer_flat_part(spec, p, v[name], l, live)
    return out


class PlaneGeometry(NamedTuple):
    """What ``plane_geometry`` finds. spans_plane: the two directions span a plane (sin^2 of their angle
    > PLANE_TOL); holds_flat: some direction in the plane lies in F (False when not spans_plane);
    sin2_parallel: sin^2 of the angle between d1 and d2; sin2_flat: sin^2 of the smallest angle between
    a direction of the plane and F (NaN when not spans_plane)."""

    spans_plane: bool
    holds_flat: bool
    sin2_parallel: float
    sin2_flat: float


def _touched_layers(*trees) -> list[str]:
    return [name for name in trees[0] if any(np.any(np.asarray(x) != 0) for t in trees for x in t[name].values())]


def _flat(tree, names) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(tree[n][k], np.float64)) for n in names for k in sorted(tree[n])]) \
        if names else np.zeros(0)


def _min_angle_sin2(D: np.ndarray, R: np.ndarray) -> float:
    # min over c != 0 of |R c|^2 / |D c|^2 (D, R: (2, n)): the smallest eigenvalue of the pencil (R R^T, D D^T)
    C = np.linalg.cholesky(D @ D.T)
    Ci = np.linalg.inv(C)
    M = Ci @ (R @ R.T) @ Ci.T
    return float(np.linalg.eigvalsh(0.5 * (M + M.T))[0])


def plane_geometry(spec: ModelSpec, params: Params, d1: Params, d2: Params,
                   live_inputs: Mapping[int, np.ndarray] | None = None, tol: float = PLANE_TOL) -> PlaneGeometry:
    """Whether the plane spanned by directions d1, d2 (pytrees shaped like params) is two-dimensional
    and whether it holds a flat direction (sin^2 of the angle to F <= tol). live_inputs as in
    ``flat_part``. Only the layers the directions touch are read; cost O(their parameter count)."""
    names = _touched_layers(d1, d2)
    D = np.stack([_flat(d, names) for d in (d1, d2)])
    n1, n2 = (float(np.dot(x, x)) for x in D)
    if n1 == 0 or n2 == 0:
        return PlaneGeometry(False, False, 0.0, float("nan"))
    sin2 = max(0.0, 1.0 - float(np.dot(D[0], D[1])) ** 2 / (n1 * n2))
    if sin2 <= tol:
        return PlaneGeometry(False, False, sin2, float("nan"))
    D = D / np.sqrt([[n1], [n2]])
    sub = {n: params[n] for n in names}
    P = np.stack([_flat(flat_part(spec, sub, {n: d[n] for n in names}, live_inputs), names) for d in (d1, d2)])
    P = P / np.sqrt([[n1], [n2]])
    s2 = max(0.0, _min_angle_sin2(D, D - P))
    return PlaneGeometry(True, s2 <= tol, sin2, s2)

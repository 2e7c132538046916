"""A contour slice of the loss and its tidy row: the record every slice kind produces.

``ContourSlice`` holds one slice's grid, 2x2 GGN and what its plane is (``symmetries``); ``slice_row``
measures both roundness ratios of it (``normlab.landscape.roundness``) and says whether the GGN ratio can be
read, as one row with ``ROW_KEYS``; ``slice_arrays`` names its arrays for the ``contours.npz`` file.

Each row carries three exclusive flags (``slice_flags``), so that a claim can count or leave out what cannot
be read as a measure of the inputs' scales:

* ``degenerate``: nothing to measure: the plane is not two-dimensional (the lecture slice of a layer with
  fewer than two live inputs, hi == lo), the lecture unit is dead (its output's RMS over the batch is at
  most the dead threshold), or J has no curvature on the plane (lambda_max not > 0 or not finite: e.g. a
  dead unit's zero block). Ratio NaN.
* ``flat_direction``: the plane holds an exact flat direction of J (``symmetries``: a batch-normalized
  unit's own weight vector, a layer-normalized layer's scale or shift, the softmax's logit shift), so its
  curvature along that direction is zero by symmetry, whatever the inputs. Ratio NaN.
* ``censored``: a plane with curvature and neither of the above, whose ratio is beyond numerical resolution
  (lambda_min <= rel_tol x lambda_max): the ratio holds the bound 1 / sqrt(rel_tol), a lower bound, and
  counts as elongated.

``singular`` = censored or flat_direction or degenerate, for readers that predate the three flags; every
row that is not degenerate or flat_direction has a finite ``axis_ratio_ggn``.

A fourth boolean, ``projected``, is not a flag of readability: True for a lecture slice whose directions were
projected orthogonally to its unit's scale-invariant group (``lecture.lecture_plane``), whose grid axes are
then distances along two orthonormal directions (origin (0, 0)) rather than the two weights' own values.
False for every other row.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np

from normlab.landscape.roundness import (
    AxisRatio,
    LevelsetFit,
    axis_ratio_2x2,
    default_rel_tol,
    ggn_coupling,
    levelset_axis_ratio,
)

SLICES = ("lecture", "eig", "random")
# the level-set fit of a slice measured without its grid: not measured (NaN), 0 points
NO_GRID_FIT = LevelsetFit(float("nan"), np.full((2, 2), np.nan), float("nan"), float("nan"), 0)

ROW_KEYS = (
    "slice", "scope", "axis_ratio_ggn", "axis_ratio_levelset", "singular", "censored", "flat_direction",
    "degenerate", "projected", "levelset_misfit", "levelset_rel_err",
    "lambda_max_ggn", "lambda_min_ggn", "ggn_coupling", "loss_center", "extent", "unit", "input_hi", "input_lo",
    "rms_hi", "rms_lo",
)


@dataclasses.dataclass
class ContourSlice:
    """One 2-D slice. alphas (n_a,), betas (n_b,): offsets along d1, d2 (parameter units); loss (n_a,
    n_b): J at (alphas[i], betas[k]), or None for a slice measured without its grid (its GGN roundness only);
    origin (2,): the coordinates of the centre on the plotted axes
    (the two weights' values for an unprojected ``lecture`` slice, zeros otherwise: a projected lecture
    slice's axes are distances along its two orthonormal directions, along which the centre's coordinates
    <w, d1>, <w, d2> are zero), so axis 1 = origin[0] + alphas;
    ggn (2, 2): D^T G D at the centre (float64); info: slice-specific extras (lecture: unit, input_hi,
    input_lo, input_rms (n_in,), live (n_in,)); flat_direction: the plane holds an exact flat direction of
    J; degenerate: the plane is not two-dimensional or, for a lecture slice, its unit is dead (the facts
    known from the plane itself; ``slice_flags`` adds a GGN without curvature); projected: a lecture slice's
    directions were projected orthogonally to its unit's scale-invariant group (``lecture.lecture_plane``)."""

    slice: str
    scope: str
    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray | None
    origin: np.ndarray
    ggn: np.ndarray
    loss_center: float
    info: dict = dataclasses.field(default_factory=dict)
    flat_direction: bool = False
    degenerate: bool = False
    projected: bool = False


class SliceFlags(NamedTuple):
    """Result of ``slice_flags``: the row's GGN ratio (finite unless degenerate or flat_direction) and
    its three exclusive flags (module docstring)."""

    ratio: float
    censored: bool
    flat_direction: bool
    degenerate: bool


def slice_flags(ggn: AxisRatio, *, flat_direction: bool, degenerate: bool) -> SliceFlags:
    """Combine a slice's GGN axis ratio (``axis_ratio_2x2``) with what its plane is: degenerate (the plane's
    own degeneracy, or no curvature) takes precedence over flat_direction, which takes precedence over
    censored. The ratio is NaN on degenerate and flat_direction rows, the bound on censored rows."""
    degenerate = bool(degenerate or ggn.no_curvature)
    flat_direction = bool(flat_direction and not degenerate)
    censored = bool(ggn.censored and not (degenerate or flat_direction))
    ratio = float("nan") if (degenerate or flat_direction) else ggn.ratio
    return SliceFlags(ratio, censored, flat_direction, degenerate)


def slice_row(s: ContourSlice, *, delta: float = 0.05, rel_tol: float | None = None,
              max_misfit: float = 0.2, max_rel_err: float = 0.2) -> dict[str, Any]:
    """Tidy row (keys ``ROW_KEYS``) with both roundness measures of a slice. ``delta``, ``max_misfit``,
    ``max_rel_err``: as ``levelset_axis_ratio``; ``rel_tol``: as ``axis_ratio_2x2`` (default: that of the
    GGN's dtype, float64: 1e-12, a censoring bound of 1e6). Beyond the contract columns (slice, scope,
    axis_ratio_ggn, axis_ratio_levelset, singular, censored, flat_direction, degenerate: ``slice_flags``;
    projected: ``ContourSlice.projected``):
    levelset_misfit, levelset_rel_err, the 2x2 GGN eigenvalues (loss per parameter unit^2), ggn_coupling
    (``roundness.ggn_coupling`` of the 2x2 GGN; NaN where the ratio is), loss_center,
    extent, and for lecture slices unit, input_hi, input_lo and their RMS (-1 / NaN for other slices)."""
    ggn = np.asarray(s.ggn)
    if rel_tol is None:
        rel_tol = default_rel_tol(ggn.dtype)
    g = axis_ratio_2x2(ggn, rel_tol)
    flags = slice_flags(g, flat_direction=s.flat_direction, degenerate=s.degenerate)
    fit = (levelset_axis_ratio(s.alphas, s.betas, s.loss, delta, max_misfit=max_misfit, max_rel_err=max_rel_err)
           if s.loss is not None else NO_GRID_FIT)
    info = s.info
    rms = info.get("input_rms")
    nan = float("nan")
    return {
        "slice": s.slice, "scope": s.scope, "axis_ratio_ggn": flags.ratio, "axis_ratio_levelset": fit.ratio,
        "singular": flags.censored or flags.flat_direction or flags.degenerate, "censored": flags.censored,
        "flat_direction": flags.flat_direction, "degenerate": flags.degenerate, "projected": bool(s.projected),
        "levelset_misfit": fit.misfit, "levelset_rel_err": fit.rel_err,
        "lambda_max_ggn": g.lam_max, "lambda_min_ggn": g.lam_min,
        "ggn_coupling": nan if math.isnan(flags.ratio) else ggn_coupling(ggn),
        "loss_center": s.loss_center, "extent": float(np.max(np.abs(s.alphas))),
        "unit": int(info.get("unit", -1)), "input_hi": int(info.get("input_hi", -1)),
        "input_lo": int(info.get("input_lo", -1)),
        "rms_hi": float(rms[info["input_hi"]]) if rms is not None else nan,
        "rms_lo": float(rms[info["input_lo"]]) if rms is not None else nan,
    }


def slice_arrays(s: ContourSlice) -> dict[str, np.ndarray]:
    """Arrays of a slice for an .npz file, keyed ``<slice>.<scope>.<name>``: alphas, betas, loss (not for a
    slice measured without its grid), origin, ggn, and for lecture slices ``indices`` = [unit, input_hi,
    input_lo] and input_rms."""
    p = f"{s.slice}.{s.scope}."
    out = {p + "alphas": s.alphas, p + "betas": s.betas, p + "origin": s.origin, p + "ggn": np.asarray(s.ggn)}
    if s.loss is not None:
        out[p + "loss"] = s.loss
    if s.slice == "lecture":
        out[p + "indices"] = np.array([s.info["unit"], s.info["input_hi"], s.info["input_lo"]], np.int64)
        out[p + "input_rms"] = np.asarray(s.info["input_rms"])
    return out

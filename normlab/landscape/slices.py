"""A contour slice of the loss and its tidy row: the record every slice kind produces.

``ContourSlice`` holds one slice's grid and 2x2 GGN; ``slice_row`` measures both roundness ratios of it
(``normlab.landscape.roundness``) as one row with ``ROW_KEYS``, and ``slice_arrays`` names its arrays for
the ``contours.npz`` file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from normlab.landscape.roundness import axis_ratio_2x2, default_rel_tol, levelset_axis_ratio

SLICES = ("lecture", "eig", "random")
ROW_KEYS = (
    "slice", "scope", "axis_ratio_ggn", "axis_ratio_levelset", "singular", "levelset_misfit",
    "levelset_rel_err",
    "lambda_max_ggn", "lambda_min_ggn", "loss_center", "extent", "unit", "input_hi", "input_lo",
    "rms_hi", "rms_lo",
)


@dataclasses.dataclass
class ContourSlice:
    """One 2-D slice. alphas (n_a,), betas (n_b,): offsets along d1, d2 (parameter units); loss (n_a,
    n_b): J at (alphas[i], betas[k]); origin (2,): the coordinates of the centre on the plotted axes
    (the two weights' values for ``lecture``, zeros otherwise), so axis 1 = origin[0] + alphas;
    ggn (2, 2): D^T G D at the centre; info: slice-specific extras (lecture: unit, input_hi, input_lo,
    input_rms (n_in,), live (n_in,))."""

    slice: str
    scope: str
    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    origin: np.ndarray
    ggn: np.ndarray
    loss_center: float
    info: dict = dataclasses.field(default_factory=dict)


def slice_row(s: ContourSlice, *, delta: float = 0.05, rel_tol: float | None = None,
              max_misfit: float = 0.2, max_rel_err: float = 0.2) -> dict[str, Any]:
    """Tidy row (keys ``ROW_KEYS``) with both roundness measures of a slice. ``delta``, ``max_misfit``,
    ``max_rel_err``: as ``levelset_axis_ratio``; ``rel_tol``: as ``axis_ratio_2x2``. Beyond the contract
    columns (slice, scope, axis_ratio_ggn, axis_ratio_levelset, singular): levelset_misfit,
    levelset_rel_err, the 2x2 GGN eigenvalues (loss per parameter unit^2), loss_center, extent, and for
    lecture slices unit, input_hi, input_lo and their RMS (-1 / NaN for other slices)."""
    if rel_tol is None:
        rel_tol = default_rel_tol(s.loss.dtype)
    ratio, singular, lam_max, lam_min = axis_ratio_2x2(s.ggn, rel_tol)
    fit = levelset_axis_ratio(s.alphas, s.betas, s.loss, delta, max_misfit=max_misfit,
                              max_rel_err=max_rel_err)
    info = s.info
    rms = info.get("input_rms")
    nan = float("nan")
    return {
        "slice": s.slice, "scope": s.scope, "axis_ratio_ggn": ratio, "axis_ratio_levelset": fit.ratio,
        "singular": singular, "levelset_misfit": fit.misfit, "levelset_rel_err": fit.rel_err,
        "lambda_max_ggn": lam_max, "lambda_min_ggn": lam_min,
        "loss_center": s.loss_center, "extent": float(np.max(np.abs(s.alphas))),
        "unit": int(info.get("unit", -1)), "input_hi": int(info.get("input_hi", -1)),
        "input_lo": int(info.get("input_lo", -1)),
        "rms_hi": float(rms[info["input_hi"]]) if rms is not None else nan,
        "rms_lo": float(rms[info["input_lo"]]) if rms is not None else nan,
    }


def slice_arrays(s: ContourSlice) -> dict[str, np.ndarray]:
    """Arrays of a slice for an .npz file, keyed ``<slice>.<scope>.<name>``: alphas, betas, loss,
    origin, ggn, and for lecture slices ``indices`` = [unit, input_hi, input_lo] and input_rms."""
    p = f"{s.slice}.{s.scope}."
    out = {p + "alphas": s.alphas, p + "betas": s.betas, p + "loss": s.loss, p + "origin": s.origin,
           p + "ggn": np.asarray(s.ggn)}
    if s.slice == "lecture":
        out[p + "indices"] = np.array([s.info["unit"], s.info["input_hi"], s.info["input_lo"]], np.int64)
        out[p + "input_rms"] = np.asarray(s.info["input_rms"])
    return out

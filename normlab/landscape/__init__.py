"""2-D contour slices of the loss J around a point, and how round they are (docs/methods.md).

A slice is the loss on a grid ``J(center + alpha * d1 + beta * d2)`` for two direction pytrees
``d1, d2`` shaped like the parameters. Three kinds of directions are built:

* ``lecture``: the lecture's picture for layer l. Two incoming weights ``W[l][hi, j]`` and
  ``W[l][lo, j]`` of one unit j, where hi / lo are the live units of the layer input A[l-1] with the
  largest / smallest RMS over the analysis batch. Without a scale-invariant group the directions are unit
  vectors on those two coordinates, so the grid axes are the weights' own values (``origin + alphas``); for
  a batch-normalized unit (its incoming weights) or a layer-normalized layer (its W and b) they are the two
  coordinate directions projected orthogonally to the group's weights and orthonormalized (row
  ``projected``), so the axes are distances along them (origin (0, 0)); see ``lecture``.
* ``eig``: two given directions (the top-2 Hessian eigenvectors from ``normlab.curvature``), for the
  whole model or restricted to one layer (zero elsewhere).
* ``random``: filter-normalized Gaussian directions (Li et al. 2018).

Roundness of a slice is reported two ways (``roundness``): ``axis_ratio_ggn``, sqrt(lambda_1 / lambda_2)
of the projected 2x2 Gauss-Newton matrix (the local quadratic's contours), and ``axis_ratio_levelset``,
the axis ratio of a quadratic fitted to the grid's sub-level set J <= J0 + delta (what the picture shows).
Each row says whether its GGN ratio can be read (``slices``): ``censored`` (beyond numerical resolution:
the bound 1 / sqrt(rel_tol), counted as elongated), ``flat_direction`` (the plane holds an exact symmetry
direction of J, ``symmetries``) or ``degenerate`` (no plane, a dead unit, or no curvature).

Units: grid coordinates ``alphas``, ``betas`` are in parameter units (the directions of ``lecture``
and ``eig`` slices have unit norm, so a coordinate is a Euclidean distance in parameter space; for
``random`` slices a coordinate of 1 is a step as large as the weights themselves, filter by filter).
Losses are in the loss's own units (nats for softmax cross-entropy, squared target units for mse).
Grids are computed in the dtype of the parameters they are given; every 2x2 GGN in float64 (a ratio r
needs about r^2 of dynamic range in it), from forward-mode products in float64 and the loss's Hessian in
a closed form that stays positive semi-definite (``roundness.loss_gram``).

Modules, each importing only those above it:

* ``directions``: direction pytrees (embedding, normalization, lecture and random directions);
* ``grids``: grid axes, the vectorized grid map and ``evaluate_grid`` for any loss function, and the
  report's colour scale (``log_excess``, ``shared_log_scale``);
* ``roundness``: the projected GGN, 2x2 axis ratios and the level-set quadratic fit;
* ``symmetries``: the exact flat directions of the MLP and whether a plane holds one (``plane_geometry``);
* ``slices``: ``ContourSlice``, its tidy row (``slice_row``, ``ROW_KEYS``, the flags of ``slice_flags``) and
  arrays (``slice_arrays``);
* ``planes``: planes through the MLP (``direction_slices``, ``model_grid``), one compiled program per
  model shape;
* ``lecture``: the lecture slice (unit and weight choice, GGN blocks, the projected plane of a scale-invariant
  unit ``lecture_plane``, ``lecture_slices``, ``lecture_grid``);
* ``contours``: ``contour_slices`` and ``ContourConfig``, the entry the analysis calls.
"""

from normlab.landscape.contours import ContourConfig, contour_slices
from normlab.landscape.directions import (
    embed_direction,
    lecture_directions,
    normalize_direction,
    random_directions,
    tree_norm,
)
from normlab.landscape.grids import (
    auto_chunk_size,
    evaluate_grid,
    grid_axes,
    log_excess,
    shared_log_scale,
)
from normlab.landscape.lecture import (
    choose_unit,
    group_radial,
    input_rms,
    lecture_ggn_blocks,
    lecture_grid,
    lecture_plane,
    lecture_slice,
    lecture_slices,
    live_mask,
    pick_hi_lo,
)
from normlab.landscape.planes import direction_slices, model_ggn, model_grid
from normlab.landscape.roundness import (
    AxisRatio,
    LevelsetFit,
    QuadraticFit,
    axis_ratio_2x2,
    default_rel_tol,
    eig2x2,
    fit_quadratic,
    ggn_coupling,
    levelset_axis_ratio,
    loss_gram,
    projected_ggn,
)
from normlab.landscape.slices import ROW_KEYS, SLICES, ContourSlice, SliceFlags, slice_arrays, slice_flags, slice_row
from normlab.landscape.symmetries import PLANE_TOL, PlaneGeometry, flat_part, plane_geometry

__all__ = [
    "PLANE_TOL", "ROW_KEYS", "SLICES", "AxisRatio", "ContourConfig", "ContourSlice", "LevelsetFit", "PlaneGeometry",
    "QuadraticFit", "SliceFlags", "auto_chunk_size", "axis_ratio_2x2", "choose_unit", "contour_slices",
    "default_rel_tol", "direction_slices", "eig2x2", "embed_direction", "evaluate_grid", "fit_quadratic", "flat_part",
    "ggn_coupling", "grid_axes", "group_radial", "input_rms", "lecture_directions", "lecture_ggn_blocks",
    "lecture_grid", "lecture_plane", "lecture_slice", "lecture_slices", "levelset_axis_ratio", "live_mask",
    "log_excess", "loss_gram", "model_ggn", "model_grid", "normalize_direction", "pick_hi_lo", "plane_geometry",
    "projected_ggn", "random_directions", "shared_log_scale", "slice_arrays", "slice_flags",
    "slice_row", "tree_norm",
]

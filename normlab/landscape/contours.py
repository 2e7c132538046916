"""The entry the analysis calls: every contour slice of one checkpoint, as rows and grids."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from normlab import model
from normlab.landscape.directions import random_directions
from normlab.landscape.lecture import lecture_slices
from normlab.landscape.planes import direction_slices
from normlab.landscape.slices import slice_arrays, slice_row
from normlab.model import ModelSpec, Params


@dataclasses.dataclass(frozen=True)
class ContourConfig:
    """Settings of the contour analysis (e.g. config ``analysis.contours``).

    grid_points: points per axis (odd puts one on the centre). extent: half-width of the grid, a number
    for every slice or a mapping {lecture, eig, random} -> number; units as in ``normlab.landscape``'s
    docstring. delta: level-set level as a fraction of the grid's loss range. max_misfit, max_rel_err: the
    largest quadratic-fit misfit and relative error at which a level-set ratio is reported
    (``levelset_axis_ratio``). seed: PRNG seed of the random directions. random_per_layer: also a random
    slice per layer. dead_threshold: a layer-input unit is live if its RMS over the batch exceeds it (pass
    ``analysis.dead_threshold``). rel_tol: censoring threshold of the 2x2 GGN (None: ``default_rel_tol`` of
    its dtype, float64: 1e-12, so censored ratios read 1e6). chunk_size: grid points per vectorized chunk
    (None: ``auto_chunk_size``).
    """

    grid_points: int = 41
    extent: float | Mapping[str, float] = 1.0
    delta: float = 0.05
    max_misfit: float = 0.2
    max_rel_err: float = 0.2
    seed: int = 0
    random_per_layer: bool = False
    dead_threshold: float = 1e-6
    rel_tol: float | None = None
    chunk_size: int | None = None

    @classmethod
    def from_mapping(cls, d: Mapping | None) -> ContourConfig:
        d = dict(d or {})
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown contour settings: {sorted(unknown)}")
        return cls(**d)

    def extent_for(self, slice: str) -> float:
        if isinstance(self.extent, Mapping):
            return float(self.extent[slice])
        return float(self.extent)


def contour_slices(spec: ModelSpec, params: Params, X, y, config: ContourConfig | Mapping | None = None, *,
                   eig_model: tuple | None = None, eig_layers: Mapping[str, tuple] | None = None,
                   grid: bool = True) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """All contour slices of one checkpoint on the analysis batch (X (m, n_features), y).

    Slices: ``lecture`` for every layer; ``eig`` for the whole model from ``eig_model`` = (d1, d2) and
    per layer from ``eig_layers`` = {"layer<l>": (d1, d2)} (directions as ``embed_direction`` accepts,
    normalized to unit norm); ``random``: filter-normalized, scope model (and per layer if configured).
    Returns (rows, grids): rows are dicts with ``ROW_KEYS`` (slice, scope, axis_ratio_ggn,
    axis_ratio_levelset, singular, censored, flat_direction, degenerate, ...: ``slices.slice_flags``;
    projected: a lecture slice taken orthogonally to its unit's scale-invariant group, ``lecture``), one
    per slice; grids maps ``<slice>.<scope>.<name>`` to numpy
    arrays (``slice_arrays``), ready for ``np.savez``. ``grid`` False: every slice's row without its grid of J
    (the GGN axis ratio and flags as with it; axis_ratio_levelset NaN) and no ``loss`` array: a grid costs
    grid_points^2 forward passes, the GGN two products.
    """
    cfg = config if isinstance(config, ContourConfig) else ContourConfig.from_mapping(config)
    n = cfg.grid_points
    slices = lecture_slices(spec, params, X, y, n_points=n, extent=cfg.extent_for("lecture"),
                            dead_threshold=cfg.dead_threshold, chunk_size=cfg.chunk_size, grid=grid)
    planes = []
    if eig_model is not None:
        planes.append({"d1": eig_model[0], "d2": eig_model[1], "slice": "eig", "scope": "model",
                       "extent": cfg.extent_for("eig")})
    for scope, (d1, d2) in sorted((eig_layers or {}).items(), key=lambda kv: int(kv[0][5:])):
        planes.append({"d1": d1, "d2": d2, "slice": "eig", "scope": scope, "extent": cfg.extent_for("eig")})
    for scope in ["model"] + (model.layer_names(spec) if cfg.random_per_layer else []):
        layers = None if scope == "model" else [scope]
        d1, d2 = random_directions(params, np.array([cfg.seed, 0 if layers is None else int(scope[5:])]), layers)
        planes.append({"d1": d1, "d2": d2, "slice": "random", "scope": scope, "extent": cfg.extent_for("random"),
                       "normalize": False})
    live_inputs = {int(s.scope[5:]): s.info["live"] for s in slices}  # every layer's, from its lecture slice
    slices += direction_slices(spec, params, X, y, planes, n_points=n, chunk_size=cfg.chunk_size,
                               live_inputs=live_inputs, grid=grid)
    rows = [slice_row(s, delta=cfg.delta, rel_tol=cfg.rel_tol, max_misfit=cfg.max_misfit,
                      max_rel_err=cfg.max_rel_err) for s in slices]
    grids: dict[str, np.ndarray] = {}
    for s in slices:
        grids.update(slice_arrays(s))
    return rows, grids

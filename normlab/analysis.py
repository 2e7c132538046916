"""Measurements at the analysis checkpoints of one variant.

The analysis set is the first ``max_examples`` rows of the training split, used as ONE batch: BN runs
in training mode with that batch's statistics, so the analysis loss is a deterministic function of the
parameters (and no running statistics exist to be updated).
"""

from __future__ import annotations

import numpy as np

from normlab import layer_inputs, model

RUNS = ("common", "best")
TAGS = ("init", "early", "end")


def analysis_batch(data: dict, max_examples: int, dtype=np.float64):
    """(X, y) of the analysis set."""
    return np.asarray(data["X_train"][:max_examples], dtype), np.asarray(data["y_train"][:max_examples])


def layer_input_rows(spec: model.ModelSpec, params: model.Params, X, dead_threshold: float):
    """Tidy rows for layer_inputs.csv (layer, metric, value) and layer_units.csv (layer, unit, mean,
    rms, live) of one checkpoint; layer l's input is A[l-1]."""
    summary, units = [], []
    for l, A in enumerate(layer_inputs.network_layer_inputs(spec, params, X), start=1):
        for metric, value in layer_inputs.layer_input_stats(A, dead_threshold).items():
            summary.append({"layer": l, "metric": metric, "value": value})
        rms, mean = layer_inputs.unit_rms(A), layer_inputs.unit_mean(A)
        live = rms > dead_threshold
        units.extend({"layer": l, "unit": j, "mean": float(mean[j]), "rms": float(rms[j]), "live": bool(live[j])}
                     for j in range(A.shape[1]))
    return summary, units


def lr_index(lrs, lr: float) -> int:
    """Index of ``lr`` in the grid ``lrs`` (relative tolerance 1e-9)."""
    lrs = np.asarray(lrs, np.float64)
    hits = np.flatnonzero(np.isclose(lrs, lr, rtol=1e-9, atol=0))
    if not hits.size:
        raise ValueError(f"learning rate {lr} is not on the grid {lrs.tolist()}")
    return int(hits[0])

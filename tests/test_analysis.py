"""normlab.analysis: the measurements of one checkpoint, as the analyze rule runs them."""

import jax
import numpy as np
import yaml
from conftest import REPO

from normlab import analysis, model

LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def test_second_input_treatment_of_a_network_compiles_nothing():
    """The analyze rule measures every input treatment of a network in one process, counting on the second
    one to reuse all of the first one's compiled programs (same shapes, specs equal but for ``input``):
    any program lowered anew during the second would be traced and compiled or loaded again."""
    cfg = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())["analysis"]
    rng = np.random.default_rng(0)
    X_raw = rng.normal(0.0, [1000.0, 1.0], size=(64, 2))
    X_std = (X_raw - X_raw.mean(0)) / X_raw.std(0)
    y = (X_raw[:, 0] / 1000 + X_raw[:, 1] > 0).astype(np.int64)
    results, lowered = [], []
    listener = lambda event, secs, **kw: lowered.append(event) if event == LOWERING_EVENT else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for k, (treatment, X) in enumerate((("raw", X_raw), ("standardize", X_std))):
            spec = model.ModelSpec((2, 8, 8, 2), norm="batchnorm", input=treatment)
            params = model.init_params(spec, jax.random.PRNGKey(1))
            lowered.clear()
            results.append(analysis.measure_checkpoint(spec, params, X, y, cfg, "init"))
            if k == 0:
                assert lowered, "the first treatment compiles its programs"
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert lowered == []
    # and the measurements are the second treatment's own: its layer-1 inputs are standardized
    raw, std = ({r["metric"]: r["value"] for r in res["layer_inputs"] if r["layer"] == 1} for res in results)
    assert raw != std and results[0]["curvature"] != results[1]["curvature"]

"""Tests of normlab.variants: the study's grid of variants (depth 0 and the batchnorm input treatment), the
names and the model spec of a variant."""

import pytest

from normlab import variants as V


def names(grid):
    return [v.name for v in grid]


def test_depth_0_has_one_variant_per_input_whatever_the_norms():
    grid = V.variant_grid(["raw", "standardize"], ["none", "batchnorm", "layernorm"], [0, 2])
    assert names(grid) == ["raw-none-d0", "raw-none-d2", "raw-batchnorm-d2", "raw-layernorm-d2",
                           "standardize-none-d0", "standardize-none-d2", "standardize-batchnorm-d2",
                           "standardize-layernorm-d2"]
    # without "none" among the norms depth 0 is still there, as <input>-none-d0
    assert names(V.variant_grid(["raw"], ["batchnorm", "layernorm"], [0, 4])) == [
        "raw-none-d0", "raw-batchnorm-d4", "raw-layernorm-d4"]
    assert names(V.variant_grid(["standardize"], ["layernorm"], ["0"])) == ["standardize-none-d0"]


def test_batchnorm_input_only_with_its_norms():
    grid = V.variant_grid(["raw", "batchnorm"], ["none", "batchnorm", "layernorm"], [0, 2])
    assert names(grid) == ["raw-none-d0", "raw-none-d2", "raw-batchnorm-d2", "raw-layernorm-d2",
                           "batchnorm-none-d0", "batchnorm-none-d2"]
    grid = V.variant_grid(["batchnorm", "raw"], ["none", "batchnorm", "layernorm"], [2, 0],
                          batchnorm_input_norms=("none", "layernorm"))
    assert names(grid) == ["batchnorm-none-d2", "batchnorm-none-d0", "batchnorm-layernorm-d2",
                           "raw-none-d2", "raw-none-d0", "raw-batchnorm-d2", "raw-layernorm-d2"]
    # the other inputs ignore batchnorm_input_norms
    assert names(V.variant_grid(["standardize"], ["batchnorm"], [2], batchnorm_input_norms=())) == [
        "standardize-batchnorm-d2"]


def test_the_grid_has_no_duplicates_and_every_name_parses_back():
    grid = V.variant_grid(list(V.INPUTS), ["none", "batchnorm", "layernorm"], [0, 2, 4, 8],
                          batchnorm_input_norms=("none", "batchnorm"))
    assert len(grid) == len(set(grid)) == 3 + 2 * 3 * 3 + 2 * 3
    assert [V.Variant.parse(n) for n in names(grid)] == grid


def test_variant_parse_and_data_input():
    v = V.Variant.parse("batchnorm-none-d2")
    assert v == V.Variant("batchnorm", "none", 2) and v.name == "batchnorm-none-d2"
    assert v.data_input == "raw"
    assert V.Variant.parse("standardize-layernorm-d0").data_input == "standardize"
    assert V.Variant.parse("raw-none-d4").data_input == "raw"
    assert set(V.DATA_INPUTS) < set(V.INPUTS) and "batchnorm" not in V.DATA_INPUTS
    for bad in ("whiten-none-d2", "batchnorm-groupnorm-d2", "batchnorm-none-2", "Batchnorm-none-d2"):
        with pytest.raises(ValueError, match="bad variant name"):
            V.Variant.parse(bad)


def test_model_spec_input_norm():
    spec = V.model_spec(V.Variant("batchnorm", "none", 2), 5, 3, 8, "relu", 1e-5)
    assert spec.input_norm == "batchnorm" and spec.input == "batchnorm" and spec.sizes == (5, 8, 8, 3)
    for inp in ("raw", "standardize"):
        spec = V.model_spec(V.Variant(inp, "batchnorm", 1), 5, 3, 8, "tanh", 1e-3, loss="mse")
        assert spec.input_norm == "none" and spec.input == inp and spec.norm == "batchnorm"
        assert (spec.activation, spec.eps, spec.loss) == ("tanh", 1e-3, "mse")
    spec = V.model_spec(V.Variant("batchnorm", "none", 0), 5, 3, 8, "relu", 1e-5)
    assert spec.sizes == (5, 3) and spec.depth == 0 and spec.input_norm == "batchnorm"

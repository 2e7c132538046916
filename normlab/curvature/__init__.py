"""Matrix-free curvature of a scalar loss: Hessian and Gauss-Newton products, Lanczos, Hutchinson, SLQ, and
the per-checkpoint curvature summary of normlab's MLPs.

Modules, from the generic to the specific (each imports only those before it; the first three import
nothing of normlab and work on any JAX function of a parameter pytree):

* ``operators``: parameter blocks, Hessian and Gauss-Newton products, ``CurvatureOperator``.
* ``krylov``: the Lanczos recurrence, top eigenpairs and their error estimates, ``host_rng``.
* ``estimators``: Hutchinson traces, SLQ, spectral densities, dense checks, ``eff_cond``, ``negative_mass``.
* ``mlp``: a normlab MLP's losses and operators, per layer from the layer up, its output layer's block
  in closed form, and the scale-invariant operator S A S of a normalized model.
* ``summary``: ``Spectrum``, ``analyze_curvature`` (with the scale-invariant lambda_max) and its cost policy.

Units: eigenvalues and traces are in units of the loss per squared parameter unit; spectral densities are
probability densities over eigenvalue (units 1 / eigenvalue) that integrate to 1. dtype: everything runs
in the dtype of the parameters given (float32 or float64; ``import normlab`` enables float64). Callers
import these names from the package.
"""

from normlab.curvature.estimators import (
    SLQResult,
    TraceEstimate,
    default_grid,
    dense_eigh,
    dense_matrix,
    eff_cond,
    gaussian_density,
    hutchinson_trace,
    negative_mass,
    slq,
    slq_moments,
)
from normlab.curvature.krylov import (
    LANCZOS_BLOCK_MIN_N,
    EigResult,
    LanczosResult,
    default_lanczos_steps,
    host_rng,
    lanczos,
    lanczos_lambda_max,
    ritz_error_estimates,
    top_eigenpairs,
    tridiag_eigh,
)
from normlab.curvature.mlp import (
    MATRICES,
    SpecForward,
    SpecLoss,
    SpecOuter,
    invariant_operator,
    invariant_scale,
    layer_operator,
    layer_operator_applies,
    model_operator,
    model_scopes,
    output_layer_matrix,
)
from normlab.curvature.operators import (
    BlockSpec,
    CurvatureOperator,
    block_mask,
    ggn_operator,
    ggn_vp,
    hessian_operator,
    hvp,
    layer_block,
    leaf_names,
    merge_block,
    norm_block,
    restrict,
    scaled_operator,
    split_block,
)
from normlab.curvature.summary import (
    LAYER_OPERATOR_MIN_FLOPS,
    OUTPUT_DENSE_MAX_PARAMS,
    CurvatureResult,
    Spectrum,
    analyze_curvature,
    dense_spectrum,
    invariant_lambda_max,
    invariant_scopes,
    layer_products_pay,
    output_block_in_closed_form,
    spectrum,
    spectrum_rows,
)

__all__ = [
    "LANCZOS_BLOCK_MIN_N", "LAYER_OPERATOR_MIN_FLOPS", "MATRICES", "OUTPUT_DENSE_MAX_PARAMS", "BlockSpec",
    "CurvatureOperator", "CurvatureResult", "EigResult", "LanczosResult", "SLQResult", "SpecForward", "SpecLoss",
    "SpecOuter", "Spectrum", "TraceEstimate", "analyze_curvature", "block_mask", "default_grid",
    "default_lanczos_steps", "dense_eigh", "dense_matrix", "dense_spectrum", "eff_cond", "gaussian_density",
    "ggn_operator", "ggn_vp", "hessian_operator", "host_rng", "hutchinson_trace", "hvp", "invariant_lambda_max",
    "invariant_operator", "invariant_scale", "invariant_scopes", "lanczos", "lanczos_lambda_max", "layer_block",
    "layer_operator", "layer_operator_applies", "layer_products_pay", "leaf_names", "merge_block", "model_operator",
    "model_scopes", "negative_mass", "norm_block", "output_block_in_closed_form", "output_layer_matrix", "restrict",
    "ritz_error_estimates", "scaled_operator", "slq", "slq_moments", "spectrum", "spectrum_rows", "split_block",
    "top_eigenpairs", "tridiag_eigh",
]

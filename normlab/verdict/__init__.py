"""From measured tables to claims. Each claim has a documented rule, evaluated per case (dataset x depth;
standardized inputs unless the rule compares inputs) and per seed: seed s of one arm is paired with seed
s of the other (same initial draw and batches). A case holds when the rule holds for every seed pair,
fails when it fails for one, and is undecided otherwise. A claim's sentence is chosen by how many decided
cases hold (all, none, or some: mixed, naming the cases), says for how many seeds (k of n) and which
comparison it uses (checkpoint init, early, matched or end; or the training runs at each arm's best or
largest stable learning rate).

A value known only to lie in an interval decides a comparison only when the whole interval does: a max
stable learning rate lies in its refinement bracket [max_stable_lr, max_stable_lr_upper]; a step count s
located to the step lies in [s - 1, s]; a censored axis ratio lies in [bound, inf); a smoothness value of
a step that left the finite range is infinite. Every threshold is declared in ``THRESHOLDS`` next to the
resolution of what it compares (a test checks the first exceeds the second). Nothing here is asserted
without the numbers that decide it.

Which rows a comparison reads is explicit: a rule comparing no normalization layer with one (batch norm
or layer norm) reads standardized inputs (not raw, not batch norm on the inputs), networks with a hidden
layer (not depth 0, the slide's model, which has one arm per input treatment) and those two norms only
(``core._compared``). The arms: ``input`` raw | standardize | batchnorm (batch norm on the raw inputs, by
the network), ``norm`` none | batchnorm | layernorm, ``depth`` 0 (``<input>-none-d0``) or more.

Modules: ``core`` (thresholds, cases, claims, helpers), ``layers`` (layer inputs and gradients),
``slices`` (contour slices: the slide, layer 1, deeper layers, the converse and BN on the inputs),
``training`` (learning rates, outcomes, speed, the converse, BN on the inputs), ``curvature`` (sharpness,
edge of stability, smoothness, effective learning rate), ``questions`` (which claim answers which
sub-question)."""

from normlab.verdict.core import (
    ARM_NAMES,
    ARMS,
    BUDGET_RATIO,
    CENSORED_BOUND,
    COMPARISONS,
    COND_RATIO,
    GRAD_SPREAD_RATIO,
    GRADIENT_RESOLUTION,
    GROUPS,
    LANCZOS_RESOLUTION,
    LAYER_SHARPNESS_RATIO,
    LECTURE_RATIO,
    LECTURE_ROUND,
    LEFT_OUT,
    LOSS_RESOLUTION,
    LR_BRACKET,
    LR_RATIO,
    MATCH_RATIO,
    MODE_GAP_RATIO,
    NORMALIZED,
    NUMERIC_RESOLUTION,
    PHASE,
    SLICE_RATIO,
    SMOOTH_RATIO,
    SMOOTHNESS_RESOLUTION,
    SPREAD_METRIC,
    SPREAD_RATIO,
    SPREAD_ROUND,
    STEP_RESOLUTION,
    STEPS_RATIO,
    THRESHOLDS,
    WORSE_RATIO,
    Case,
    Claim,
    Interval,
    Threshold,
    _at_least,
    _by_case_and_seed,
    _case,
    _checkpoints,
    _clearly_worse,
    _compared,
    _every_seed,
    _final_loss_at,
    _flag,
    _median,
    _networks,
    _no_hidden_layer,
    _point,
    _ratio,
    _slice_interval,
    _slice_rows,
    _spread,
    _standardized,
    rescaled_axis_ratio,
)
from normlab.verdict.curvature import (
    comparable_sharpness,
    edge_of_stability,
    effective_lr_sentence,
    effective_lr_table,
    layer_sharpness_claim,
    smoothness_claim,
)
from normlab.verdict.layers import (
    gradient_spread_claim,
    hidden_spread_claim,
    input_conditioning_claim,
    input_scale_claim,
)
from normlab.verdict.questions import (
    COMPARED,
    HEADLINE,
    QUESTIONS,
    SMOOTHNESS_CHECKPOINTS,
    all_claims,
    claims_by_question,
    rules_table,
    study_layout,
    summary,
)
from normlab.verdict.slices import (
    converse_slice_claim,
    hidden_slice_claim,
    input_bn_slice_claim,
    lecture_slice_claim,
    slide_claim,
)
from normlab.verdict.training import (
    budget_loss_claim,
    converse_outcome_claim,
    input_bn_mode_gap_claim,
    input_bn_outcome_claim,
    large_lr_outcome_claim,
    learning_rate_claim,
    outcome_claim,
    steps_claim,
)

__all__ = [
    "ARMS", "ARM_NAMES", "BUDGET_RATIO", "CENSORED_BOUND", "COMPARED", "COMPARISONS", "COND_RATIO",
    "GRADIENT_RESOLUTION", "GRAD_SPREAD_RATIO", "GROUPS", "HEADLINE", "LANCZOS_RESOLUTION", "LAYER_SHARPNESS_RATIO",
    "LECTURE_RATIO", "LECTURE_ROUND", "LEFT_OUT", "LOSS_RESOLUTION", "LR_BRACKET", "LR_RATIO", "MATCH_RATIO",
    "MODE_GAP_RATIO", "NORMALIZED", "NUMERIC_RESOLUTION", "PHASE", "QUESTIONS", "SLICE_RATIO", "SMOOTHNESS_CHECKPOINTS",
    "SMOOTHNESS_RESOLUTION", "SMOOTH_RATIO", "SPREAD_METRIC", "SPREAD_RATIO", "SPREAD_ROUND", "STEPS_RATIO",
    "STEP_RESOLUTION", "THRESHOLDS", "WORSE_RATIO", "Case", "Claim", "Interval", "Threshold", "all_claims",
    "budget_loss_claim", "claims_by_question", "comparable_sharpness", "converse_outcome_claim",
    "converse_slice_claim", "edge_of_stability",
    "effective_lr_sentence", "effective_lr_table", "gradient_spread_claim", "hidden_slice_claim",
    "hidden_spread_claim", "input_bn_mode_gap_claim", "input_bn_outcome_claim", "input_bn_slice_claim",
    "input_conditioning_claim", "input_scale_claim", "large_lr_outcome_claim", "layer_sharpness_claim",
    "learning_rate_claim", "lecture_slice_claim", "outcome_claim", "rescaled_axis_ratio", "rules_table", "slide_claim",
    "smoothness_claim", "steps_claim", "study_layout", "summary",
    # helpers the tests reach for
    "_at_least", "_by_case_and_seed", "_case", "_checkpoints", "_clearly_worse", "_compared", "_every_seed",
    "_final_loss_at", "_flag", "_median", "_networks", "_no_hidden_layer", "_point", "_ratio", "_slice_interval",
    "_slice_rows", "_spread", "_standardized",
]

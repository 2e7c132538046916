"""Claims on the layers' inputs and gradients: the scales of the input features (Q2), of the deeper layers'
inputs with and without a normalization layer (Q3), their conditioning, and the spread of the relative
gradient norms over layers (Q4)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.verdict.core import (
    COND_RATIO,
    GRAD_SPREAD_RATIO,
    PHASE,
    SPREAD_METRIC,
    SPREAD_RATIO,
    SPREAD_ROUND,
    Claim,
    _arm_key,
    _arm_names,
    _by_case_and_seed,
    _case,
    _compared,
    _median,
    _median_value,
    _no_hidden_layer,
    _ratio,
    _ratio_claim_cases,
    _spread,
    no_deeper_layer_sentence,
)


def input_scale_claim(layer_inputs: pd.DataFrame) -> Claim:
    """Rule: at layer 1 (the inputs X), at initialization of the best-LR run, standardized inputs have an
    RMS spread (p90/p10 over live features) < SPREAD_ROUND and the raw spread is larger, per dataset and
    seed (median over the variants of each input treatment; batch norm on the inputs is neither: its
    layer-1 inputs are the network's own normalized A[0])."""
    d = layer_inputs[(layer_inputs["metric"] == SPREAD_METRIC) & (layer_inputs["layer"] == 1)
                     & (layer_inputs["checkpoint"] == "init") & (layer_inputs["run"] == "best")
                     & layer_inputs["input"].isin(("raw", "standardize"))]
    pairs = _by_case_and_seed(d, _median_value, keys=("dataset",), arm_col="input", arms=("raw", "standardize"))
    cases = []
    for key, per in pairs.items():
        decided = {}
        for s, (raw, std) in per.items():
            ok = None if (np.isnan(raw) or np.isnan(std)) else bool(std < SPREAD_ROUND and raw > std)
            decided[s] = (ok, _ratio(raw, std))
        numbers = {"raw_spread": _median(r for r, _ in per.values()),
                   "standardized_spread": _median(s for _, s in per.values())}
        cases.append(_case(key, decided, numbers))
    return Claim(
        "input_scales", f"checkpoint init, layer 1 (the inputs X): RMS spread over live features (p90/p10): "
        f"standardized < {SPREAD_ROUND} and raw > standardized", cases,
        {"all": "At initialization, input normalization puts every input feature on one scale in every dataset "
                "({n} of {n}): it rounds the contours in the W[1] directions.",
         "none": "At initialization, input normalization did not put the input features on one scale in any "
                 "dataset.",
         "mixed": "At initialization, input normalization put the input features on one scale in {k} of {n} "
                  "datasets (not in: {failing}).",
         "missing": "The layer-1 input scales were not measured."},
        comparison="init", rule_key="input_scales", effect="raw / standardized spread")


def _hidden_layer_metric(layer_inputs: pd.DataFrame, metric: str, checkpoint: str,
                         arm: str = "batchnorm") -> pd.DataFrame:
    d = layer_inputs[(layer_inputs["metric"] == metric) & (layer_inputs["layer"] >= 2)
                     & (layer_inputs["checkpoint"] == checkpoint) & (layer_inputs["run"] == "best")]
    return _compared(d, arm)


def _hidden_missing(layer_inputs: pd.DataFrame, phase: str, what: str, arm: str) -> str:
    if _no_hidden_layer(layer_inputs):
        return no_deeper_layer_sentence(phase)
    return (phase + f", {what} were not measured for a pair of standardized variants without and with "
            f"{_arm_names(arm)[0]} at the same depth.")


def hidden_spread_claim(layer_inputs: pd.DataFrame, checkpoint: str = "end", arm: str = "batchnorm") -> Claim:
    """Rule: with standardized inputs, the median over hidden layers l >= 2 of the layer-input RMS spread
    (p90/p10 over live units) without a normalization layer is at least SPREAD_RATIO x the same with
    ``arm`` (batchnorm | layernorm; best-LR run, given checkpoint), for every seed pair. For layer norm this
    is the sharp test of the K-FAC view: it normalizes each example across its units, not each unit
    across the examples, so the view predicts it does not equalize the units' scales as BN does."""
    phase = PHASE[checkpoint]
    A, a, _ = _arm_names(arm)
    d = _hidden_layer_metric(layer_inputs, SPREAD_METRIC, checkpoint, arm)
    cases = _ratio_claim_cases(_by_case_and_seed(d, _median_value, arms=("none", arm)), SPREAD_RATIO,
                               (f"spread_no_{a}", f"spread_{a}"))
    if arm == "batchnorm":
        all_ = (phase + ", even with standardized inputs, the inputs of the deeper layers (A[1], A[2], ...) "
                "spread over scales without BN, and BN puts them back on one scale, in all {n} dataset/depth cases.")
        none = (phase + ", with standardized inputs, BN did not make the deeper layers' input scales more "
                "uniform in any of the {n} dataset/depth cases: input normalization already kept them on one scale.")
    else:
        all_ = (phase + f", with standardized inputs, {A} also puts the deeper layers' inputs back on one scale "
                f"(their spread without {A} is at least {SPREAD_RATIO:g}x the spread with it) in all {{n}} "
                "dataset/depth cases: per-example normalization does it too, against the K-FAC view's prediction.")
        none = (phase + f", with standardized inputs, {A} did not make the deeper layers' input scales more "
                "uniform in any of the {n} dataset/depth cases, as the K-FAC view predicts (it normalizes each "
                "example across the units, not each unit across the examples).")
    return Claim(
        f"hidden_spread{_arm_key(arm)}_{checkpoint}",
        f"checkpoint {checkpoint}, standardized inputs, layers >= 2: median RMS spread (p90/p10 over live units) "
        f"without {A} >= {SPREAD_RATIO} x with {A}, every seed",
        cases,
        {"all": all_, "none": none,
         "mixed": phase + f", with standardized inputs, {A} made the deeper layers' input scales more uniform in "
                  "{k} of {n} dataset/depth cases; not in: {failing}.",
         "missing": _hidden_missing(layer_inputs, phase, "the hidden layers' input scales", arm)},
        comparison=checkpoint, rule_key="hidden_spread", effect=f"spread without {A} / with {A}",
        group="" if arm == "batchnorm" else arm)


def input_conditioning_claim(layer_inputs: pd.DataFrame, checkpoint: str = "end", centred: bool = False) -> Claim:
    """Rule: with standardized inputs, the median over layers l >= 2 of the effective condition
    lambda_max / mean(lambda) of the layer's inputs without BN is at least COND_RATIO x the same with BN
    (best-LR run, given checkpoint), for every seed pair. ``centred``: of the centred covariance of the
    live units (``cov_eff_cond``); else of the uncentred E[a~ a~^T] (``eff_cond``, the K-FAC factor)."""
    phase = PHASE[checkpoint]
    metric = "cov_eff_cond" if centred else "eff_cond"
    what = "the centred covariance of" if centred else "the uncentred second moment E[a~ a~^T] of"
    d = _hidden_layer_metric(layer_inputs, metric, checkpoint)
    cases = _ratio_claim_cases(_by_case_and_seed(d, _median_value), COND_RATIO,
                               (f"{metric}_no_bn", f"{metric}_bn"))
    rule_key = "input_cov_conditioning" if centred else "input_conditioning"
    return Claim(
        f"{rule_key}_{checkpoint}",
        f"checkpoint {checkpoint}, standardized inputs, layers >= 2: median effective condition "
        f"(lambda_max / mean lambda) of {what} the layer inputs ({metric}) without BN >= {COND_RATIO} x with BN, "
        "every seed", cases,
        {"all": phase + f", with standardized inputs, {what} the deeper layers' inputs is worse conditioned without "
                "BN than with it in all {n} dataset/depth cases.",
         "none": phase + f", with standardized inputs, BN did not improve the conditioning of {what} the deeper "
                 "layers' inputs in any of the {n} dataset/depth cases.",
         "mixed": phase + f", with standardized inputs, BN improved the conditioning of {what} the deeper layers' "
                  "inputs in {k} of {n} dataset/depth cases; not in: {failing}.",
         "missing": _hidden_missing(layer_inputs, phase, f"the conditioning of {what} the hidden layers' inputs",
                                    "batchnorm")},
        comparison=checkpoint, rule_key=rule_key,
        effect="effective condition without BN / with BN")


def gradient_spread_claim(gradients: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule: with standardized inputs, at the last evaluation step (``end``) or step 0 (``init``) of each
    seed's best-LR run, the spread (max/min over layers) of ||dJ/dW[l]|| / ||W[l]|| without BN is
    >= GRAD_SPREAD_RATIO x the spread with BN, every seed."""
    d = gradients[(gradients["metric"] == "relative_grad_norm") & (gradients["run"] == "best")]
    step = d.groupby(["dataset", "variant", "seed"])["step"].transform("max" if checkpoint == "end" else "min")
    d = _compared(d[d["step"] == step])
    cases = _ratio_claim_cases(_by_case_and_seed(d, _spread), GRAD_SPREAD_RATIO,
                               ("grad_spread_no_bn", "grad_spread_bn"))
    phase = PHASE[checkpoint]
    return Claim(
        f"gradient_spread_{checkpoint}", f"checkpoint {checkpoint} ({'last' if checkpoint == 'end' else 'first'} "
        "evaluation step), standardized inputs: spread over layers of ||dJ/dW[l]||/||W[l]|| without BN >= "
        f"{GRAD_SPREAD_RATIO} x with BN, every seed", cases,
        {"all": phase + ", relative gradient magnitudes are more uneven across layers without BN than with it in "
                "all {n} dataset/depth cases.",
         "none": phase + ", BN did not make the relative gradient magnitudes more even across layers in any of "
                 "the {n} dataset/depth cases.",
         "mixed": phase + ", BN made the relative gradient magnitudes more even across layers in {k} of {n} "
                  "dataset/depth cases; not in: {failing}.",
         "missing": (no_deeper_layer_sentence(phase) if _no_hidden_layer(gradients)
                     else "Gradient magnitudes were not measured.")},
        comparison=checkpoint, rule_key="gradient_spread",
        effect="gradient spread without BN / with BN")

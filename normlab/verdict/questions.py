"""The sub-questions of the thread and the claims that answer each (``claims_by_question``)."""

from __future__ import annotations

import pandas as pd

from normlab.verdict.core import NORMALIZED, PHASE, THRESHOLDS, Claim, _checkpoints
from normlab.verdict.curvature import layer_sharpness_claim, smoothness_claim
from normlab.verdict.layers import (
    gradient_spread_claim,
    hidden_spread_claim,
    input_conditioning_claim,
    input_scale_claim,
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

# The sub-questions of the thread (docs/question.md) and the claims that answer each.
QUESTIONS = {
    "q1": "Are all W[l], b[l] independent variables of the optimization, and is J equally curved along all of them?",
    "q2": "Which variables are in the input-normalization contour plots: W[1], b[1], or A[1]?",
    "q3": "Once the inputs are normalized, what is left for batch norm to make rounder?",
    "q4": "Does 'rounder' mean the gradient magnitudes are similar across all parameters?",
    "q5": "If the inputs are normalized, does batch norm bring only marginal gains?",
}
COMPARED = ("init", "matched", "end")  # the checkpoints of the layer-input claims
SMOOTHNESS_CHECKPOINTS = ("matched", "end")  # the checkpoints of the smoothness claims (common-LR run)
HEADLINE = "slide"  # the claim whose sentence opens Q2 and the report's summary


def study_layout(t: dict[str, pd.DataFrame]) -> tuple[bool, tuple[str, ...], bool]:
    """(has networks: some variant has a hidden layer; the normalization layers (NORMALIZED) of its
    networks; has batch norm on the inputs), read from every table given that has ``norm`` and ``depth``
    (``input``) columns."""
    frames = [df for df in t.values() if isinstance(df, pd.DataFrame) and {"norm", "depth"} <= set(df.columns)]
    hidden = [df[df["depth"] >= 1] for df in frames]
    has_hidden = any(len(h) for h in hidden)
    norms = set().union(*(set(h["norm"]) for h in hidden)) if hidden else set()
    input_bn = any("input" in df and bool((df["input"] == "batchnorm").any()) for df in frames)
    return has_hidden, tuple(a for a in NORMALIZED if a in norms), input_bn


def claims_by_question(tables: dict[str, pd.DataFrame]) -> dict[str, list[Claim]]:
    """The claims, grouped by the sub-question (QUESTIONS) they answer; a claim whose table is absent is
    left out. Tables by kind: layer_inputs, variant_seeds, runs, gradients, and optionally curvature,
    contours, training, smoothness, variants.

    A normalization layer's claims appear when the study's networks have it (a study of ``norms:
    [layernorm]`` has no BN claim); a study of depth-0 models only keeps the claims about the deeper layers
    at their first checkpoint, saying there is no deeper layer."""
    t = tables
    has_hidden, arms, input_bn = study_layout(t)
    bn = "batchnorm" in arms
    deeper = ("batchnorm",) if not has_hidden else tuple(a for a in arms if a == "batchnorm")
    first = (lambda cps: cps[:1]) if not has_hidden else (lambda cps: cps)  # noqa: E731
    out: dict[str, list[Claim]] = {q: [] for q in QUESTIONS}
    if "curvature" in t and deeper:
        out["q1"] += [layer_sharpness_claim(t["curvature"], c) for c in first(_checkpoints(t["curvature"]))]
    li = t["layer_inputs"]
    if "contours" in t:
        out["q2"].append(slide_claim(t["contours"]))
    out["q2"].append(input_scale_claim(li))
    if "contours" in t and has_hidden:
        out["q2"] += [lecture_slice_claim(t["contours"], c) for c in _checkpoints(t["contours"])]
    for c in first(_checkpoints(li, COMPARED)):
        if deeper:
            out["q3"] += [hidden_spread_claim(li, c), input_conditioning_claim(li, c),
                          input_conditioning_claim(li, c, centred=True)]
    if "contours" in t and deeper:
        out["q3"] += [hidden_slice_claim(t["contours"], c) for c in first(_checkpoints(t["contours"], COMPARED))]
    for arm in arms:
        if arm != "batchnorm":
            out["q3"] += [hidden_spread_claim(li, c, arm) for c in _checkpoints(li, COMPARED)]
    if "smoothness" in t and has_hidden:
        s = t["smoothness"]
        cps = _checkpoints(s[s["run"] == "common"], SMOOTHNESS_CHECKPOINTS)
        out["q3"] += [smoothness_claim(s, arm, m, c) for arm in arms for m in ("beta", "loss") for c in cps]
    if deeper:
        out["q4"].append(gradient_spread_claim(t["gradients"]))
    if "variant_seeds" in t:
        vs, runs = t["variant_seeds"], t["runs"]
        grid = runs[runs["grid"].astype(bool)] if "grid" in runs else runs
        lr_min = float(grid["lr"].min()) if len(grid) else None
        total = ({ds: float(g["step"].max()) for ds, g in t["training"].groupby("dataset")}
                 if "training" in t else None)
        if bn:
            out["q5"] += [learning_rate_claim(vs, lr_min), large_lr_outcome_claim(vs, runs), outcome_claim(vs),
                          steps_claim(vs, total), budget_loss_claim(vs, 10), budget_loss_claim(vs, 30)]
        out["q5"] += [learning_rate_claim(vs, lr_min, arm) for arm in arms if arm != "batchnorm"]
        if bn:
            out["q5"] += [converse_outcome_claim(vs, "none"), converse_outcome_claim(vs, "batchnorm")]
    if bn and "contours" in t:
        out["q5"] += [converse_slice_claim(t["contours"], c) for c in _checkpoints(t["contours"], ("init", "end"))]
    if input_bn:
        if "variant_seeds" in t:
            out["q5"].append(input_bn_outcome_claim(t["variant_seeds"]))
        if "contours" in t:
            out["q5"] += [input_bn_slice_claim(t["contours"], c) for c in _checkpoints(t["contours"], ("init", "end"))]
        out["q5"].append(input_bn_mode_gap_claim(t["runs"], t.get("variants")))
    return out


def all_claims(tables: dict[str, pd.DataFrame]) -> list[Claim]:
    return [c for claims in claims_by_question(tables).values() for c in claims]


def summary(by_question: dict[str, list[Claim]]) -> list[tuple[str, Claim]]:
    """The report's short answer: (question, claim) for every claim, the headline (the slide) first."""
    pairs = [(q, c) for q, cs in by_question.items() for c in cs]
    return sorted(pairs, key=lambda qc: qc[1].key != HEADLINE)  # stable: the others keep their order


def rules_table(claims: list[Claim]) -> list[dict]:
    """One row per claim for the report's methods: its key, comparison and rule text, and the thresholds
    (name = value, resolution) its rule declares in THRESHOLDS."""
    out = []
    for c in claims:
        ts = [t for t in THRESHOLDS if t.rule == c.rule_key]
        out.append({"key": c.key, "comparison": c.comparison_text, "rule": c.rule,
                    "thresholds": "; ".join(f"{t.name} = {t.value:g} (resolution {t.resolution:g}: {t.compares})"
                                            for t in ts)})
    return out


__all__ = ["COMPARED", "HEADLINE", "PHASE", "QUESTIONS", "all_claims", "claims_by_question", "rules_table",
           "study_layout", "summary"]

"""From measured tables to claims. Each claim has a documented rule, is evaluated per case
(dataset x depth), and its sentence is chosen by how many cases satisfy the rule: all, none, or some
(reported as mixed, naming the cases). Nothing here is asserted without the numbers that decide it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

PHASE = {"init": "At initialization", "early": "Early in training", "end": "At the end of training"}

# Thresholds of the rules (documented in the report's methods section).
SPREAD_ROUND = 2.0  # a layer's inputs are "on one scale" when max/min unit RMS is below this
SPREAD_RATIO = 1.5  # BN "equalizes" when the no-BN spread is at least this multiple of the BN spread
LR_RATIO = 2.0  # BN "permits a larger LR" when its max stable LR is at least this multiple
GRAD_SPREAD_RATIO = 1.5


@dataclasses.dataclass
class Case:
    """One (dataset, depth) evaluation of a rule: the numbers that decide it and the outcome."""

    dataset: str
    depth: int | None
    holds: bool | None  # None: could not be evaluated (missing data)
    numbers: dict


@dataclasses.dataclass
class Claim:
    key: str
    rule: str
    cases: list[Case]
    sentences: dict  # "all" | "none" | "mixed" | "missing" -> text

    @property
    def outcome(self) -> str:
        decided = [c.holds for c in self.cases if c.holds is not None]
        if not decided:
            return "missing"
        if all(decided):
            return "all"
        if not any(decided):
            return "none"
        return "mixed"

    @property
    def n_holds(self) -> int:
        return sum(1 for c in self.cases if c.holds)

    @property
    def n_cases(self) -> int:
        return sum(1 for c in self.cases if c.holds is not None)

    @property
    def sentence(self) -> str:
        return self.sentences[self.outcome].format(k=self.n_holds, n=self.n_cases,
                                                   failing=", ".join(self.failing_cases()))

    def failing_cases(self) -> list[str]:
        return [f"{c.dataset} d{c.depth}" if c.depth is not None else c.dataset
                for c in self.cases if c.holds is False]


def _metric(layer_inputs: pd.DataFrame, metric: str) -> pd.DataFrame:
    return layer_inputs[layer_inputs["metric"] == metric]


def input_scale_claim(layer_inputs: pd.DataFrame) -> Claim:
    """Rule: at layer 1 (the inputs X), standardized inputs have RMS spread < SPREAD_ROUND and the raw
    spread is larger than the standardized one, per dataset (init checkpoint, any variant)."""
    d = _metric(layer_inputs, "rms_spread")
    d = d[(d["layer"] == 1) & (d["checkpoint"] == "init") & (d["run"] == "best")]
    cases = []
    for ds, g in d.groupby("dataset", sort=True):
        raw = g[g["input"] == "raw"]["value"].median()
        std = g[g["input"] == "standardize"]["value"].median()
        ok = None if (np.isnan(raw) or np.isnan(std)) else bool(std < SPREAD_ROUND and raw > std)
        cases.append(Case(ds, None, ok, {"raw_spread": raw, "standardized_spread": std}))
    return Claim(
        "input_scales", f"layer-1 input RMS spread (max/min over live features): standardized < {SPREAD_ROUND} "
        "and raw > standardized", cases,
        {"all": "Input normalization puts every input feature on one scale in every dataset ({n} of {n}): it "
                "rounds the contours in the W[1] directions.",
         "none": "Input normalization did not put the input features on one scale in any dataset.",
         "mixed": "Input normalization put the input features on one scale in {k} of {n} datasets (not in: "
                  "{failing}).",
         "missing": "The layer-1 input scales were not measured."},
    )


def _pairs(df: pd.DataFrame, value_of, keys=("dataset", "depth")):
    """Per (dataset, depth): (value without BN, value with BN), standardized inputs, via value_of(group)."""
    d = df[df["input"] == "standardize"]
    for (ds, depth), g in d.groupby(list(keys), sort=True):
        none, bn = g[g["norm"] == "none"], g[g["norm"] == "batchnorm"]
        yield ds, int(depth), (value_of(none) if len(none) else np.nan), (value_of(bn) if len(bn) else np.nan)


def hidden_spread_claim(layer_inputs: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule: with standardized inputs, the median over hidden layers l >= 2 of the layer-input RMS spread
    without BN is at least SPREAD_RATIO x the same with BN (best-LR run, given checkpoint)."""
    phase = PHASE[checkpoint]
    d = _metric(layer_inputs, "rms_spread")
    d = d[(d["layer"] >= 2) & (d["checkpoint"] == checkpoint) & (d["run"] == "best")]
    cases = []
    for ds, depth, none, bn in _pairs(d, lambda g: g["value"].median()):
        ok = None if (np.isnan(none) or np.isnan(bn)) else bool(none >= SPREAD_RATIO * bn)
        cases.append(Case(ds, depth, ok, {"spread_no_bn": none, "spread_bn": bn}))
    return Claim(
        f"hidden_spread_{checkpoint}",
        f"standardized inputs, layers >= 2, checkpoint {checkpoint}: median RMS spread without BN >= "
        f"{SPREAD_RATIO} x with BN",
        cases,
        {"all": phase + ", even with standardized inputs, the inputs of the deeper layers (A[1], A[2], ...) "
                "spread over scales without BN, and BN puts them back on one scale, in all {n} dataset/depth cases.",
         "none": phase + ", with standardized inputs, BN did not make the deeper layers' input scales more "
                 "uniform in any of the {n} dataset/depth cases: input normalization already kept them on one scale.",
         "mixed": phase + ", with standardized inputs, BN made the deeper layers' input scales more uniform in {k} "
                  "of {n} dataset/depth cases; not in: {failing}.",
         "missing": "The hidden layers' input scales were not measured (depth 1 only?)."},
    )


def learning_rate_claim(variants: pd.DataFrame, lr_max: float) -> Claim:
    """Rule: with standardized inputs, max stable LR with BN >= LR_RATIO x without BN (a variant with no
    stable LR counts as 0). Undecided (n/a) when the no-BN variant is stable up to ``lr_max``, the
    largest LR tried: the grid cannot show a larger one for BN."""
    cases = []
    for ds, depth, none, bn in _pairs(variants, lambda g: g["max_stable_lr"].fillna(0).max()):
        missing = np.isnan(none) or np.isnan(bn)
        censored = bool(np.isclose(none, lr_max))
        ok = None if missing or censored else bool(bn >= LR_RATIO * none)
        cases.append(Case(ds, depth, ok, {"max_stable_lr_no_bn": none, "max_stable_lr_bn": bn,
                                               "no_bn_stable_at_largest_lr_tried": censored}))
    return Claim(
        "learning_rate", f"standardized inputs: max stable LR with BN >= {LR_RATIO} x without BN", cases,
        {"all": "With inputs already standardized, BN still raised the largest stable learning rate at least "
                f"{LR_RATIO:g}-fold in all {{n}} dataset/depth cases.",
         "none": "With inputs already standardized, BN did not raise the largest stable learning rate "
                 f"{LR_RATIO:g}-fold in any of the {{n}} dataset/depth cases.",
         "mixed": f"With inputs already standardized, BN raised the largest stable learning rate at least "
                  f"{LR_RATIO:g}-fold in {{k}} of {{n}} dataset/depth cases; not in: {{failing}}.",
         "missing": _lr_missing_sentence(cases)},
    )


def _lr_missing_sentence(cases: list[Case]) -> str:
    """Why no dataset/depth case of the learning-rate claim could be decided."""
    if not cases:
        return "Max stable learning rates could not be compared: the study has no pair of standardized variants " \
               "with and without BN."
    if any(c.numbers.get("no_bn_stable_at_largest_lr_tried") for c in cases):
        return "Max stable learning rates could not be compared: without BN every run was already stable at the " \
               "largest learning rate tried (extend sweep.lr_max)."
    return "Max stable learning rates could not be compared: a variant is missing from the study."


def gradient_spread_claim(gradients: pd.DataFrame) -> Claim:
    """Rule: with standardized inputs, at the end of the best-LR run the spread (max/min over layers) of
    ||dJ/dW[l]|| / ||W[l]|| without BN is >= GRAD_SPREAD_RATIO x the spread with BN."""
    d = gradients[(gradients["metric"] == "relative_grad_norm") & (gradients["run"] == "best")]
    d = d[d["step"] == d.groupby("variant")["step"].transform("max")]

    def spread(g):
        v = g["value"].to_numpy()
        return float(v.max() / v.min()) if v.min() > 0 else np.inf

    cases = []
    for ds, depth, none, bn in _pairs(d, spread):
        ok = None if (np.isnan(none) or np.isnan(bn)) else bool(none >= GRAD_SPREAD_RATIO * bn)
        cases.append(Case(ds, depth, ok, {"grad_spread_no_bn": none, "grad_spread_bn": bn}))
    return Claim(
        "gradient_spread", "standardized inputs, end of training: spread over layers of ||dJ/dW[l]||/||W[l]|| "
        f"without BN >= {GRAD_SPREAD_RATIO} x with BN", cases,
        {"all": "Relative gradient magnitudes are more uneven across layers without BN than with it in all {n} "
                "dataset/depth cases.",
         "none": "BN did not make the relative gradient magnitudes more even across layers in any of the {n} "
                 "dataset/depth cases.",
         "mixed": "BN made the relative gradient magnitudes more even across layers in {k} of {n} "
                  "dataset/depth cases; not in: {failing}.",
         "missing": "Gradient magnitudes were not measured."},
    )


LECTURE_ROUND = 2.5  # a lecture slice is "near round" when its GGN axis ratio is below this
LECTURE_RATIO = 2.0  # raw is "clearly more elongated" when its ratio is at least this multiple of standardized
LAYER_SHARPNESS_RATIO = 1.5
STEPS_RATIO = 1.5


def lecture_slice_claim(contours: pd.DataFrame, checkpoint: str = "init") -> Claim:
    """Rule (Q2): without normalization layers, the layer-1 lecture slice (the slide's two weights) has
    GGN axis ratio < LECTURE_ROUND on standardized inputs and >= LECTURE_RATIO x that on raw inputs
    (best-LR run, given checkpoint), per dataset and depth."""
    d = contours[(contours["slice"] == "lecture") & (contours["scope"] == "layer1") & (contours["norm"] == "none")
                 & (contours["run"] == "best") & (contours["checkpoint"] == checkpoint)]
    cases = []
    for (ds, depth), g in d.groupby(["dataset", "depth"], sort=True):
        raw = g[g["input"] == "raw"]["axis_ratio_ggn"].median()
        std = g[g["input"] == "standardize"]["axis_ratio_ggn"].median()
        ok = None if (np.isnan(raw) or np.isnan(std)) else bool(std < LECTURE_ROUND and raw >= LECTURE_RATIO * std)
        cases.append(Case(ds, int(depth), ok, {"ratio_raw": raw, "ratio_standardized": std}))
    return Claim(
        f"lecture_slice_{checkpoint}", f"layer-1 lecture slice, no normalization layers, checkpoint {checkpoint}: "
        f"GGN axis ratio standardized < {LECTURE_ROUND} and raw >= {LECTURE_RATIO} x standardized", cases,
        {"all": PHASE[checkpoint] + ", the lecture's picture (the slice of J through two weights of layer 1) is "
                "elongated on raw inputs and near round on standardized inputs, in all {n} dataset/depth cases.",
         "none": PHASE[checkpoint] + ", the layer-1 slice was not near round on standardized inputs (or not "
                 "clearly rounder than on raw inputs) in any of the {n} dataset/depth cases.",
         "mixed": PHASE[checkpoint] + ", standardizing the inputs made the layer-1 slice near round in {k} of {n} "
                  "dataset/depth cases; not in: {failing}.",
         "missing": "The layer-1 lecture slices were not measured."},
    )


def layer_sharpness_claim(curvature: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule (Q1): with standardized inputs, the spread over layers (max / min over l) of the top
    Gauss-Newton eigenvalue of layer l's own (W[l], b[l]) block is >= LAYER_SHARPNESS_RATIO x larger
    without BN than with BN (best-LR run, given checkpoint)."""
    d = curvature[(curvature["matrix"] == "ggn") & (curvature["metric"] == "lambda_max")
                  & curvature["scope"].str.startswith("layer") & (curvature["run"] == "best")
                  & (curvature["checkpoint"] == checkpoint)]

    def spread(g):
        v = g["value"].to_numpy()
        return float(v.max() / v.min()) if len(v) and v.min() > 0 else np.nan

    cases = []
    for ds, depth, none, bn in _pairs(d, spread):
        ok = None if (np.isnan(none) or np.isnan(bn)) else bool(none >= LAYER_SHARPNESS_RATIO * bn)
        cases.append(Case(ds, depth, ok, {"layer_sharpness_spread_no_bn": none, "layer_sharpness_spread_bn": bn}))
    return Claim(
        f"layer_sharpness_{checkpoint}", "standardized inputs, checkpoint " + checkpoint + ": spread over layers of "
        f"the per-layer Gauss-Newton lambda_max without BN >= {LAYER_SHARPNESS_RATIO} x with BN", cases,
        {"all": PHASE[checkpoint] + ", J is much sharper along some layers' weights than others without BN, and "
                "BN evens out the per-layer sharpness, in all {n} dataset/depth cases.",
         "none": PHASE[checkpoint] + ", BN did not even out the per-layer sharpness of J in any of the {n} "
                 "dataset/depth cases.",
         "mixed": PHASE[checkpoint] + ", BN evened out the per-layer sharpness of J in {k} of {n} dataset/depth "
                  "cases; not in: {failing}.",
         "missing": "Per-layer curvature was not measured."},
    )


def steps_claim(variants: pd.DataFrame) -> Claim:
    """Rule (Q5): with standardized inputs, the median steps to the target loss at the best LR without BN
    is >= STEPS_RATIO x with BN (a variant that never reaches the target counts as infinitely slow)."""
    def steps(g):
        v = g["steps_to_target_median"].astype(float)
        return float(v.fillna(np.inf).min()) if len(v) else np.nan

    cases = []
    for ds, depth, none, bn in _pairs(variants, steps):
        both_never = np.isinf(none) and np.isinf(bn)
        ok = None if (np.isnan(none) or np.isnan(bn) or both_never) else bool(none >= STEPS_RATIO * bn)
        cases.append(Case(ds, depth, ok, {"steps_to_target_no_bn": none, "steps_to_target_bn": bn}))
    return Claim(
        "steps_to_target", f"standardized inputs, best LR: median steps to the target loss without BN >= "
        f"{STEPS_RATIO} x with BN", cases,
        {"all": "With standardized inputs, BN reached the target loss at least " f"{STEPS_RATIO:g}" "x faster in "
                "all {n} dataset/depth cases.",
         "none": "With standardized inputs, BN did not reach the target loss " f"{STEPS_RATIO:g}" "x faster in any "
                 "of the {n} dataset/depth cases: here its gains in speed were marginal.",
         "mixed": "With standardized inputs, BN reached the target loss at least " f"{STEPS_RATIO:g}" "x faster in "
                  "{k} of {n} dataset/depth cases; not in: {failing}.",
         "missing": "No variant reached the target loss (sweep.target_loss), so speed could not be compared."},
    )


# The sub-questions of the thread (docs/question.md) and the claims that answer each.
QUESTIONS = {
    "q1": "Are all W[l], b[l] independent variables of the optimization, and is J equally curved along all of them?",
    "q2": "Which variables are in the input-normalization contour plots: W[1], b[1], or A[1]?",
    "q3": "Once the inputs are normalized, what is left for batch norm to make rounder?",
    "q4": "Does 'rounder' mean the gradient magnitudes are similar across all parameters?",
    "q5": "If the inputs are normalized, does batch norm bring only marginal gains?",
}


def _checkpoints(df: pd.DataFrame) -> list[str]:
    order = ("init", "early", "end")
    return sorted(set(df["checkpoint"]), key=order.index)


def claims_by_question(tables: dict[str, pd.DataFrame]) -> dict[str, list[Claim]]:
    """The claims, grouped by the sub-question (QUESTIONS) they answer; a claim whose table is absent is
    left out."""
    t = tables
    out: dict[str, list[Claim]] = {q: [] for q in QUESTIONS}
    if "curvature" in t:
        out["q1"] += [layer_sharpness_claim(t["curvature"], c) for c in _checkpoints(t["curvature"])]
    out["q2"].append(input_scale_claim(t["layer_inputs"]))
    if "contours" in t:
        out["q2"] += [lecture_slice_claim(t["contours"], c) for c in _checkpoints(t["contours"])]
    out["q3"] += [hidden_spread_claim(t["layer_inputs"], "init"), hidden_spread_claim(t["layer_inputs"], "end")]
    out["q4"].append(gradient_spread_claim(t["gradients"]))
    out["q5"] += [learning_rate_claim(t["variants"], float(t["runs"]["lr"].max())), steps_claim(t["variants"])]
    return out


def all_claims(tables: dict[str, pd.DataFrame]) -> list[Claim]:
    return [c for claims in claims_by_question(tables).values() for c in claims]


def edge_of_stability(curvature: pd.DataFrame) -> pd.DataFrame:
    """Sharpness at the end of training against the stability limit of gradient descent: per dataset and
    variant, the best-LR run's whole-model Hessian lambda_max at checkpoint ``end``, 2 / lr, and their ratio
    lambda_max * lr / 2 (about 1: training sits at the edge of stability; well below 1: it does not).
    Columns dataset, variant, lr, lambda_max, two_over_lr, ratio; empty if not measured."""
    d = curvature[(curvature["run"] == "best") & (curvature["checkpoint"] == "end") & (curvature["scope"] == "model")
                  & (curvature["matrix"] == "hessian") & (curvature["metric"] == "lambda_max")]
    out = d[["dataset", "variant", "lr"]].copy()
    out["lambda_max"] = d["value"].to_numpy()
    out["two_over_lr"] = 2.0 / out["lr"]
    out["ratio"] = out["lambda_max"] / out["two_over_lr"]
    return out.sort_values(["dataset", "variant"]).reset_index(drop=True)

"""From measured tables to claims. Each claim has a documented rule, is evaluated per case
(dataset x depth), and its sentence is chosen by how many cases satisfy the rule: all, none, or some
(reported as mixed, naming the cases). Nothing here is asserted without the numbers that decide it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

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


def hidden_spread_claim(layer_inputs: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule: with standardized inputs, the median over hidden layers l >= 2 of the layer-input RMS spread
    without BN is at least SPREAD_RATIO x the same with BN (best-LR run, given checkpoint)."""
    phase = {"init": "At initialization", "early": "Early in training", "end": "At the end of training"}[checkpoint]
    d = _metric(layer_inputs, "rms_spread")
    d = d[(d["layer"] >= 2) & (d["checkpoint"] == checkpoint) & (d["run"] == "best") & (d["input"] == "standardize")]
    cases = []
    for (ds, depth), g in d.groupby(["dataset", "depth"], sort=True):
        none = g[g["norm"] == "none"]["value"].median()
        bn = g[g["norm"] == "batchnorm"]["value"].median()
        ok = None if (np.isnan(none) or np.isnan(bn)) else bool(none >= SPREAD_RATIO * bn)
        cases.append(Case(ds, int(depth), ok, {"spread_no_bn": none, "spread_bn": bn}))
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
    d = variants[variants["input"] == "standardize"]
    cases = []
    for (ds, depth), g in d.groupby(["dataset", "depth"], sort=True):
        none = g[g["norm"] == "none"]["max_stable_lr"].fillna(0).max()
        bn = g[g["norm"] == "batchnorm"]["max_stable_lr"].fillna(0).max()
        missing = (g["norm"] == "none").sum() == 0 or (g["norm"] == "batchnorm").sum() == 0
        censored = bool(np.isclose(none, lr_max))
        ok = None if missing or censored else bool(bn >= LR_RATIO * none)
        cases.append(Case(ds, int(depth), ok, {"max_stable_lr_no_bn": none, "max_stable_lr_bn": bn,
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
    d = gradients[(gradients["metric"] == "relative_grad_norm") & (gradients["run"] == "best")
                  & (gradients["input"] == "standardize")]
    d = d[d["step"] == d.groupby("variant")["step"].transform("max")]
    cases = []
    for (ds, depth), g in d.groupby(["dataset", "depth"], sort=True):
        spreads = {}
        for norm, h in g.groupby("norm"):
            v = h["value"].to_numpy()
            spreads[norm] = float(v.max() / v.min()) if v.min() > 0 else np.inf
        none, bn = spreads.get("none", np.nan), spreads.get("batchnorm", np.nan)
        ok = None if (np.isnan(none) or np.isnan(bn)) else bool(none >= GRAD_SPREAD_RATIO * bn)
        cases.append(Case(ds, int(depth), ok, {"grad_spread_no_bn": none, "grad_spread_bn": bn}))
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


def all_claims(tables: dict[str, pd.DataFrame]) -> list[Claim]:
    return [
        input_scale_claim(tables["layer_inputs"]),
        hidden_spread_claim(tables["layer_inputs"], "init"),
        hidden_spread_claim(tables["layer_inputs"], "end"),
        gradient_spread_claim(tables["gradients"]),
        learning_rate_claim(tables["variants"], float(tables["runs"]["lr"].max())),
    ]

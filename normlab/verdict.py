"""From measured tables to claims. Each claim has a documented rule, evaluated per case (dataset x depth;
standardized inputs unless the rule compares inputs) and per seed: seed s of one arm is paired with seed
s of the other (same initial draw and batches). A case holds when the rule holds for every seed pair,
fails when it fails for one, and is undecided otherwise. A claim's sentence is chosen by how many decided
cases hold (all, none, or some: mixed, naming the cases), says for how many seeds (k of n) and which
comparison it uses (checkpoint init, early, matched or end; or the training runs at each arm's best or
largest stable learning rate).

A value known only to lie in an interval decides a comparison only when the whole interval does: a max
stable learning rate lies in its refinement bracket [max_stable_lr, max_stable_lr_upper]; a step count s
located to the step lies in [s - 1, s]; a censored axis ratio lies in [bound, inf). Every threshold is
declared in ``THRESHOLDS`` next to the resolution of what it compares (a test checks the first exceeds
the second). Nothing here is asserted without the numbers that decide it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

PHASE = {"init": "At initialization", "early": "Early in training", "matched": "At matched training loss",
         "end": "At the end of training"}
ARMS = ("none", "batchnorm")  # the arms each BN claim compares: without and with batch norm

# Thresholds of the rules (documented in the report's methods section and in THRESHOLDS).
SPREAD_ROUND = 2.0  # a layer's inputs are "on one scale" when the p90/p10 ratio of live-unit RMS is below this
SPREAD_RATIO = 1.5  # BN "equalizes" when the no-BN spread is at least this multiple of the BN spread
COND_RATIO = 1.5  # BN "conditions" a layer's inputs when the no-BN effective condition is this multiple
LR_RATIO = 2.0  # BN "permits a larger LR" when its max stable LR is at least this multiple
WORSE_RATIO = 10.0  # an arm is "clearly worse" when its median final loss is this multiple (and worse every seed)
STEPS_RATIO = 1.5  # BN is "faster" when no BN needs this multiple of its steps to the case target
BUDGET_RATIO = 2.0  # BN is "ahead" after a budget when the no-BN loss there is this multiple of the BN loss
GRAD_SPREAD_RATIO = 1.5
LECTURE_ROUND = 2.5  # a lecture slice is "near round" when its GGN axis ratio is below this
LECTURE_RATIO = 2.0  # raw is "clearly more elongated" when its ratio is at least this multiple of standardized
SLICE_RATIO = 1.5  # BN "rounds" the deeper layers' slices when the no-BN axis ratio is this multiple
LAYER_SHARPNESS_RATIO = 1.5

# Resolutions (multiplicative) of the values the rules compare.
NUMERIC_RESOLUTION = 1.001  # float64 statistics over the whole training split; float64 2x2 eigenvalues
GRADIENT_RESOLUTION = 1.001  # float32 gradient norms over the analysis set
LANCZOS_RESOLUTION = 1.05  # top Gauss-Newton eigenvalue from Lanczos (>= 12 steps, checked against dense)
LR_BRACKET = 1.15  # max_stable_lr_upper / max_stable_lr after the refinement
STEP_RESOLUTION = 1.1  # a step count located to the step: bracket [s - 1, s], within 1.1x beyond 10 steps
LOSS_RESOLUTION = 1.1  # a final or smoothed mini-batch training loss
CENSORED_BOUND = 1.0 / math.sqrt(1e-12)  # the bound a censored axis ratio holds (float64 2x2 GGN, landscape.roundness)

SPREAD_METRIC = "rms_spread_p90_p10"  # the spread the rules use (max/min stays in the table)
LEFT_OUT = {"flat_direction": "containing an exact flat direction (a batch-normalized unit's own weights, a "
                              "layer norm's scale, the softmax's shift)",
            "degenerate": "degenerate (fewer than two distinct live inputs, or a dead unit)"}


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A rule's threshold beside the resolution of the values it compares. ``value`` and ``resolution``
    are multiplicative (a ratio threshold, a bracket ratio); ``largest`` is the largest value the rule
    must resolve to decide (it must lie below ``bound``, beyond which values are censored)."""

    rule: str  # the claim key (without its comparison suffix) this threshold decides
    name: str
    value: float
    resolution: float
    compares: str
    largest: float | None = None
    bound: float = math.inf


THRESHOLDS = (
    Threshold("input_scales", "SPREAD_ROUND", SPREAD_ROUND, NUMERIC_RESOLUTION,
              "p90/p10 ratio of live-feature RMS over the training split (float64)"),
    Threshold("hidden_spread", "SPREAD_RATIO", SPREAD_RATIO, NUMERIC_RESOLUTION,
              "p90/p10 ratio of live-unit RMS of A[l-1] over the training split (float64)"),
    Threshold("input_conditioning", "COND_RATIO", COND_RATIO, NUMERIC_RESOLUTION,
              "lambda_max / mean(lambda) of E[a~ a~^T] (float64 eigenvalues)"),
    Threshold("input_cov_conditioning", "COND_RATIO", COND_RATIO, NUMERIC_RESOLUTION,
              "lambda_max / mean(lambda) of the centred covariance of A[l-1] (float64 eigenvalues)"),
    Threshold("learning_rate", "LR_RATIO", LR_RATIO, LR_BRACKET,
              "max stable LR, refined to a bracket [max_stable_lr, max_stable_lr_upper] of ratio <= 1.15"),
    Threshold("large_lr_outcome", "WORSE_RATIO", WORSE_RATIO, LOSS_RESOLUTION,
              "final training loss at the largest stable LR against the competitor's at its best LR"),
    Threshold("outcome_best_lr", "WORSE_RATIO", WORSE_RATIO, LOSS_RESOLUTION,
              "final training loss of each arm at its own best LR"),
    Threshold("steps_to_case_target", "STEPS_RATIO", STEPS_RATIO, STEP_RESOLUTION,
              "steps to the case target on the smoothed per-step loss, located to the step ([s - 1, s])"),
    Threshold("loss_after_budget", "BUDGET_RATIO", BUDGET_RATIO, LOSS_RESOLUTION,
              "smoothed mini-batch loss after a fixed fraction of the steps"),
    Threshold("gradient_spread", "GRAD_SPREAD_RATIO", GRAD_SPREAD_RATIO, GRADIENT_RESOLUTION,
              "max/min over layers of ||dJ/dW[l]|| / ||W[l]||"),
    Threshold("lecture_slice", "LECTURE_ROUND", LECTURE_ROUND, NUMERIC_RESOLUTION,
              "GGN axis ratio of the layer-1 slice (float64 2x2; censored beyond its bound)",
              largest=LECTURE_ROUND, bound=CENSORED_BOUND),
    Threshold("lecture_slice", "LECTURE_RATIO", LECTURE_RATIO, NUMERIC_RESOLUTION,
              "raw against standardized GGN axis ratio (censored raw ratios count as elongated)",
              largest=LECTURE_RATIO * LECTURE_ROUND, bound=CENSORED_BOUND),
    Threshold("hidden_slice", "SLICE_RATIO", SLICE_RATIO, NUMERIC_RESOLUTION,
              "median over layers >= 2 of the GGN axis ratio of the lecture slice (censored: [bound, inf))",
              largest=SLICE_RATIO, bound=CENSORED_BOUND),
    Threshold("layer_sharpness", "LAYER_SHARPNESS_RATIO", LAYER_SHARPNESS_RATIO, LANCZOS_RESOLUTION,
              "max/min over layers of the per-layer Gauss-Newton lambda_max"),
)

Interval = tuple[float, float]


@dataclasses.dataclass
class Case:
    """One case of a rule (a dataset, or a dataset and depth): the per-seed outcomes that decide it, the
    outcome, and the numbers shown beside it (medians over seeds). ``seeds``: {seed: True | False | None
    (undecided)}; ``effects``: {seed: the ratio the rule compares}; ``note``: why it is undecided."""

    dataset: str
    depth: int | None
    holds: bool | None  # None: undecided (missing data, or an interval straddling the threshold)
    numbers: dict
    seeds: dict = dataclasses.field(default_factory=dict)
    effects: dict = dataclasses.field(default_factory=dict)
    note: str = ""

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def k_seeds(self) -> int:
        return sum(1 for v in self.seeds.values() if v is True)

    @property
    def effect_min(self) -> float:
        v = [e for e in self.effects.values() if not np.isnan(e)]
        return float(min(v)) if v else np.nan

    @property
    def effect_max(self) -> float:
        v = [e for e in self.effects.values() if not np.isnan(e)]
        return float(max(v)) if v else np.nan

    @property
    def label(self) -> str:
        return f"{self.dataset} d{self.depth}" if self.depth is not None else self.dataset

    @property
    def seeds_text(self) -> str:
        """'k of n seeds' ('1 of 1 seed' for a one-seed study)."""
        return f"{self.k_seeds} of {self.n_seeds} seed{'' if self.n_seeds == 1 else 's'}"


def _every_seed(seeds: dict) -> bool | None:
    """A case's outcome from its seeds': holds when every seed holds, fails when one fails, else None."""
    v = list(seeds.values())
    if not v:
        return None
    if any(x is False for x in v):
        return False
    return True if all(x is True for x in v) else None


def _case(key: tuple, per_seed: dict, numbers: dict, note: str = "", holds: object = "every seed") -> Case:
    """Case for ``key`` (dataset,) or (dataset, depth) from {seed: (holds, effect)}; ``holds`` overrides
    the every-seed outcome (rules deciding on medians). ``note`` says why an undecided case is undecided
    (a default is written from the seeds)."""
    seeds = {s: h for s, (h, _) in per_seed.items()}
    effects = {s: float(e) for s, (_, e) in per_seed.items()}
    outcome = _every_seed(seeds) if holds == "every seed" else holds
    if outcome is None and not note:
        undecided = [str(s) for s, h in seeds.items() if h is None]
        note = (f"undecided for seed {', '.join(undecided)}" if undecided and seeds
                else "no seed has both arms measured")
    depth = int(key[1]) if len(key) > 1 else None
    return Case(str(key[0]), depth, outcome, numbers, seeds, effects, note if outcome is None else "")


@dataclasses.dataclass
class Claim:
    """A rule over cases and its sentences: ``sentences`` maps "all" | "none" | "mixed" | "missing" (nothing
    measured) and optionally "undecided" (measured, no case decided) to a text with the fields {k} (cases
    holding), {n} (decided cases), {failing} and {holding} (their labels).
    ``comparison``: the checkpoint (init, early, matched, end) or the training comparison the rule uses;
    ``notes``: what the rule left out or counted specially (censored, flat or degenerate slices...)."""

    key: str
    rule: str
    cases: list[Case]
    sentences: dict
    comparison: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)
    rule_key: str = ""  # the THRESHOLDS entry (key without its comparison)
    seeds_label: str = "Seeds for which it held"  # what a case's k of n seeds counts
    effect: str = "without BN / with BN"  # the ratio a case's effects hold

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
    def comparison_text(self) -> str:
        return COMPARISONS.get(self.comparison, self.comparison)

    @property
    def sentence(self) -> str:
        """The sentence of the outcome, then the seeds (k of n per case), the undecided cases, the notes.
        Measured cases that are all undecided read as such (``sentences["undecided"]``, or a generic one)."""
        undecided = [f"{c.label} ({c.note})" for c in self.cases if c.holds is None]
        if self.outcome == "missing" and any(c.seeds for c in self.cases):
            lead = PHASE.get(self.comparison, "Over the training runs")
            text = self.sentences.get("undecided") or (
                f"{lead}, no case of this rule could be decided: {'; '.join(undecided)}.")
            return " ".join([text, *self.notes])
        text = self.sentences[self.outcome].format(k=self.n_holds, n=self.n_cases,
                                                   failing=", ".join(self.failing_cases()),
                                                   holding=", ".join(self.holding_cases()))
        parts = [text, self.seeds_sentence()]
        if undecided and self.outcome != "missing":
            parts.append("Undecided: " + "; ".join(undecided) + ".")
        parts += self.notes
        return " ".join(p for p in parts if p)

    def seeds_sentence(self) -> str:
        """Seeds for which the rule held, per decided case ('Seeds: 3 of 3 in every case.')."""
        decided = [c for c in self.cases if c.holds is not None]
        if not decided:
            return ""
        groups: dict[tuple[int, int], list[str]] = {}
        for c in decided:
            groups.setdefault((c.k_seeds, c.n_seeds), []).append(c.label)
        if len(groups) == 1:
            (k, n), = groups
            text = f"{self.seeds_label}: {k} of {n} in every case"
        else:
            text = f"{self.seeds_label}: " + "; ".join(f"{k} of {n} in {', '.join(labels)}"
                                                       for (k, n), labels in sorted(groups.items(), reverse=True))
        if all(c.n_seeds == 1 for c in decided):
            text += " (1 of 1 seed: one seed per case, no spread over seeds)"
        return text + "."

    def failing_cases(self) -> list[str]:
        return [c.label for c in self.cases if c.holds is False]

    def holding_cases(self) -> list[str]:
        return [c.label for c in self.cases if c.holds is True]


COMPARISONS = {**{k: f"checkpoint {k} ({v.lower()})" for k, v in PHASE.items()},
               "best_lr": "training runs, each arm at its own best grid learning rate",
               "max_stable_lr": "training runs: the refined largest stable learning rate of each arm",
               "large_lr": "training runs: the arm stable at the larger learning rate, there, against its "
                           "competitor at its own best learning rate"}


# ----------------------------------------------------------------------------------------------- helpers

def _ratio(a: float, b: float) -> float:
    """a / b, with a / 0 = inf for a > 0 and NaN for a = 0 or NaN inputs."""
    if np.isnan(a) or np.isnan(b):
        return np.nan
    if b == 0:
        return np.inf if a > 0 else np.nan
    return float(a / b)


def _at_least(num: Interval, den: Interval, threshold: float) -> bool | None:
    """Whether num >= threshold x den, for values known only to lie in [lo, hi]: True when it holds for
    every value in them (num_lo >= threshold x den_hi, den_hi finite), False when for none
    (num_hi < threshold x den_lo), None when the intervals straddle the threshold or a bound is NaN."""
    (nl, nh), (dl, dh) = num, den
    if any(np.isnan(x) for x in (nl, nh, dl, dh)):
        return None
    if np.isfinite(dh) and nl >= threshold * dh:
        return True
    if nh < threshold * dl:
        return False
    return None


def _point(v: float) -> Interval:
    return (float(v), float(v))


def _by_case_and_seed(d: pd.DataFrame, value_of, keys=("dataset", "depth"), arm_col: str = "norm",
                      arms=ARMS) -> dict[tuple, dict[int, tuple]]:
    """{case key: {seed: (value of arms[0], value of arms[1])}}: value_of(rows of one arm and seed), over
    the seeds both arms have rows for (seed s of one arm paired with seed s of the other). A case whose
    arms share no seed maps to {}."""
    out: dict[tuple, dict[int, tuple]] = {}
    for key, g in d.groupby(list(keys), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        per: dict[int, tuple] = {}
        for seed, gs in g.groupby("seed", sort=True):
            a, b = gs[gs[arm_col] == arms[0]], gs[gs[arm_col] == arms[1]]
            if len(a) and len(b):
                per[int(seed)] = (value_of(a), value_of(b))
        out[key] = per
    return out


def _median(values) -> float:
    v = np.asarray([x for x in values], float)
    return float(np.median(v)) if v.size else np.nan


def _median_value(g: pd.DataFrame) -> float:
    return float(g["value"].median())


def _spread(g: pd.DataFrame) -> float:
    """max / min of the values (NaN when none; inf when the smallest is 0)."""
    v = g["value"].to_numpy(float)
    if not v.size or np.isnan(v).any():
        return np.nan
    return _ratio(v.max(), v.min())


def _standardized(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["input"] == "standardize"]


def _checkpoints(df: pd.DataFrame, wanted=tuple(PHASE)) -> list[str]:
    """The checkpoints of ``df`` among ``wanted``, in training order."""
    order = list(PHASE)
    return sorted(set(df["checkpoint"]) & set(wanted), key=order.index)


def _ratio_claim_cases(pairs: dict, threshold: float, names: tuple[str, str]) -> list[Case]:
    """Cases of a rule 'arm 0's value >= threshold x arm 1's' from point values per seed."""
    cases = []
    for key, per in pairs.items():
        decided = {s: (_at_least(_point(a), _point(b), threshold), _ratio(a, b)) for s, (a, b) in per.items()}
        numbers = {names[0]: _median(a for a, _ in per.values()), names[1]: _median(b for _, b in per.values())}
        cases.append(_case(key, decided, numbers))
    return cases


# --------------------------------------------------------------------------------------------- the rules

def input_scale_claim(layer_inputs: pd.DataFrame) -> Claim:
    """Rule: at layer 1 (the inputs X), at initialization of the best-LR run, standardized inputs have an
    RMS spread (p90/p10 over live features) < SPREAD_ROUND and the raw spread is larger, per dataset and
    seed (median over the variants of each input treatment)."""
    d = layer_inputs[(layer_inputs["metric"] == SPREAD_METRIC) & (layer_inputs["layer"] == 1)
                     & (layer_inputs["checkpoint"] == "init") & (layer_inputs["run"] == "best")]
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


def _hidden_layer_metric(layer_inputs: pd.DataFrame, metric: str, checkpoint: str) -> pd.DataFrame:
    d = layer_inputs[(layer_inputs["metric"] == metric) & (layer_inputs["layer"] >= 2)
                     & (layer_inputs["checkpoint"] == checkpoint) & (layer_inputs["run"] == "best")]
    return _standardized(d)


def hidden_spread_claim(layer_inputs: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule: with standardized inputs, the median over hidden layers l >= 2 of the layer-input RMS spread
    (p90/p10 over live units) without BN is at least SPREAD_RATIO x the same with BN (best-LR run, given
    checkpoint), for every seed pair."""
    phase = PHASE[checkpoint]
    d = _hidden_layer_metric(layer_inputs, SPREAD_METRIC, checkpoint)
    cases = _ratio_claim_cases(_by_case_and_seed(d, _median_value), SPREAD_RATIO, ("spread_no_bn", "spread_bn"))
    return Claim(
        f"hidden_spread_{checkpoint}",
        f"checkpoint {checkpoint}, standardized inputs, layers >= 2: median RMS spread (p90/p10 over live units) "
        f"without BN >= {SPREAD_RATIO} x with BN, every seed",
        cases,
        {"all": phase + ", even with standardized inputs, the inputs of the deeper layers (A[1], A[2], ...) "
                "spread over scales without BN, and BN puts them back on one scale, in all {n} dataset/depth cases.",
         "none": phase + ", with standardized inputs, BN did not make the deeper layers' input scales more "
                 "uniform in any of the {n} dataset/depth cases: input normalization already kept them on one scale.",
         "mixed": phase + ", with standardized inputs, BN made the deeper layers' input scales more uniform in {k} "
                  "of {n} dataset/depth cases; not in: {failing}.",
         "missing": phase + ", the hidden layers' input scales were not measured (depth 1 only?)."},
        comparison=checkpoint, rule_key="hidden_spread", effect="spread without BN / with BN")


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
         "missing": phase + f", the conditioning of {what} the hidden layers' inputs was not measured."},
        comparison=checkpoint, rule_key=rule_key,
        effect="effective condition without BN / with BN")


def _lr_interval(row: pd.Series, lr_min: float | None) -> Interval:
    """Where this seed's max stable LR lies: [max_stable_lr, max_stable_lr_upper]; no unstable LR above it:
    upper inf; no stable LR at all: [0, upper] (upper: the smallest LR tried when the table has none)."""
    lo, hi = float(row["max_stable_lr"]), float(row["max_stable_lr_upper"])
    if np.isnan(lo):
        return 0.0, (hi if not np.isnan(hi) else (lr_min if lr_min is not None else np.inf))
    return lo, (hi if not np.isnan(hi) else np.inf)


def learning_rate_claim(variant_seeds: pd.DataFrame, lr_min: float | None = None) -> Claim:
    """Rule: with standardized inputs, per seed, BN's max stable LR >= LR_RATIO x no-BN's, decided on the
    refinement brackets: holds when bn_lower >= LR_RATIO x none_upper, fails when
    bn_upper < LR_RATIO x none_lower, undecided otherwise (a variant stable at the largest LR tried has an
    open bracket; one with no stable LR lies in [0, smallest LR tried]). ``lr_min``: the smallest LR tried."""
    d = _standardized(variant_seeds)
    pairs = _by_case_and_seed(d, lambda g: _lr_interval(g.iloc[0], lr_min))
    cases = []
    for key, per in pairs.items():
        decided = {s: (_at_least(bn, none, LR_RATIO), _ratio(bn[0], none[0])) for s, (none, bn) in per.items()}
        open_none = any(np.isinf(none[1]) and none[0] > 0 for none, _ in per.values())
        numbers = {"max_stable_lr_no_bn": _median(n[0] for n, _ in per.values()),
                   "max_stable_lr_no_bn_upper": _median(n[1] for n, _ in per.values()),
                   "max_stable_lr_bn": _median(b[0] for _, b in per.values()),
                   "max_stable_lr_bn_upper": _median(b[1] for _, b in per.values()),
                   "no_bn_stable_at_largest_lr_tried": open_none}
        note = "without BN stable at the largest learning rate tried" if open_none else ""
        if not note and any(h is None for h, _ in decided.values()):
            note = f"a bracket straddles {LR_RATIO:g}x"
        cases.append(_case(key, decided, numbers, note=note))
    return Claim(
        "learning_rate", f"training runs, standardized inputs: refined max stable LR with BN >= {LR_RATIO} x "
        "without BN, decided on the brackets [max_stable_lr, max_stable_lr_upper] (bn lower >= "
        f"{LR_RATIO} x no-BN upper: holds; bn upper < {LR_RATIO} x no-BN lower: fails), every seed", cases,
        {"all": "With inputs already standardized, BN still raised the largest stable learning rate at least "
                f"{LR_RATIO:g}-fold in all {{n}} dataset/depth cases.",
         "none": "With inputs already standardized, BN did not raise the largest stable learning rate "
                 f"{LR_RATIO:g}-fold in any of the {{n}} dataset/depth cases.",
         "mixed": f"With inputs already standardized, BN raised the largest stable learning rate at least "
                  f"{LR_RATIO:g}-fold in {{k}} of {{n}} dataset/depth cases; not in: {{failing}}.",
         "missing": _lr_missing_sentence(cases), "undecided": _lr_missing_sentence(cases)},
        comparison="max_stable_lr", rule_key="learning_rate",
        effect="max stable LR with BN / without BN (lower ends)")


def _lr_missing_sentence(cases: list[Case]) -> str:
    """Why no dataset/depth case of the learning-rate claim could be decided."""
    if not cases:
        return "Max stable learning rates could not be compared: the study has no pair of standardized variants " \
               "with and without BN."
    if any(c.numbers.get("no_bn_stable_at_largest_lr_tried") for c in cases):
        return "Max stable learning rates could not be compared: without BN every run was already stable at the " \
               "largest learning rate tried (extend sweep.lr_max)."
    if any(c.seeds for c in cases):
        return f"Max stable learning rates could not be compared: every refined bracket straddles {LR_RATIO:g}x."
    return "Max stable learning rates could not be compared: a variant is missing from the study."


def _clearly_worse(worse: list[float], better: list[float]) -> bool | None:
    """Whether the first arm is clearly worse: median final loss >= WORSE_RATIO x the other's and higher
    for every seed (paired lists); None when a loss is NaN or there are no seeds."""
    if not worse or any(np.isnan(x) for x in worse + better):
        return None
    every_seed = all(w > b for w, b in zip(worse, better, strict=True))
    return bool(np.median(worse) >= WORSE_RATIO * np.median(better) and every_seed)


def _seed_row_value(column: str):
    return lambda g: float(g[column].iloc[0])


def outcome_claim(variant_seeds: pd.DataFrame) -> Claim:
    """Rule: with standardized inputs, each arm at its own best LR, no BN is clearly worse than BN: its
    median final training loss is >= WORSE_RATIO x BN's and higher for every seed. The converse (BN
    clearly worse) is named in the claim's notes."""
    d = _standardized(variant_seeds)
    pairs = _by_case_and_seed(d, lambda g: (float(g["final_train_loss"].iloc[0]), float(g["test_accuracy"].iloc[0])))
    cases, bn_worse = [], []
    for key, per in pairs.items():
        none = [n[0] for n, _ in per.values()]
        bn = [b[0] for _, b in per.values()]
        decided = {s: (None if np.isnan(n[0]) or np.isnan(b[0]) else bool(n[0] > b[0]), _ratio(n[0], b[0]))
                   for s, (n, b) in per.items()}
        numbers = {"final_loss_no_bn": _median(none), "final_loss_bn": _median(bn),
                   "test_accuracy_no_bn": _median(n[1] for n, _ in per.values()),
                   "test_accuracy_bn": _median(b[1] for _, b in per.values())}
        note = "a final loss is missing" if per else "no seed has both arms measured"
        case = _case(key, decided, numbers, note=note, holds=_clearly_worse(none, bn))
        if _clearly_worse(bn, none):
            bn_worse.append(f"{case.label} (median final loss {numbers['final_loss_bn']:.3g} with BN against "
                            f"{numbers['final_loss_no_bn']:.3g} without)")
        cases.append(case)
    notes = ["BN was clearly worse at its best learning rate in: " + "; ".join(bn_worse) + "."] if bn_worse else []
    return Claim(
        "outcome_best_lr", "training runs, standardized inputs, each arm at its own best grid LR: without BN "
        f"clearly worse than with BN (median final training loss >= {WORSE_RATIO:g} x BN's, and higher for every "
        "seed)", cases,
        {"all": "With standardized inputs and each arm at its own best learning rate, training without BN ended "
                f"clearly worse (final loss >= {WORSE_RATIO:g}x BN's) in all {{n}} dataset/depth cases.",
         "none": "With standardized inputs and each arm at its own best learning rate, training without BN did "
                 f"not end clearly worse than with BN (final loss >= {WORSE_RATIO:g}x) in any of the {{n}} "
                 "dataset/depth cases.",
         "mixed": "With standardized inputs and each arm at its own best learning rate, training without BN ended "
                  f"clearly worse (final loss >= {WORSE_RATIO:g}x BN's) in {{k}} of {{n}} dataset/depth cases: "
                  "{holding}.",
         "missing": "Final training losses at the best learning rates were not measured."},
        comparison="best_lr", notes=notes, rule_key="outcome_best_lr",
        seeds_label="Seeds with a higher final loss without BN", effect="final loss without BN / with BN")


def _final_loss_at(runs: pd.DataFrame, dataset: str, variant: str, seed: int, lr: float) -> float:
    """The final training loss of the run (dataset, variant, seed) at learning rate ``lr`` (matched to
    1e-3 relative: tables round LRs), NaN when there is none (lr NaN: no stable LR) or it diverged."""
    r = runs[(runs["dataset"] == dataset) & (runs["variant"] == variant) & (runs["seed"] == seed)]
    r = r[np.isclose(r["lr"].to_numpy(float), lr, rtol=1e-3, atol=0)]
    if not len(r) or bool(r["diverged"].iloc[0]):
        return np.nan
    return float(r["final_train_loss"].iloc[0])


def large_lr_outcome_claim(variant_seeds: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """Rule: with standardized inputs, the arm with the larger median max stable LR (BN on a tie), run at
    that LR (each seed its own refined max stable LR, final loss from ``runs``), is clearly worse than its
    competitor at the competitor's own best LR: median final training loss >= WORSE_RATIO x, and higher
    for every seed. Holds: stable there, but clearly worse there."""
    d = _standardized(variant_seeds)
    pairs = _by_case_and_seed(d, lambda g: g.iloc[0])
    cases = []
    for key, per in pairs.items():
        lr_none = _median(float(n["max_stable_lr"]) for n, _ in per.values())
        lr_bn = _median(float(b["max_stable_lr"]) for _, b in per.values())
        high = 1 if not lr_none > lr_bn else 0  # index of the arm stable at the larger LR
        there, other = [], []
        for rows in per.values():
            h, o = rows[high], rows[1 - high]
            there.append(_final_loss_at(runs, h["dataset"], h["variant"], int(h["seed"]), float(h["max_stable_lr"])))
            other.append(float(o["final_train_loss"]))
        decided = {s: (None if np.isnan(t) or np.isnan(o) else bool(t > o), _ratio(t, o))
                   for s, t, o in zip(per, there, other, strict=True)}
        numbers = {"arm": ARMS[high], "its_max_stable_lr": lr_bn if high else lr_none,
                   "its_final_loss_there": _median(there), "competitor_final_loss_at_best_lr": _median(other)}
        note = ("a final loss is missing (no run at the max stable learning rate, or no stable one)" if per
                else "no seed has both arms measured")
        cases.append(_case(key, decided, numbers, note=note, holds=_clearly_worse(there, other)))
    return Claim(
        "large_lr_outcome", "training runs, standardized inputs: the arm with the larger max stable LR, at that LR, "
        f"against its competitor at the competitor's own best LR: median final training loss >= {WORSE_RATIO:g} x "
        "and higher for every seed (clearly worse there)", cases,
        {"all": "The arm stable at the larger learning rate was clearly worse there (final loss >= "
                f"{WORSE_RATIO:g}x) than its competitor at its own best learning rate in all {{n}} dataset/depth "
                "cases: a larger stable learning rate is not a better one.",
         "none": "The arm stable at the larger learning rate was not clearly worse there than its competitor at "
                 "its own best learning rate in any of the {n} dataset/depth cases.",
         "mixed": "The arm stable at the larger learning rate was clearly worse there (final loss >= "
                  f"{WORSE_RATIO:g}x) than its competitor at its own best learning rate in {{k}} of {{n}} "
                  "dataset/depth cases: {holding}.",
         "missing": "Final losses at the max stable learning rates were not measured."},
        comparison="large_lr", rule_key="large_lr_outcome",
        seeds_label="Seeds with a higher final loss at the larger learning rate",
        effect="final loss there / competitor's at its best LR")


def _steps_interval(steps: float, total: float) -> Interval:
    """Where the crossing of the case target lies: reached at step s: [s - 1, s]; never: [total, inf)."""
    if np.isnan(steps):
        return float(total), np.inf
    return max(float(steps) - 1.0, 0.0), float(steps)


def steps_claim(variant_seeds: pd.DataFrame, total_steps: dict | None = None) -> Claim:
    """Rule (Q5): with standardized inputs, at each arm's best LR, per seed, the steps to the case target
    (``steps_to_case_target``, located to the step: the crossing lies in [s - 1, s]) without BN >=
    STEPS_RATIO x with BN, decided on those brackets. A seed that never reaches it lies in
    [total steps, inf) (``total_steps``: {dataset: steps of its runs}; without it, the dataset's largest
    step count in the table, any input); both never: undecided."""
    d = _standardized(variant_seeds)
    largest = variant_seeds.groupby("dataset")["steps_to_case_target"].max().fillna(0.0).to_dict()

    def interval(g):
        ds = g["dataset"].iloc[0]
        total = (total_steps or {}).get(ds, largest[ds])
        return _steps_interval(float(g["steps_to_case_target"].iloc[0]), total)

    cases = []
    for key, per in _by_case_and_seed(d, interval).items():
        decided = {s: (_at_least(none, bn, STEPS_RATIO), _ratio(none[1], bn[1])) for s, (none, bn) in per.items()}
        rows = d[(d["dataset"] == key[0]) & (d["depth"] == key[1])]
        numbers = {"case_target": _median(rows["case_target"]),
                   "steps_no_bn": _median(n[1] for n, _ in per.values()),
                   "steps_bn": _median(b[1] for _, b in per.values())}
        cases.append(_case(key, decided, numbers))
    return Claim(
        "steps_to_case_target", "training runs, standardized inputs, each arm at its best LR: steps to the case "
        "target (2 x the largest median final loss of the arms; smoothed per-step loss, located to the step) "
        f"without BN >= {STEPS_RATIO} x with BN, decided on the brackets [s - 1, s], every seed", cases,
        {"all": "With standardized inputs, BN reached the case's target loss at least " f"{STEPS_RATIO:g}" "x "
                "faster in all {n} dataset/depth cases.",
         "none": "With standardized inputs, BN did not reach the case's target loss " f"{STEPS_RATIO:g}" "x "
                 "faster in any of the {n} dataset/depth cases: here its gains in speed were marginal.",
         "mixed": "With standardized inputs, BN reached the case's target loss at least " f"{STEPS_RATIO:g}" "x "
                  "faster in {k} of {n} dataset/depth cases; not in: {failing}.",
         "missing": "No pair of arms reached the case's target loss, so speed could not be compared."},
        comparison="best_lr", rule_key="steps_to_case_target",
        effect="steps without BN / with BN")


def budget_loss_claim(variant_seeds: pd.DataFrame, pct: int = 10) -> Claim:
    """Rule (Q5): with standardized inputs, at each arm's best LR, the smoothed training loss after
    ``pct`` % of the steps (``loss_at_<pct>pct``) without BN >= BUDGET_RATIO x with BN, every seed."""
    column = f"loss_at_{pct}pct"
    d = _standardized(variant_seeds)
    cases = _ratio_claim_cases(_by_case_and_seed(d, _seed_row_value(column)), BUDGET_RATIO,
                               (f"{column}_no_bn", f"{column}_bn"))
    return Claim(
        f"loss_after_budget_{pct}pct", f"training runs, standardized inputs, each arm at its best LR: smoothed "
        f"training loss after {pct}% of the steps without BN >= {BUDGET_RATIO:g} x with BN, every seed", cases,
        {"all": f"After {pct}% of the steps, at each arm's best learning rate, BN's training loss was at most "
                f"1/{BUDGET_RATIO:g} of the loss without BN in all {{n}} dataset/depth cases.",
         "none": f"After {pct}% of the steps, at each arm's best learning rate, BN was not {BUDGET_RATIO:g}x ahead "
                 "in training loss in any of the {n} dataset/depth cases.",
         "mixed": f"After {pct}% of the steps, at each arm's best learning rate, BN was {BUDGET_RATIO:g}x ahead in "
                  "training loss in {k} of {n} dataset/depth cases; not in: {failing}.",
         "missing": f"The training loss after {pct}% of the steps was not measured."},
        comparison="best_lr", rule_key="loss_after_budget", effect="loss without BN / with BN")


def gradient_spread_claim(gradients: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule: with standardized inputs, at the last evaluation step (``end``) or step 0 (``init``) of each
    seed's best-LR run, the spread (max/min over layers) of ||dJ/dW[l]|| / ||W[l]|| without BN is
    >= GRAD_SPREAD_RATIO x the spread with BN, every seed."""
    d = gradients[(gradients["metric"] == "relative_grad_norm") & (gradients["run"] == "best")]
    step = d.groupby(["dataset", "variant", "seed"])["step"].transform("max" if checkpoint == "end" else "min")
    d = _standardized(d[d["step"] == step])
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
         "missing": "Gradient magnitudes were not measured."},
        comparison=checkpoint, rule_key="gradient_spread",
        effect="gradient spread without BN / with BN")


def _flag(d: pd.DataFrame, name: str) -> pd.Series:
    return d[name].fillna(False).astype(bool) if name in d else pd.Series(False, index=d.index)


def _slice_rows(d: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The slices a roundness rule compares (flat_direction and degenerate ones left out) and the notes
    saying how many were left out, and why, and how many censored ones counted as elongated."""
    out = {k: _flag(d, k) for k in LEFT_OUT}
    left = out["flat_direction"] | out["degenerate"]
    kept = d[~left]
    notes = []
    counts = [f"{int(out[k].sum())} {why}" for k, why in LEFT_OUT.items() if out[k].any()]
    if counts:
        notes.append(f"Left out {int(left.sum())} of {len(d)} slices: " + "; ".join(counts) + ".")
    censored = int(_flag(kept, "censored").sum())
    if censored:
        bound = float(kept.loc[_flag(kept, "censored"), "axis_ratio_ggn"].min())
        notes.append(f"{censored} censored slice{'s' if censored > 1 else ''} (axis ratio beyond numerical "
                     f"resolution, >= {bound:.3g}) counted as elongated.")
    return kept, notes


def _slice_interval(g: pd.DataFrame) -> Interval:
    """Where the (median) axis ratio of these slices lies: a censored ratio in [bound, inf); the median of
    intervals lies between the medians of their ends."""
    lo = g["axis_ratio_ggn"].to_numpy(float)
    hi = np.where(_flag(g, "censored").to_numpy(), np.inf, lo)
    if not lo.size:
        return np.nan, np.nan
    return float(np.median(lo)), float(np.median(hi))


def lecture_slice_claim(contours: pd.DataFrame, checkpoint: str = "init") -> Claim:
    """Rule (Q2): without normalization layers, the layer-1 lecture slice (the slide's two weights) has
    GGN axis ratio < LECTURE_ROUND on standardized inputs and >= LECTURE_RATIO x that on raw inputs
    (best-LR run, given checkpoint), per dataset, depth and seed. Censored ratios lie in [bound, inf):
    a censored raw ratio against a finite round standardized one holds; a censored standardized one is
    not near round. Flat and degenerate slices are left out (the claim's notes count them)."""
    d = contours[(contours["slice"] == "lecture") & (contours["scope"] == "layer1") & (contours["norm"] == "none")
                 & (contours["run"] == "best") & (contours["checkpoint"] == checkpoint)]
    d, notes = _slice_rows(d)
    pairs = _by_case_and_seed(d, _slice_interval, arm_col="input", arms=("raw", "standardize"))
    cases = []
    for key, per in pairs.items():
        decided = {}
        for s, (raw, std) in per.items():
            if np.isnan(std[0]) or np.isnan(raw[0]):
                ok = None
            elif std[0] >= LECTURE_ROUND:
                ok = False
            elif std[1] < LECTURE_ROUND:
                ok = _at_least(raw, std, LECTURE_RATIO)
            else:
                ok = None
            decided[s] = (ok, _ratio(raw[0], std[0]))
        numbers = {"ratio_raw": _median(r[0] for r, _ in per.values()),
                   "ratio_standardized": _median(s[0] for _, s in per.values()),
                   "censored_raw": sum(bool(np.isinf(r[1])) for r, _ in per.values()),
                   "censored_standardized": sum(bool(np.isinf(s[1])) for _, s in per.values())}
        cases.append(_case(key, decided, numbers))
    phase = PHASE[checkpoint]
    return Claim(
        f"lecture_slice_{checkpoint}", f"checkpoint {checkpoint}, layer-1 lecture slice, no normalization layers: "
        f"GGN axis ratio standardized < {LECTURE_ROUND} and raw >= {LECTURE_RATIO} x standardized, every seed "
        "(censored ratios count as elongated; flat and degenerate slices left out)", cases,
        {"all": phase + ", the lecture's picture (the slice of J through two weights of layer 1) is "
                "elongated on raw inputs and near round on standardized inputs, in all {n} dataset/depth cases.",
         "none": phase + ", the layer-1 slice was not near round on standardized inputs (or not "
                 "clearly rounder than on raw inputs) in any of the {n} dataset/depth cases.",
         "mixed": phase + ", standardizing the inputs made the layer-1 slice near round in {k} of {n} "
                  "dataset/depth cases; not in: {failing}.",
         "missing": phase + ", the layer-1 lecture slices were not measured."},
        comparison=checkpoint, notes=notes, rule_key="lecture_slice",
        effect="axis ratio raw / standardized")


def hidden_slice_claim(contours: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule (Q3): with standardized inputs, the median over layers l >= 2 of the GGN axis ratio of the
    lecture slice (two incoming weights of one unit of layer l) without BN is >= SLICE_RATIO x the same
    with BN (best-LR run, given checkpoint), every seed. Censored ratios lie in [bound, inf) (two censored
    medians are undecided); flat and degenerate slices are left out (the claim's notes count them)."""
    scope_layer = contours["scope"].str.extract(r"^layer(\d+)$", expand=False).astype(float)
    d = contours[(contours["slice"] == "lecture") & (scope_layer >= 2) & (contours["run"] == "best")
                 & (contours["checkpoint"] == checkpoint)]
    d, notes = _slice_rows(_standardized(d))
    cases = []
    for key, per in _by_case_and_seed(d, _slice_interval).items():
        decided = {s: (_at_least(none, bn, SLICE_RATIO), _ratio(none[0], bn[0])) for s, (none, bn) in per.items()}
        numbers = {"ratio_no_bn": _median(n[0] for n, _ in per.values()),
                   "ratio_bn": _median(b[0] for _, b in per.values())}
        cases.append(_case(key, decided, numbers))
    phase = PHASE[checkpoint]
    return Claim(
        f"hidden_slice_{checkpoint}", f"checkpoint {checkpoint}, standardized inputs, lecture slices of layers >= 2: "
        f"median GGN axis ratio without BN >= {SLICE_RATIO} x with BN, every seed (censored ratios count as "
        "elongated; flat and degenerate slices left out)", cases,
        {"all": phase + ", with standardized inputs, the slices of J through two weights of a deeper layer are "
                "more elongated without BN than with it in all {n} dataset/depth cases.",
         "none": phase + ", with standardized inputs, BN did not make the deeper layers' slices of J rounder in "
                 "any of the {n} dataset/depth cases.",
         "mixed": phase + ", with standardized inputs, BN made the deeper layers' slices of J rounder in {k} of "
                  "{n} dataset/depth cases; not in: {failing}.",
         "missing": phase + ", the deeper layers' slices were not measured."},
        comparison=checkpoint, notes=notes, rule_key="hidden_slice",
        effect="axis ratio without BN / with BN")


def layer_sharpness_claim(curvature: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule (Q1): with standardized inputs, the spread over layers (max / min over l) of the top
    Gauss-Newton eigenvalue of layer l's own (W[l], b[l]) block is >= LAYER_SHARPNESS_RATIO x larger
    without BN than with BN (best-LR run, given checkpoint), every seed."""
    d = curvature[(curvature["matrix"] == "ggn") & (curvature["metric"] == "lambda_max")
                  & curvature["scope"].str.startswith("layer") & (curvature["run"] == "best")
                  & (curvature["checkpoint"] == checkpoint)]
    cases = _ratio_claim_cases(_by_case_and_seed(_standardized(d), _spread), LAYER_SHARPNESS_RATIO,
                               ("layer_sharpness_spread_no_bn", "layer_sharpness_spread_bn"))
    phase = PHASE[checkpoint]
    return Claim(
        f"layer_sharpness_{checkpoint}", f"checkpoint {checkpoint}, standardized inputs: spread over layers of "
        f"the per-layer Gauss-Newton lambda_max without BN >= {LAYER_SHARPNESS_RATIO} x with BN, every seed", cases,
        {"all": phase + ", J is much sharper along some layers' weights than others without BN, and "
                "BN evens out the per-layer sharpness, in all {n} dataset/depth cases.",
         "none": phase + ", BN did not even out the per-layer sharpness of J in any of the {n} "
                 "dataset/depth cases.",
         "mixed": phase + ", BN evened out the per-layer sharpness of J in {k} of {n} dataset/depth "
                  "cases; not in: {failing}.",
         "missing": phase + ", per-layer curvature was not measured."},
        comparison=checkpoint, rule_key="layer_sharpness",
        effect="sharpness spread without BN / with BN")


# The sub-questions of the thread (docs/question.md) and the claims that answer each.
QUESTIONS = {
    "q1": "Are all W[l], b[l] independent variables of the optimization, and is J equally curved along all of them?",
    "q2": "Which variables are in the input-normalization contour plots: W[1], b[1], or A[1]?",
    "q3": "Once the inputs are normalized, what is left for batch norm to make rounder?",
    "q4": "Does 'rounder' mean the gradient magnitudes are similar across all parameters?",
    "q5": "If the inputs are normalized, does batch norm bring only marginal gains?",
}
COMPARED = ("init", "matched", "end")  # the checkpoints of the layer-input claims


def claims_by_question(tables: dict[str, pd.DataFrame]) -> dict[str, list[Claim]]:
    """The claims, grouped by the sub-question (QUESTIONS) they answer; a claim whose table is absent is
    left out. Tables by kind: layer_inputs, variant_seeds, runs, gradients, and optionally curvature,
    contours, training."""
    t = tables
    out: dict[str, list[Claim]] = {q: [] for q in QUESTIONS}
    if "curvature" in t:
        out["q1"] += [layer_sharpness_claim(t["curvature"], c) for c in _checkpoints(t["curvature"])]
    li = t["layer_inputs"]
    out["q2"].append(input_scale_claim(li))
    if "contours" in t:
        out["q2"] += [lecture_slice_claim(t["contours"], c) for c in _checkpoints(t["contours"])]
    for c in _checkpoints(li, COMPARED):
        out["q3"] += [hidden_spread_claim(li, c), input_conditioning_claim(li, c),
                      input_conditioning_claim(li, c, centred=True)]
    if "contours" in t:
        out["q3"] += [hidden_slice_claim(t["contours"], c) for c in _checkpoints(t["contours"], COMPARED)]
    out["q4"].append(gradient_spread_claim(t["gradients"]))
    if "variant_seeds" in t:
        vs, runs = t["variant_seeds"], t["runs"]
        grid = runs[runs["grid"].astype(bool)] if "grid" in runs else runs
        lr_min = float(grid["lr"].min()) if len(grid) else None
        total = ({ds: float(g["step"].max()) for ds, g in t["training"].groupby("dataset")}
                 if "training" in t else None)
        out["q5"] += [learning_rate_claim(vs, lr_min), large_lr_outcome_claim(vs, runs), outcome_claim(vs),
                      steps_claim(vs, total), budget_loss_claim(vs, 10), budget_loss_claim(vs, 30)]
    return out


def all_claims(tables: dict[str, pd.DataFrame]) -> list[Claim]:
    return [c for claims in claims_by_question(tables).values() for c in claims]


def edge_of_stability(curvature: pd.DataFrame) -> pd.DataFrame:
    """Sharpness at the end of training against the stability limit of gradient descent: per dataset and
    variant, the best-LR run's whole-model Hessian lambda_max at checkpoint ``end`` (median over seeds),
    2 / lr, and the ratio lambda_max * lr / 2 (about 1: training sits at the edge of stability; well
    below 1: it does not), its median, min and max over seeds. Columns dataset, variant, lr, lambda_max,
    two_over_lr, ratio, ratio_min, ratio_max, n_seeds; empty if not measured."""
    d = curvature[(curvature["run"] == "best") & (curvature["checkpoint"] == "end") & (curvature["scope"] == "model")
                  & (curvature["matrix"] == "hessian") & (curvature["metric"] == "lambda_max")]
    d = d.assign(ratio=d["value"] * d["lr"] / 2.0)
    out = d.groupby(["dataset", "variant"], sort=True).agg(
        lr=("lr", "median"), lambda_max=("value", "median"), ratio=("ratio", "median"), ratio_min=("ratio", "min"),
        ratio_max=("ratio", "max"), n_seeds=("seed", "nunique")).reset_index()
    out.insert(4, "two_over_lr", 2.0 / out["lr"])
    return out

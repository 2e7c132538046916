"""The machinery every claim shares: thresholds with their resolutions, cases decided per seed pair,
claims and their sentences, and the helpers that select, pair and compare rows (see the package's
docstring for the rules)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

PHASE = {"init": "At initialization", "early": "Early in training", "matched": "At matched training loss",
         "end": "At the end of training"}
ARMS = ("none", "batchnorm")  # the arms each BN claim compares: without and with batch norm
NORMALIZED = ("batchnorm", "layernorm")  # the normalization layers an arm may have after each hidden layer
# name of each normalized arm in sentences, in number names, in words
ARM_NAMES = {"batchnorm": ("BN", "bn", "batch norm"), "layernorm": ("LN", "ln", "layer norm")}

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
SMOOTH_RATIO = 1.5  # a normalized arm is "smoother" when the no-norm beta (or loss range) is this multiple of its own
MATCH_RATIO = 2.0  # BN on the inputs "matches" standardization when its final loss is below this multiple
MODE_GAP_RATIO = 1.5  # train- and test-mode losses are "apart" when one is at least this multiple of the other

# Resolutions (multiplicative) of the values the rules compare.
NUMERIC_RESOLUTION = 1.001  # float64 statistics over the whole training split; float64 2x2 eigenvalues
GRADIENT_RESOLUTION = 1.001  # float32 gradient norms over the analysis set
LANCZOS_RESOLUTION = 1.05  # top Gauss-Newton eigenvalue from Lanczos (>= 12 steps, checked against dense)
LR_BRACKET = 1.15  # max_stable_lr_upper / max_stable_lr after the refinement
STEP_RESOLUTION = 1.1  # a step count located to the step: bracket [s - 1, s], within 1.1x beyond 10 steps
LOSS_RESOLUTION = 1.1  # a final or smoothed mini-batch training loss
SMOOTHNESS_RESOLUTION = 1.01  # float32 loss and gradient differences along steps of at least 0.5 lr g
CENSORED_BOUND = 1.0 / math.sqrt(1e-12)  # the bound a censored axis ratio holds (float64 2x2 GGN, landscape.roundness)

SPREAD_METRIC = "rms_spread_p90_p10"  # the spread the rules use (max/min stays in the table)
LEFT_OUT = {"flat_direction": "containing an exact flat direction (a batch-normalized unit's own weights, a "
                              "layer norm's scale, the softmax's shift)",
            "degenerate": "degenerate (fewer than two distinct live inputs, or a dead unit)"}

# The headings under which a question section groups its claims (Claim.group); "" = no heading.
GROUPS = {"": "",
          "slide": "The slide itself: the model with no hidden layer",
          "layernorm": "Layer norm: does per-example normalization do the same?",
          "smoothness": "Smoothness along the gradient (Santurkar et al. 2018)",
          "converse": "The converse: does batch norm replace input normalization?",
          "input_bn": "Batch norm on the raw inputs instead of standardizing them"}


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
              "p90/p10 ratio of live-unit RMS of A[l-1] over the training split (float64); with BN or with LN"),
    Threshold("input_conditioning", "COND_RATIO", COND_RATIO, NUMERIC_RESOLUTION,
              "lambda_max / mean(lambda) of E[a~ a~^T] (float64 eigenvalues)"),
    Threshold("input_cov_conditioning", "COND_RATIO", COND_RATIO, NUMERIC_RESOLUTION,
              "lambda_max / mean(lambda) of the centred covariance of A[l-1] (float64 eigenvalues)"),
    Threshold("learning_rate", "LR_RATIO", LR_RATIO, LR_BRACKET,
              "max stable LR, refined to a bracket [max_stable_lr, max_stable_lr_upper] of ratio <= 1.15; with BN "
              "or with LN"),
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
    Threshold("slide", "LECTURE_ROUND", LECTURE_ROUND, NUMERIC_RESOLUTION,
              "GGN axis ratio of the depth-0 model's layer-1 slice at W = 0 (float64 2x2; censored beyond its bound)",
              largest=LECTURE_ROUND, bound=CENSORED_BOUND),
    Threshold("slide", "LECTURE_RATIO", LECTURE_RATIO, NUMERIC_RESOLUTION,
              "raw against standardized GGN axis ratio of the depth-0 slice (censored raw ratios count as elongated)",
              largest=LECTURE_RATIO * LECTURE_ROUND, bound=CENSORED_BOUND),
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
              "max/min over layers of the per-layer Gauss-Newton lambda_max (scale-invariant lambda_max(S G S) "
              "for BN's hidden layers)"),
    Threshold("smoothness_beta", "SMOOTH_RATIO", SMOOTH_RATIO, SMOOTHNESS_RESOLUTION,
              "largest gradient change per unit step along the gradient: beta_max without a normalization layer, "
              "beta_invariant_max with one (float32)"),
    Threshold("smoothness_loss", "SMOOTH_RATIO", SMOOTH_RATIO, SMOOTHNESS_RESOLUTION,
              "range of the loss over steps of 0 to 4 lr g along the gradient (float32)"),
    Threshold("converse_outcome", "WORSE_RATIO", WORSE_RATIO, LOSS_RESOLUTION,
              "final training loss at each arm's best LR: raw inputs with BN against standardized inputs"),
    Threshold("converse_slice", "LECTURE_RATIO", LECTURE_RATIO, NUMERIC_RESOLUTION,
              "GGN axis ratio of the layer-1 slice, raw inputs with BN against standardized inputs with BN",
              largest=LECTURE_RATIO * LECTURE_ROUND, bound=CENSORED_BOUND),
    Threshold("input_bn_outcome", "MATCH_RATIO", MATCH_RATIO, LOSS_RESOLUTION,
              "final training loss at each arm's best LR: BN on the raw inputs against standardized inputs"),
    Threshold("input_bn_slice", "LECTURE_RATIO", LECTURE_RATIO, NUMERIC_RESOLUTION,
              "GGN axis ratio of the layer-1 slice: BN on the raw inputs against standardized inputs",
              largest=LECTURE_RATIO * LECTURE_ROUND, bound=CENSORED_BOUND),
    Threshold("input_bn_mode_gap", "MODE_GAP_RATIO", MODE_GAP_RATIO, LOSS_RESOLUTION,
              "evaluation-set loss in training mode (batch statistics of each batch-size chunk) against test mode "
              "(running statistics)"),
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
    ``notes``: what the rule left out or counted specially (censored, flat or degenerate slices...);
    ``group``: the heading (``GROUPS``) under which its question section shows it; ``reasons``: {failing
    case label: why it failed, a phrase measured from the tables}, which the bottom line adds where it
    names that case."""

    key: str
    rule: str
    cases: list[Case]
    sentences: dict
    comparison: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)
    rule_key: str = ""  # the THRESHOLDS entry (key without its comparison)
    seeds_label: str = "Seeds for which it held"  # what a case's k of n seeds counts
    effect: str = "without BN / with BN"  # the ratio a case's effects hold
    group: str = ""
    reasons: dict = dataclasses.field(default_factory=dict)

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
    def group_title(self) -> str:
        return GROUPS.get(self.group, self.group)

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

def _arm_names(arm: str) -> tuple[str, str, str]:
    """(short, number suffix, words) of a normalized arm: ('BN', 'bn', 'batch norm')."""
    return ARM_NAMES[arm]


def _arm_key(arm: str) -> str:
    """The infix of a claim key for the arm: '' for batch norm (the study's original claims keep their
    keys), '_layernorm' for layer norm."""
    return "" if arm == "batchnorm" else f"_{arm}"


def _num(x: float) -> str:
    """A number inside a sentence: 3 significant digits; inf as 'inf'; NaN as 'n/a'."""
    if x is None or np.isnan(x):
        return "n/a"
    if np.isinf(x):
        return "inf"
    return f"{x:.3g}"


def rescaled_axis_ratio(coupling: float) -> float:
    """The smallest axis ratio sqrt(lambda_max / lambda_min) that rescaling its two directions can give a
    PSD 2x2 matrix of coupling c (``landscape.ggn_coupling``; contours.csv's ``ggn_coupling``):
    sqrt((1 + c) / (1 - c)), reached when the two diagonal entries are equal; inf at c = 1, NaN for NaN.
    Why: S M S with S = diag(s1, s2) > 0 has diagonal entries p, r and off-diagonal c sqrt(p r), so its
    kappa = lambda_max / lambda_min satisfies kappa + 1/kappa + 2 = (p + r)^2 / (p r (1 - c^2)) >=
    4 / (1 - c^2), with equality iff p = r: kappa >= (1 + c) / (1 - c). On the depth-0 model's slice of
    two input weights, rescaling the directions is rescaling the two inputs: no per-feature scaling
    (standardizing included) makes that slice rounder than this; decorrelating the inputs can."""
    c = float(coupling)
    if math.isnan(c):
        return float("nan")
    if c >= 1.0:
        return float("inf")
    return math.sqrt((1.0 + c) / (1.0 - c))


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


def _negate(x: bool | None) -> bool | None:
    return None if x is None else not x


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


def _networks(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of models with at least one hidden layer (depth >= 1): depth 0, the slide's model, has no
    layer to normalize and takes no part in a comparison of normalization arms."""
    return df[df["depth"] >= 1]


def _compared(df: pd.DataFrame, arm: str = "batchnorm") -> pd.DataFrame:
    """The rows a 'no normalization layer against ``arm``' rule compares: standardized inputs (not raw, not
    batch norm on the inputs), networks with a hidden layer (not depth 0), norm ``none`` or ``arm`` (not
    the other normalization layer)."""
    return _networks(_standardized(df))[lambda d: d["norm"].isin(("none", arm))]


def _no_hidden_layer(df: pd.DataFrame) -> bool:
    """True when the table has rows but none of a model with a hidden layer (a study of depth 0 only)."""
    return bool(len(df)) and "depth" in df and not bool((df["depth"] >= 1).any())


def no_deeper_layer_sentence(phase: str) -> str:
    return (phase + ", there is no deeper layer: every model of this study has depth 0 (no hidden layer), so "
            "no weights other than W[1] and b[1] exist for a normalization to act on.")


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


def _flag(d: pd.DataFrame, name: str) -> pd.Series:
    return d[name].fillna(False).astype(bool) if name in d else pd.Series(False, index=d.index)


def _slice_rows(d: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The slices a roundness rule compares (flat_direction and degenerate ones left out) and the notes
    saying how many were left out, and why, how many censored ones counted as elongated, and how many were
    taken in the plane orthogonal to a scale-invariant unit's weights (``projected``)."""
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
    projected = int(_flag(kept, "projected").sum())
    if projected:
        notes.append(f"{projected} of the {len(kept)} slices compared belong to scale-invariant units and were taken "
                     "in the plane orthogonal to the unit's weight vector (its exactly flat radial direction "
                     "left out).")
    return kept, notes


def _slice_interval(g: pd.DataFrame) -> Interval:
    """Where the (median) axis ratio of these slices lies: a censored ratio in [bound, inf); the median of
    intervals lies between the medians of their ends."""
    lo = g["axis_ratio_ggn"].to_numpy(float)
    hi = np.where(_flag(g, "censored").to_numpy(), np.inf, lo)
    if not lo.size:
        return np.nan, np.nan
    return float(np.median(lo)), float(np.median(hi))


def _clearly_worse(worse: list[float], better: list[float]) -> bool | None:
    """Whether the first arm is clearly worse: median final loss >= WORSE_RATIO x the other's and higher
    for every seed (paired lists); None when a loss is NaN or there are no seeds."""
    if not worse or any(np.isnan(x) for x in worse + better):
        return None
    every_seed = all(w > b for w, b in zip(worse, better, strict=True))
    return bool(np.median(worse) >= WORSE_RATIO * np.median(better) and every_seed)


def _seed_row_value(column: str):
    return lambda g: float(g[column].iloc[0])


def _arm_label(df: pd.DataFrame) -> pd.Series:
    """input-norm of each row (the variant without its depth), e.g. 'raw-batchnorm'."""
    return df["input"].astype(str) + "-" + df["norm"].astype(str)


def _run_at(runs: pd.DataFrame, dataset: str, variant: str, seed: int, lr: float) -> pd.Series | None:
    """The row of runs.csv of (dataset, variant, seed) at learning rate ``lr`` (matched to 1e-3 relative:
    tables round LRs), None when there is none."""
    r = runs[(runs["dataset"] == dataset) & (runs["variant"] == variant) & (runs["seed"] == seed)]
    r = r[np.isclose(r["lr"].to_numpy(float), lr, rtol=1e-3, atol=0)]
    return r.iloc[0] if len(r) else None


def _final_loss_at(runs: pd.DataFrame, dataset: str, variant: str, seed: int, lr: float) -> float:
    """The final training loss of the run (dataset, variant, seed) at learning rate ``lr``, NaN when there
    is none (lr NaN: no stable LR) or it diverged."""
    r = _run_at(runs, dataset, variant, seed, lr)
    if r is None or bool(r["diverged"]):
        return np.nan
    return float(r["final_train_loss"])

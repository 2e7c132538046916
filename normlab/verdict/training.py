"""Claims on the training runs (Q5): the max stable learning rate with BN or LN, the outcome and speed at
each arm's best learning rate, the converse (raw inputs with BN against standardized inputs) and batch
norm on the raw inputs against standardizing them (outcome, and its training- against test-mode loss)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.verdict.core import (
    BUDGET_RATIO,
    LR_RATIO,
    MATCH_RATIO,
    MODE_GAP_RATIO,
    STEPS_RATIO,
    WORSE_RATIO,
    Case,
    Claim,
    Interval,
    _arm_key,
    _arm_label,
    _arm_names,
    _at_least,
    _by_case_and_seed,
    _case,
    _clearly_worse,
    _compared,
    _final_loss_at,
    _median,
    _negate,
    _networks,
    _point,
    _ratio,
    _ratio_claim_cases,
    _seed_row_value,
)


def _lr_interval(row: pd.Series, lr_min: float | None) -> Interval:
    """Where this seed's max stable LR lies: [max_stable_lr, max_stable_lr_upper]; no unstable LR above it:
    upper inf; no stable LR at all: [0, upper] (upper: the smallest LR tried when the table has none)."""
    lo, hi = float(row["max_stable_lr"]), float(row["max_stable_lr_upper"])
    if np.isnan(lo):
        return 0.0, (hi if not np.isnan(hi) else (lr_min if lr_min is not None else np.inf))
    return lo, (hi if not np.isnan(hi) else np.inf)


def learning_rate_claim(variant_seeds: pd.DataFrame, lr_min: float | None = None, arm: str = "batchnorm") -> Claim:
    """Rule: with standardized inputs, per seed, the max stable LR with ``arm`` (batchnorm | layernorm)
    >= LR_RATIO x the one without a normalization layer, decided on the refinement brackets: holds when
    arm_lower >= LR_RATIO x none_upper, fails when arm_upper < LR_RATIO x none_lower, undecided otherwise
    (a variant stable at the largest LR tried has an open bracket; one with no stable LR lies in
    [0, smallest LR tried]). ``lr_min``: the smallest LR tried."""
    A, a, _ = _arm_names(arm)
    d = _compared(variant_seeds, arm)
    pairs = _by_case_and_seed(d, lambda g: _lr_interval(g.iloc[0], lr_min), arms=("none", arm))
    cases = []
    for key, per in pairs.items():
        decided = {s: (_at_least(x, none, LR_RATIO), _ratio(x[0], none[0])) for s, (none, x) in per.items()}
        open_none = any(np.isinf(none[1]) and none[0] > 0 for none, _ in per.values())
        numbers = {f"max_stable_lr_no_{a}": _median(n[0] for n, _ in per.values()),
                   f"max_stable_lr_no_{a}_upper": _median(n[1] for n, _ in per.values()),
                   f"max_stable_lr_{a}": _median(b[0] for _, b in per.values()),
                   f"max_stable_lr_{a}_upper": _median(b[1] for _, b in per.values()),
                   f"no_{a}_stable_at_largest_lr_tried": open_none}
        note = f"without {A} stable at the largest learning rate tried" if open_none else ""
        if not note and any(h is None for h, _ in decided.values()):
            note = f"a bracket straddles {LR_RATIO:g}x"
        cases.append(_case(key, decided, numbers, note=note))
    still = "still " if arm == "batchnorm" else ""
    missing = _lr_missing_sentence(cases, arm)
    return Claim(
        f"learning_rate{_arm_key(arm)}", f"training runs, standardized inputs: refined max stable LR with {A} >= "
        f"{LR_RATIO} x without {A}, decided on the brackets [max_stable_lr, max_stable_lr_upper] ({a} lower >= "
        f"{LR_RATIO} x no-{A} upper: holds; {a} upper < {LR_RATIO} x no-{A} lower: fails), every seed", cases,
        {"all": f"With inputs already standardized, {A} {still}raised the largest stable learning rate at least "
                f"{LR_RATIO:g}-fold in all {{n}} dataset/depth cases.",
         "none": f"With inputs already standardized, {A} did not raise the largest stable learning rate "
                 f"{LR_RATIO:g}-fold in any of the {{n}} dataset/depth cases.",
         "mixed": f"With inputs already standardized, {A} raised the largest stable learning rate at least "
                  f"{LR_RATIO:g}-fold in {{k}} of {{n}} dataset/depth cases; not in: {{failing}}.",
         "missing": missing, "undecided": missing},
        comparison="max_stable_lr", rule_key="learning_rate",
        effect=f"max stable LR with {A} / without {A} (lower ends)", group="" if arm == "batchnorm" else arm)


def _lr_missing_sentence(cases: list[Case], arm: str = "batchnorm") -> str:
    """Why no dataset/depth case of the learning-rate claim could be decided."""
    A, a, _ = _arm_names(arm)
    if not cases:
        return "Max stable learning rates could not be compared: the study has no pair of standardized variants " \
               f"with and without {A}."
    if any(c.numbers.get(f"no_{a}_stable_at_largest_lr_tried") for c in cases):
        return f"Max stable learning rates could not be compared: without {A} every run was already stable at the " \
               "largest learning rate tried (extend sweep.lr_max)."
    if any(c.seeds for c in cases):
        return f"Max stable learning rates could not be compared: every refined bracket straddles {LR_RATIO:g}x."
    return "Max stable learning rates could not be compared: a variant is missing from the study."


def _loss_and_accuracy(g: pd.DataFrame) -> tuple[float, float]:
    return float(g["final_train_loss"].iloc[0]), float(g["test_accuracy"].iloc[0])


def _clearly_worse_case(key: tuple, per: dict, names: tuple[str, str]) -> tuple[Case, bool]:
    """A case of a "clearly worse" outcome rule from ``per``: {seed: ((loss, accuracy) of the arm that may be
    worse, (loss, accuracy) of its competitor)}. A seed holds when the first arm's final loss is higher; the case
    holds when ``_clearly_worse`` says so. Numbers: final_loss_<name> and test_accuracy_<name> (medians over
    seeds) for ``names`` = (first arm, competitor). Also returns whether the competitor is the clearly worse one
    (the converse, which the claims name in their notes)."""
    first = [x[0] for x, _ in per.values()]
    second = [y[0] for _, y in per.values()]
    decided = {s: (None if np.isnan(x[0]) or np.isnan(y[0]) else bool(x[0] > y[0]), _ratio(x[0], y[0]))
               for s, (x, y) in per.items()}
    a, b = names
    numbers = {f"final_loss_{a}": _median(first), f"final_loss_{b}": _median(second),
               f"test_accuracy_{a}": _median(x[1] for x, _ in per.values()),
               f"test_accuracy_{b}": _median(y[1] for _, y in per.values())}
    note = "a final loss is missing" if per else "no seed has both arms measured"
    return _case(key, decided, numbers, note=note, holds=_clearly_worse(first, second)), _clearly_worse(second, first)


def outcome_claim(variant_seeds: pd.DataFrame) -> Claim:
    """Rule: with standardized inputs, each arm at its own best LR, no BN is clearly worse than BN: its
    median final training loss is >= WORSE_RATIO x BN's and higher for every seed. The converse (BN
    clearly worse) is named in the claim's notes."""
    pairs = _by_case_and_seed(_compared(variant_seeds), _loss_and_accuracy)
    cases, bn_worse = [], []
    for key, per in pairs.items():
        case, converse = _clearly_worse_case(key, per, ("no_bn", "bn"))
        if converse:
            bn_worse.append(f"{case.label} (median final loss {case.numbers['final_loss_bn']:.3g} with BN against "
                            f"{case.numbers['final_loss_no_bn']:.3g} without)")
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


def large_lr_outcome_claim(variant_seeds: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """Rule: with standardized inputs, the arm with the larger median max stable LR (BN on a tie), run at
    that LR (each seed its own refined max stable LR, final loss from ``runs``), is clearly worse than its
    competitor at the competitor's own best LR: median final training loss >= WORSE_RATIO x, and higher
    for every seed. Holds: stable there, but clearly worse there."""
    pairs = _by_case_and_seed(_compared(variant_seeds), lambda g: g.iloc[0])
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
        numbers = {"arm": ("none", "batchnorm")[high], "its_max_stable_lr": lr_bn if high else lr_none,
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
    d = _compared(variant_seeds)
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
    cases = _ratio_claim_cases(_by_case_and_seed(_compared(variant_seeds), _seed_row_value(column)), BUDGET_RATIO,
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


# ------------------------------------------------------------------------------------------- the converse

STANDARDIZED_TEXT = {"none": "standardized inputs without BN", "batchnorm": "standardized inputs with BN"}


def converse_outcome_claim(variant_seeds: pd.DataFrame, against: str = "batchnorm") -> Claim:
    """Rule (Q5, the converse: does BN replace input normalization?): in the networks (depth >= 1), each arm
    at its own best LR, raw inputs with BN (``raw-batchnorm-d*``) are clearly worse than standardized
    inputs ``against`` (``standardize-none-d*`` or ``standardize-batchnorm-d*``): median final training
    loss >= WORSE_RATIO x and higher for every seed. Holds: BN does not replace input normalization.
    Test accuracies are shown beside the losses; raw inputs with BN clearly better is named in the notes."""
    d = _networks(variant_seeds).assign(arm=lambda x: _arm_label(x))
    std_arm = f"standardize-{against}"
    pairs = _by_case_and_seed(d, _loss_and_accuracy, arm_col="arm", arms=("raw-batchnorm", std_arm))
    cases, better = [], []
    for key, per in pairs.items():
        case, converse = _clearly_worse_case(key, per, ("raw_bn", f"standardized_{against}"))
        if converse:
            better.append(case.label)
        cases.append(case)
    std_text = STANDARDIZED_TEXT[against]
    notes = ([f"Raw inputs with BN were clearly better than {std_text} in: " + ", ".join(better) + "."]
             if better else [])
    consequence = ("BN on the hidden layers stood in for input normalization" if against == "none" else
                   "standardizing the inputs brought no clear gain once BN was there")
    return Claim(
        f"converse_outcome_{against}", "training runs, networks (depth >= 1), each arm at its own best grid LR: raw "
        f"inputs with BN clearly worse than {std_text} (median final training loss >= {WORSE_RATIO:g} x, and "
        "higher for every seed)", cases,
        {"all": f"BN does not replace input normalization: with raw inputs and BN, training ended clearly worse "
                f"(final loss >= {WORSE_RATIO:g}x) than with {std_text}, each at its own best learning rate, in all "
                "{n} dataset/depth cases.",
         "none": f"With raw inputs and BN, training did not end clearly worse (final loss >= {WORSE_RATIO:g}x) than "
                 f"with {std_text} in any of the {{n}} dataset/depth cases: by this outcome, {consequence}.",
         "mixed": f"With raw inputs and BN, training ended clearly worse (final loss >= {WORSE_RATIO:g}x) than with "
                  f"{std_text}, each at its own best learning rate, in {{k}} of {{n}} dataset/depth cases: "
                  "{holding}; there BN did not replace input normalization.",
         "missing": f"Raw inputs with BN and {std_text} were not both trained."},
        comparison="best_lr", notes=notes, rule_key="converse_outcome",
        seeds_label="Seeds with a higher final loss with raw inputs and BN",
        effect=f"final loss raw with BN / {std_text.removeprefix('standardized inputs ')}", group="converse")


# ------------------------------------------------------------------------------------- BN on the inputs

def input_bn_outcome_claim(variant_seeds: pd.DataFrame) -> Claim:
    """Rule (Q5, BN on the inputs): without normalization layers (any depth), each arm at its own best LR,
    the network that batch-normalizes its raw inputs (``batchnorm-none-d*``) matches standardized inputs
    (``standardize-none-d*``): its final training loss < MATCH_RATIO x the standardized one, every seed
    (as low or lower counts as matching). Test accuracies (running input statistics) are shown beside."""
    d = variant_seeds.assign(arm=lambda x: _arm_label(x))
    pairs = _by_case_and_seed(d, _loss_and_accuracy, arm_col="arm", arms=("batchnorm-none", "standardize-none"))
    cases = []
    for key, per in pairs.items():
        decided = {s: (_negate(_at_least(_point(x[0]), _point(y[0]), MATCH_RATIO)), _ratio(x[0], y[0]))
                   for s, (x, y) in per.items()}
        numbers = {"final_loss_input_bn": _median(x[0] for x, _ in per.values()),
                   "final_loss_standardized": _median(y[0] for _, y in per.values()),
                   "test_accuracy_input_bn": _median(x[1] for x, _ in per.values()),
                   "test_accuracy_standardized": _median(y[1] for _, y in per.values())}
        cases.append(_case(key, decided, numbers))
    return Claim(
        "input_bn_outcome", "training runs, no normalization layers, each arm at its own best grid LR: final "
        f"training loss with BN on the raw inputs < {MATCH_RATIO:g} x with standardized inputs, every seed (test "
        "accuracy shown, not decided)", cases,
        {"all": "Batch norm on the raw inputs matched standardizing them: at each arm's best learning rate its "
                f"final training loss stayed below {MATCH_RATIO:g}x the standardized model's in all {{n}} "
                "dataset/depth cases.",
         "none": "Batch norm on the raw inputs did not match standardizing them: its final training loss reached "
                 f"{MATCH_RATIO:g}x the standardized model's or more (for at least one seed) in every one of the "
                 "{n} dataset/depth cases.",
         "mixed": "Batch norm on the raw inputs matched standardizing them (final loss below "
                  f"{MATCH_RATIO:g}x the standardized model's) in {{k}} of {{n}} dataset/depth cases; not in: "
                  "{failing}.",
         "missing": "Batch norm on the raw inputs and standardized inputs were not both trained (variants.inputs "
                    "needs both)."},
        comparison="best_lr", rule_key="input_bn_outcome", seeds_label="Seeds for which it matched",
        effect="final loss BN on inputs / standardized", group="input_bn")


def input_bn_mode_gap_claim(runs: pd.DataFrame, variants: pd.DataFrame | None) -> Claim:
    """Rule (Q5, the quoted caveat that the batch must represent each variable's range): for the networks
    that batch-normalize their raw inputs (``batchnorm-*``), at the variant's best LR (``variants.csv``),
    the evaluation-set loss in training mode (``train_mode_loss``: each batch-size chunk normalized with
    its own statistics) and in test mode (``test_mode_loss``: the running statistics) lie within
    MODE_GAP_RATIO of each other: max / min < MODE_GAP_RATIO, every seed. A diverged run or a missing loss
    leaves its seed undecided."""
    cases = []
    r = runs[runs["input"] == "batchnorm"] if "input" in runs else runs.iloc[:0]
    if variants is not None and len(r) and {"train_mode_loss", "test_mode_loss"} <= set(r.columns):
        r = r.merge(variants[["dataset", "variant", "best_lr"]], on=["dataset", "variant"])
        r = r[np.isclose(r["lr"].to_numpy(float), r["best_lr"].to_numpy(float), rtol=1e-3, atol=0)]
        if "grid" in r:
            r = r[r["grid"].astype(bool)]
        for key, g in r.groupby(["dataset", "depth"], sort=True):
            per = {}
            for seed, gs in g.groupby("seed", sort=True):
                row = gs.iloc[0]
                train, test = float(row["train_mode_loss"]), float(row["test_mode_loss"])
                bad = bool(row.get("diverged", False)) or np.isnan(train) or np.isnan(test)
                hi, lo = max(train, test), min(train, test)
                apart = None if bad else _at_least(_point(hi), _point(lo), MODE_GAP_RATIO)
                per[int(seed)] = (_negate(apart), np.nan if bad else _ratio(test, train))
            numbers = {"best_lr": float(g["best_lr"].iloc[0]),
                       "train_mode_loss": _median(g.groupby("seed")["train_mode_loss"].first()),
                       "test_mode_loss": _median(g.groupby("seed")["test_mode_loss"].first())}
            cases.append(_case(key, per, numbers, note="" if per else "no run at the best learning rate"))
    return Claim(
        "input_bn_mode_gap", "training runs, BN on the raw inputs, the variant's best grid LR: evaluation-set loss in "
        "training mode (each batch-size chunk with its own statistics) and in test mode (running statistics) "
        f"within {MODE_GAP_RATIO:g}x of each other (max / min < {MODE_GAP_RATIO:g}), every seed", cases,
        {"all": "With batch norm on the raw inputs, the loss with each mini-batch's own statistics (training mode) "
                f"and with the running statistics (test mode) stayed within {MODE_GAP_RATIO:g}x of each other in "
                "all {n} dataset/depth cases: here the mini-batches represented each feature's range, as the quoted "
                "caveat requires.",
         "none": "With batch norm on the raw inputs, the training-mode and test-mode losses were "
                 f"{MODE_GAP_RATIO:g}x or more apart (for at least one seed) in every one of the {{n}} dataset/depth "
                 "cases: the quoted caveat bites, mini-batch statistics differ from the running ones the model is "
                 "tested with.",
         "mixed": "With batch norm on the raw inputs, the training-mode and test-mode losses stayed within "
                  f"{MODE_GAP_RATIO:g}x of each other in {{k}} of {{n}} dataset/depth cases; {MODE_GAP_RATIO:g}x or "
                  "more apart in: {failing}.",
         "missing": "The training-mode and test-mode losses of batch norm on the raw inputs were not measured (no "
                    "batchnorm input variant, or no best learning rate)."},
        comparison="best_lr", rule_key="input_bn_mode_gap", seeds_label="Seeds within the ratio",
        effect="test-mode / training-mode loss", group="input_bn")

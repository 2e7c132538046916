"""Each claim's outcome and sentence are chosen by its rule. The synthetic tables hold, besides the rows a
rule keeps, distractor rows it must drop (other checkpoints, runs, scopes, matrices, metrics, slices,
norms, inputs, layers, steps), each repeated so that a rule which kept them would decide otherwise; values
sit just either side of every threshold; seeds disagree; slices are censored, flat or degenerate; values
are NaN. The sentences, and the report's claim block, must flip with the outcome."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from normlab import report as R
from normlab import verdict as V

COPIES = 3  # each distractor row is repeated so that it outweighs the kept rows in a median
# the coupling c at which the roundest rescaled slice is exactly LECTURE_ROUND: (1 + c) / (1 - c) = 2.5^2
C_ROUND = (V.LECTURE_ROUND ** 2 - 1) / (V.LECTURE_ROUND ** 2 + 1)


def ids(dataset, input_, norm, depth):
    return {"dataset": dataset, "variant": f"{input_}-{norm}-d{depth}", "input": input_, "norm": norm, "depth": depth}


def product(**cols) -> list[dict]:
    """Every combination of the listed column values (a scalar is one value)."""
    keys = list(cols)
    vals = [v if isinstance(v, (list, tuple)) else [v] for v in cols.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*vals)]


def with_ids(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{**ids(r["dataset"], r["input"], r["norm"], r["depth"]), **r} for r in rows])


def distract(df: pd.DataFrame, alternatives: dict, value) -> pd.DataFrame:
    """df plus, for each column and each of its alternative values, COPIES copies of df's rows with that
    column set to it and 'value' (or value(row) for a callable) in the value column."""
    parts = [df]
    for col, alts in alternatives.items():
        for alt in alts:
            d = df.copy()
            d[col] = alt
            d["value"] = d.apply(value, axis=1) if callable(value) else value
            parts += [d] * COPIES
    return pd.concat(parts, ignore_index=True)


# The arms of issue 21 that a comparison of no normalization layer against batch norm must not read: batch norm
# on the raw inputs (its norm is none), the slide's depth-0 model (norm none) and layer norm.
NEW_ARMS = (("batchnorm", "none", None), ("standardize", "none", 0), ("standardize", "layernorm", None))


def arm_copies(df: pd.DataFrame, column: str, value, arms=NEW_ARMS, of_norm="none") -> pd.DataFrame:
    """df plus ``new_arm_rows``."""
    return pd.concat([df, new_arm_rows(df, column, value, arms, of_norm)], ignore_index=True)


def new_arm_rows(df: pd.DataFrame, column: str, value, arms=NEW_ARMS, of_norm="none") -> pd.DataFrame:
    """For each arm (input, norm, depth or None: the same depth), COPIES copies of df's rows of norm ``of_norm``
    moved to that arm (variant renamed), with ``value`` (or value(row)) in ``column``."""
    parts = [df.iloc[:0]]
    for input_, norm, depth in arms:
        d = df[df["norm"] == of_norm].copy()
        d["input"], d["norm"] = input_, norm
        if depth is not None:
            d["depth"] = depth
        d["variant"] = d["input"] + "-" + d["norm"] + "-d" + d["depth"].astype(str)
        d[column] = d.apply(value, axis=1) if callable(value) else value
        parts += [d] * COPIES
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------------------ thresholds

def test_no_threshold_is_finer_than_the_resolution_of_what_it_compares():
    for t in V.THRESHOLDS:
        assert t.value > t.resolution, t
        assert (t.largest if t.largest is not None else t.value) < t.bound, t
    assert V.LR_BRACKET <= 1.15 < V.LR_RATIO
    # the bound the slices store for a censored ratio (their 2x2 Gauss-Newton matrices are float64)
    from normlab.landscape.roundness import default_rel_tol

    assert V.CENSORED_BOUND == pytest.approx(1 / np.sqrt(default_rel_tol(np.float64)), rel=1e-12)


def test_every_claim_declares_its_threshold(full_tables):
    declared = {t.rule for t in V.THRESHOLDS}
    claims = V.all_claims(full_tables)
    assert {c.rule_key for c in claims} == declared
    # the report's methods state each claim's rule and thresholds
    rows = V.rules_table(claims)
    assert [r["key"] for r in rows] == [c.key for c in claims] and all(r["thresholds"] and r["rule"] for r in rows)
    for c in claims:
        # the rule and the sentence both say which comparison it uses
        assert c.comparison and c.comparison_text
        if c.comparison in V.PHASE:
            assert f"checkpoint {c.comparison}" in c.rule
            assert c.sentence.startswith(V.PHASE[c.comparison]), c.sentence


# ---------------------------------------------------------------------------- interval comparisons

def test_at_least_decides_only_when_the_whole_interval_does():
    assert V._at_least((2.0, 2.0), (1.0, 1.0), 2.0) is True
    assert V._at_least((1.99, 1.99), (1.0, 1.0), 2.0) is False
    assert V._at_least((2.0, 3.0), (1.0, 1.2), 2.0) is None  # straddles
    assert V._at_least((1.0, 2.0), (1.0, 1.2), 2.0) is None  # num_hi = 2 x den_lo: not below
    assert V._at_least((5.0, np.inf), (5.0, np.inf), 1.5) is None  # two censored values
    assert V._at_least((np.inf, np.inf), (1.0, np.inf), 1.5) is None
    assert V._at_least((10.0, np.inf), (1.0, 2.0), 2.0) is True
    assert V._at_least((np.nan, 1.0), (1.0, 1.0), 2.0) is None


def test_ratio():
    assert V._ratio(3.0, 2.0) == 1.5 and V._ratio(1.0, 0.0) == np.inf
    assert np.isnan(V._ratio(0.0, 0.0)) and np.isnan(V._ratio(np.nan, 1.0))


def test_case_holds_only_for_every_seed():
    assert V._case(("a", 2), {0: (True, 2.0), 1: (True, 3.0)}, {}).holds is True
    failing = V._case(("a", 2), {0: (True, 2.0), 1: (False, 1.0), 2: (None, np.nan)}, {})
    assert failing.holds is False and (failing.k_seeds, failing.n_seeds) == (1, 3)
    assert (failing.effect_min, failing.effect_max) == (1.0, 2.0)
    undecided = V._case(("a", 2), {0: (True, 2.0), 1: (None, np.nan)}, {})
    assert undecided.holds is None and undecided.note == "undecided for seed 1"
    assert V._case(("a", 2), {}, {}).note == "no seed has both arms measured"
    assert V._case(("a", 2), {0: (True, 2.0)}, {}).seeds_text == "1 of 1 seed"


# --------------------------------------------------------------------------------------- layer inputs

def layer_inputs(values: dict, metric=V.SPREAD_METRIC, checkpoint="end", seeds=(0,), dataset="a",
                 distractors=True, arms=NEW_ARMS) -> pd.DataFrame:
    """values: {norm: [layer 2, layer 3, layer 4 value]} (or {norm: {seed: [...]}}) for standardized inputs,
    best-LR run, checkpoint ``checkpoint``; layer 1 = 1. Distractors: other checkpoints, the common run, raw
    inputs, layer 1, other metrics, with a value that flips the rule (1 without BN, 100 with)."""
    rows = []
    for norm, vals in values.items():
        for seed in seeds:
            v = vals[seed] if isinstance(vals, dict) else vals
            for layer, x in zip((1, 2, 3, 4), [1.0, *v], strict=True):
                rows += product(dataset=dataset, input="standardize", norm=norm, depth=3, run="best", seed=seed,
                                checkpoint=checkpoint, layer=layer, metric=metric, value=x)
    df = with_ids(rows)
    if not distractors:
        return df
    others = [m for m in ("rms_spread", V.SPREAD_METRIC, "eff_cond", "cov_eff_cond") if m != metric]
    flip = lambda r: 1.0 if r["norm"] == "none" else 100.0  # noqa: E731
    alts = {"checkpoint": [c for c in V.PHASE if c != checkpoint], "run": ["common"], "input": ["raw"],
            "metric": others}
    out = distract(df, alts, flip)
    layer1 = df[df["layer"] >= 2].assign(layer=1)
    layer1["value"] = layer1.apply(flip, axis=1)
    # the new arms: read as the arm without BN (input BN, depth 0) they would flip it; layer norm is no arm here
    return arm_copies(pd.concat([out] + [layer1] * COPIES, ignore_index=True), "value", flip, arms)


@pytest.mark.parametrize("checkpoint", ["init", "matched", "end"])
@pytest.mark.parametrize(("none", "outcome"), [(1.5, "all"), (1.4999, "none")])
def test_hidden_spread_claim_at_its_threshold(checkpoint, none, outcome):
    # layer 4 is low without BN: the median over layers 2..4 is the layer-2/3 value only if layer 2 is kept
    c = V.hidden_spread_claim(layer_inputs({"none": [none, none, 0.1], "batchnorm": [1.0, 1.0, 1.0]},
                                           checkpoint=checkpoint), checkpoint)
    assert c.outcome == outcome and c.comparison == checkpoint
    assert c.cases[0].numbers == {"spread_no_bn": none, "spread_bn": 1.0}
    assert c.cases[0].effects == {0: pytest.approx(none)}
    assert c.sentence.startswith(V.PHASE[checkpoint])
    if outcome == "all":
        assert "BN puts them back on one scale, in all 1 dataset/depth cases" in c.sentence
    else:
        assert "BN did not make the deeper layers' input scales more uniform in any of the 1" in c.sentence
    assert "Seeds for which it held: " + ("1 of 1" if outcome == "all" else "0 of 1") in c.sentence
    assert "(1 of 1 seed: one seed per case, no spread over seeds)" in c.sentence


def test_hidden_spread_claim_pairs_seeds_and_fails_when_one_seed_fails():
    li = layer_inputs({"none": {0: [3.0, 3.0, 3.0], 1: [3.0, 3.0, 3.0], 2: [1.0, 1.0, 1.0]},
                       "batchnorm": {0: [1.0] * 3, 1: [2.5] * 3, 2: [1.0] * 3}}, seeds=(0, 1, 2))
    case = V.hidden_spread_claim(li, "end").cases[0]
    assert case.holds is False and (case.k_seeds, case.n_seeds) == (1, 3)
    assert case.seeds == {0: True, 1: False, 2: False}
    assert (case.effect_min, case.effect_max) == (1.0, 3.0)
    # a seed measured for one arm only is not paired
    assert V.hidden_spread_claim(li[~((li["seed"] == 2) & (li["norm"] == "none"))], "end").cases[0].n_seeds == 2


def test_mixed_outcome_names_the_failing_case_and_its_seeds():
    li = pd.concat([layer_inputs({"none": [10.0] * 3, "batchnorm": [2.0] * 3}, dataset="a", seeds=(0, 1)),
                    layer_inputs({"none": {0: [2.0] * 3, 1: [9.0] * 3}, "batchnorm": [2.0] * 3}, dataset="b",
                                 seeds=(0, 1))])
    c = V.hidden_spread_claim(li, "end")
    assert c.outcome == "mixed" and c.n_holds == 1 and c.n_cases == 2
    assert "in 1 of 2 dataset/depth cases; not in: b d3." in c.sentence
    assert "Seeds for which it held: 2 of 2 in a d3; 1 of 2 in b d3." in c.sentence
    assert "one seed per case" not in c.sentence


def test_undecided_case_is_named_with_its_reason():
    li = layer_inputs({"none": {0: [3.0] * 3, 1: [np.nan] * 3}, "batchnorm": [1.0] * 3}, seeds=(0, 1))
    li = pd.concat([li, layer_inputs({"none": [3.0] * 3, "batchnorm": [1.0] * 3}, dataset="b")])
    c = V.hidden_spread_claim(li, "end")
    assert c.outcome == "all" and c.n_cases == 1
    assert "Undecided: a d3 (undecided for seed 1)." in c.sentence


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize(("none", "outcome"), [(15.0, "all"), (14.99, "none")])
def test_input_conditioning_claims_read_their_own_metric(centred, none, outcome):
    metric = "cov_eff_cond" if centred else "eff_cond"
    c = V.input_conditioning_claim(layer_inputs({"none": [none, none, 1.0], "batchnorm": [10.0] * 3},
                                                metric=metric, checkpoint="matched"), "matched", centred=centred)
    assert c.outcome == outcome and c.key == f"{'input_cov_conditioning' if centred else 'input_conditioning'}_matched"
    assert c.cases[0].numbers == {f"{metric}_no_bn": none, f"{metric}_bn": 10.0}
    assert c.sentence.startswith("At matched training loss, ")
    assert ("centred covariance" in c.sentence) == centred


def layer1_table(raw, std, seeds=(0,)) -> pd.DataFrame:
    """Layer-1 input spreads (raw, standardized) at init of the best run, both norms, with distractors
    (other checkpoints, the common run, layer 2, the max/min metric) that flip the rule."""
    rows = []
    for inp, v in (("raw", raw), ("standardize", std)):
        rows += product(dataset="a", input=inp, norm=["none", "batchnorm"], depth=2, run="best", seed=list(seeds),
                        checkpoint="init", layer=1, metric=V.SPREAD_METRIC, value=v)
    df = with_ids(rows)
    flip = lambda r: 1.0 if r["input"] == "raw" else 50.0  # noqa: E731
    df = distract(df, {"checkpoint": ["end", "matched"], "run": ["common"], "layer": [2],
                       "metric": ["rms_spread"]}, flip)
    # batch norm on the inputs: its layer-1 inputs are the network's normalized A[0], neither raw nor standardized
    return arm_copies(df, "value", 1.0, arms=(("batchnorm", "none", None), ("batchnorm", "batchnorm", None)))


@pytest.mark.parametrize(("raw", "std", "outcome"), [(50.0, 1.99, "all"), (50.0, 2.0, "none"), (1.5, 1.5, "none"),
                                                     (1.5001, 1.5, "all")])
def test_input_scale_claim_at_its_thresholds(raw, std, outcome):
    c = V.input_scale_claim(layer1_table(raw, std))
    assert c.outcome == outcome and c.comparison == "init"
    assert c.cases[0].numbers == {"raw_spread": raw, "standardized_spread": std}
    if outcome == "all":
        assert "every dataset (1 of 1)" in c.sentence
    else:
        assert "did not put the input features on one scale in any dataset" in c.sentence


# --------------------------------------------------------------------------------------- learning rate

def variant_seeds(values: dict, dataset="a", depth=2, distractors=True, arms=NEW_ARMS) -> pd.DataFrame:
    """values: {norm: {column: [value per seed]}} for standardized inputs; raw-input rows first (they
    would flip every rule: without BN best, with BN worst)."""
    rows = []
    for norm, cols in values.items():
        n = len(next(iter(cols.values())))
        for s in range(n):
            rows.append({**ids(dataset, "standardize", norm, depth), "seed": s, **{k: v[s] for k, v in cols.items()}})
    df = pd.DataFrame(rows)
    if not distractors:
        return df
    raw = df.copy()
    raw["input"], raw["variant"] = "raw", raw["variant"].str.replace("standardize", "raw")
    good = {"max_stable_lr": 100.0, "max_stable_lr_upper": 101.0, "final_train_loss": 1e-6, "test_accuracy": 1.0,
            "steps_to_case_target": 1.0, "loss_at_10pct": 1e-6, "loss_at_30pct": 1e-6}
    bad = {"max_stable_lr": 1e-3, "max_stable_lr_upper": 1.1e-3, "final_train_loss": 1e3, "test_accuracy": 0.0,
           "steps_to_case_target": 1e4, "loss_at_10pct": 1e3, "loss_at_30pct": 1e3}
    for col in set(good) & set(raw.columns):
        raw[col] = np.where(raw["norm"] == "none", good[col], bad[col])
    # the new arms (input BN, depth 0, layer norm), as good as the raw arm without BN: read as the arm without BN
    # they flip every rule; they come first too
    cols = sorted(set(good) & set(df.columns))
    moved = new_arm_rows(df, cols[0], good[cols[0]], arms) if cols else df.iloc[:0]
    for col in cols:
        moved[col] = good[col]
    return pd.concat([moved, raw, df], ignore_index=True)


def lr_table(none, bn, seeds=1):
    """Brackets (lower, upper) of each arm, the same for every seed unless given as lists."""
    def cols(b):
        b = b if isinstance(b, list) else [b] * seeds
        return {"max_stable_lr": [x[0] for x in b], "max_stable_lr_upper": [x[1] for x in b]}
    return variant_seeds({"none": cols(none), "batchnorm": cols(bn)})


@pytest.mark.parametrize(("none", "bn", "holds"), [
    ((1.0, 1.125), (2.25, 2.5), True),  # bn lower = 2 x none upper
    ((1.0, 1.125), (2.2, 2.5), None),  # the brackets straddle 2x
    ((1.0, 1.125), (1.5, 1.99), False),  # bn upper < 2 x none lower
    ((1.0, 1.125), (1.5, 2.0), None),  # bn upper = 2 x none lower: not below
    ((np.nan, np.nan), (0.02, 0.0225), True),  # no stable LR without BN: in [0, 0.01] (smallest LR tried)
    ((np.nan, np.nan), (np.nan, np.nan), None),  # neither has a stable LR
    ((1.0, np.nan), (3.0, np.nan), None),  # both stable at the largest LR tried
    ((1.0, np.nan), (1.5, 1.75), False),  # without BN stable at the largest LR; BN unstable below 2x
])
def test_learning_rate_claim_decides_on_brackets(none, bn, holds):
    c = V.learning_rate_claim(lr_table(none, bn), lr_min=0.01)
    assert c.cases[0].holds is holds and c.comparison == "max_stable_lr"
    assert c.outcome == {True: "all", False: "none", None: "missing"}[holds]
    assert c.cases[0].numbers["max_stable_lr_bn"] == pytest.approx(bn[0]) or np.isnan(bn[0])


def test_learning_rate_claim_sentences():
    c = V.learning_rate_claim(lr_table((1.0, 1.125), (4.0, 4.5), seeds=3), lr_min=0.01)
    assert c.sentence.startswith("With inputs already standardized, BN still raised the largest stable learning "
                                 "rate at least 2-fold in all 1 dataset/depth cases.")
    assert "3 of 3 in every case" in c.sentence
    one_seed_fails = lr_table((1.0, 1.125), [(4.0, 4.5), (4.0, 4.5), (1.5, 1.7)], seeds=3)
    c = V.learning_rate_claim(one_seed_fails, lr_min=0.01)
    assert c.outcome == "none" and "2 of 3 in every case" in c.sentence
    censored = V.learning_rate_claim(lr_table((10.0, np.nan), (10.0, np.nan)), lr_min=0.01)
    assert censored.outcome == "missing" and "largest learning rate tried" in censored.sentence
    straddles = V.learning_rate_claim(lr_table((1.0, 1.125), (2.2, 2.5)), lr_min=0.01)
    assert "every refined bracket straddles 2x" in straddles.sentence
    assert straddles.cases[0].note == "a bracket straddles 2x"
    no_lr_min = V.learning_rate_claim(lr_table((np.nan, np.nan), (4.0, 4.5)))  # no BN lies in [0, inf)
    assert no_lr_min.outcome == "missing" and not no_lr_min.cases[0].numbers["no_bn_stable_at_largest_lr_tried"]
    assert "every refined bracket straddles 2x" in no_lr_min.sentence
    assert "no pair" in V.learning_rate_claim(lr_table((1.0, 1.1), (4.0, 4.5)).iloc[:0]).sentence
    no_bn = lr_table((1.0, 1.1), (4.0, 4.5))
    assert "a variant is missing" in V.learning_rate_claim(no_bn[no_bn["norm"] == "none"]).sentence


# ---------------------------------------------------------------------------------- outcome at best LR

@pytest.mark.parametrize(("none", "bn", "outcome"), [
    ([10.0, 10.0, 10.0], [1.0, 1.0, 1.0], "all"),  # median exactly 10x, worse every seed
    ([9.99, 9.99, 9.99], [1.0, 1.0, 1.0], "none"),
    ([100.0, 100.0, 0.5], [1.0, 1.0, 1.0], "none"),  # median 100x but one seed better
    ([100.0, 100.0, 1.0], [1.0, 1.0, 1.0], "none"),  # one seed equal: not worse
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], "none"),
])
def test_outcome_claim_clearly_worse(none, bn, outcome):
    t = variant_seeds({"none": {"final_train_loss": none, "test_accuracy": [0.9] * 3},
                       "batchnorm": {"final_train_loss": bn, "test_accuracy": [0.95] * 3}})
    c = V.outcome_claim(t)
    assert c.outcome == outcome and c.comparison == "best_lr"
    assert c.cases[0].numbers["final_loss_no_bn"] == np.median(none)
    assert c.cases[0].numbers["test_accuracy_bn"] == 0.95
    assert c.cases[0].k_seeds == sum(n > b for n, b in zip(none, bn, strict=True))
    assert ("ended clearly worse (final loss >= 10x BN's) in all 1" in c.sentence) == (outcome == "all")
    assert "BN was clearly worse" not in c.sentence


def test_outcome_claim_names_bn_clearly_worse():
    t = variant_seeds({"none": {"final_train_loss": [4e-4] * 2, "test_accuracy": [1.0] * 2},
                       "batchnorm": {"final_train_loss": [0.058, 0.06], "test_accuracy": [0.97] * 2}})
    c = V.outcome_claim(t)
    assert c.outcome == "none"
    assert "BN was clearly worse at its best learning rate in: a d2 (median final loss 0.059 with BN against " \
           "0.0004 without)." in c.sentence
    assert "Seeds with a higher final loss without BN: 0 of 2 in every case." in c.sentence
    nan = variant_seeds({"none": {"final_train_loss": [np.nan], "test_accuracy": [1.0]},
                         "batchnorm": {"final_train_loss": [1.0], "test_accuracy": [1.0]}})
    assert V.outcome_claim(nan).outcome == "missing"


def large_lr_tables(bn_there: list[float], none_best: list[float], bn_lr=3.0, none_lr=1.0):
    """BN stable up to bn_lr; its final loss there per seed in runs.csv; no BN's final loss at its best LR.
    runs.csv also holds distractors: other LRs, seeds, variants, datasets, a diverged run."""
    n = len(bn_there)
    vs = variant_seeds({"none": {"max_stable_lr": [none_lr] * n, "max_stable_lr_upper": [none_lr * 1.1] * n,
                                 "final_train_loss": none_best},
                        "batchnorm": {"max_stable_lr": [bn_lr] * n, "max_stable_lr_upper": [bn_lr * 1.1] * n,
                                      "final_train_loss": [1e-9] * n}})
    rows = []  # the distractors come first: a rule that kept one would read it first
    for s, loss in enumerate(bn_there):
        bn = ids("a", "standardize", "batchnorm", 2)
        rows += [{**bn, "lr": bn_lr * 1.1, "seed": s, "grid": False, "diverged": True, "final_train_loss": 1e-9},
                 {**bn, "lr": bn_lr / 2.61, "seed": s, "grid": True, "diverged": False, "final_train_loss": 1e-9},
                 {**bn, "lr": bn_lr, "seed": s + n, "grid": True, "diverged": False, "final_train_loss": 1e-9},
                 {**ids("a", "raw", "batchnorm", 2), "lr": bn_lr, "seed": s, "grid": True, "diverged": False,
                  "final_train_loss": 1e-9},
                 {**ids("b", "standardize", "batchnorm", 2), "lr": bn_lr, "seed": s, "grid": True,
                  "diverged": False, "final_train_loss": 1e-9},
                 {**ids("a", "standardize", "none", 2), "lr": none_lr, "seed": s, "grid": True,
                  "diverged": False, "final_train_loss": 1e9},
                 {**bn, "lr": round(bn_lr, 4) * 1.0002, "seed": s, "grid": False, "diverged": bool(np.isinf(loss)),
                  "final_train_loss": 1e-9 if np.isinf(loss) else loss}]
    return vs, pd.DataFrame(rows)


@pytest.mark.parametrize(("bn_there", "holds", "k"), [
    ([1.0, 1.0, 1.0], True, 3),  # median 10x, worse every seed
    ([0.99, 0.99, 0.99], False, 3),
    ([5.0, 5.0, 0.05], False, 2),
    ([5.0, 5.0, 0.1], False, 2),  # one seed equal: not worse there
    ([np.nan, 1.0, 1.0], None, 2),
    ([np.inf, 1.0, 1.0], None, 2),  # the run at the max stable LR diverged: no final loss there
])
def test_large_lr_outcome_claim(bn_there, holds, k):
    vs, runs = large_lr_tables(bn_there, [0.1, 0.1, 0.1])
    c = V.large_lr_outcome_claim(vs, runs)
    case = c.cases[0]
    assert case.holds is holds and c.comparison == "large_lr" and case.k_seeds == k
    assert case.numbers["arm"] == "batchnorm" and case.numbers["its_max_stable_lr"] == 3.0
    assert case.numbers["competitor_final_loss_at_best_lr"] == pytest.approx(0.1)
    if holds:
        assert c.sentence.startswith("The arm stable at the larger learning rate was clearly worse there (final "
                                     "loss >= 10x) than its competitor at its own best learning rate in all 1")
        assert "Seeds with a higher final loss at the larger learning rate: 3 of 3 in every case." in c.sentence


def test_large_lr_outcome_claim_picks_the_arm_stable_at_the_larger_lr():
    vs, runs = large_lr_tables([1.0] * 3, [0.1] * 3, bn_lr=0.5, none_lr=1.0)
    # without BN stable at the larger LR: its run there (the 1e9 row) against BN at its best LR
    case = V.large_lr_outcome_claim(vs, runs).cases[0]
    assert case.numbers["arm"] == "none" and case.holds is True
    assert case.numbers["its_final_loss_there"] == 1e9
    tie = V.large_lr_outcome_claim(*large_lr_tables([1.0] * 3, [0.1] * 3, bn_lr=1.0, none_lr=1.0)).cases[0]
    assert tie.numbers["arm"] == "batchnorm"


# ------------------------------------------------------------------------------------------- speed

def steps_table(none, bn, **extra):
    n = len(none)
    return variant_seeds({"none": {"steps_to_case_target": none, "case_target": [0.2] * n, **extra},
                          "batchnorm": {"steps_to_case_target": bn, "case_target": [0.2] * n, **extra}})


@pytest.mark.parametrize(("none", "bn", "holds"), [
    ([16.0], [10.0], True),  # bracket [15, 16] >= 1.5 x [9, 10]
    ([15.0], [10.0], None),  # 14 < 15 and 15 >= 13.5: the brackets straddle 1.5x
    ([13.0], [10.0], False),  # 13 < 1.5 x 9
    ([13.5], [10.0], None),  # 13.5 = 1.5 x 9: not below
    ([np.nan], [10.0], True),  # never without BN: in [100, inf)
    ([10.0], [np.nan], False),
    ([np.nan], [np.nan], None),
    ([np.nan], [60.0], True),  # [100, inf) >= 1.5 x 60
    ([np.nan], [70.0], None),  # 100 < 105: undecided
    ([16.0, 16.0], [10.0, 12.0], False),  # seed 1: 16 < 1.5 x 11: fails
])
def test_steps_claim_decides_on_step_brackets(none, bn, holds):
    c = V.steps_claim(steps_table(none, bn), total_steps={"a": 100.0, "b": 1.0})
    assert c.cases[0].holds is holds and c.comparison == "best_lr"
    assert c.cases[0].numbers["case_target"] == 0.2


def test_steps_claim_numbers_per_case():
    t = pd.concat([steps_table([30.0], [10.0]), variant_seeds(
        {"none": {"steps_to_case_target": [1.0], "case_target": [0.5]},
         "batchnorm": {"steps_to_case_target": [1.0], "case_target": [0.5]}}, dataset="b", distractors=False),
        variant_seeds({"none": {"steps_to_case_target": [1.0], "case_target": [0.7]},
                       "batchnorm": {"steps_to_case_target": [1.0], "case_target": [0.7]}}, depth=4,
                      distractors=False)])
    c = V.steps_claim(t)
    assert [(x.label, x.numbers["case_target"]) for x in c.cases] == [("a d2", 0.2), ("a d4", 0.7), ("b d2", 0.5)]


def test_steps_claim_sentences_and_default_total():
    c = V.steps_claim(steps_table([30.0, 40.0], [10.0, 12.0]))
    assert c.outcome == "all" and c.sentence.startswith("With standardized inputs, BN reached the case's target loss "
                                                        "at least 1.5x faster in all 1")
    assert c.cases[0].effects == {0: 3.0, 1: pytest.approx(40 / 12)}
    # without total_steps, a seed never reaching the target lies beyond the largest step of the table (1e4,
    # a raw-input distractor), so BN reaching it at 60 is 1.5x faster
    assert V.steps_claim(steps_table([np.nan], [60.0])).cases[0].holds is True
    assert V.steps_claim(steps_table([np.nan], [np.nan])).outcome == "missing"


@pytest.mark.parametrize("pct", [10, 30])
@pytest.mark.parametrize(("none", "outcome"), [(2.0, "all"), (1.99, "none")])
def test_budget_loss_claim(pct, none, outcome):
    other = 10 if pct == 30 else 30
    t = steps_table([1.0], [1.0], **{f"loss_at_{pct}pct": [none], f"loss_at_{other}pct": [1.0]})
    t.loc[t["norm"] == "batchnorm", f"loss_at_{pct}pct"] = np.where(t.loc[t["norm"] == "batchnorm", "input"] == "raw",
                                                                    1e3, 1.0)
    t.loc[(t["input"] == "standardize") & (t["norm"] == "none"), f"loss_at_{other}pct"] = 100.0
    c = V.budget_loss_claim(t, pct)
    assert c.outcome == outcome and c.key == f"loss_after_budget_{pct}pct"
    assert c.cases[0].numbers == {f"loss_at_{pct}pct_no_bn": none, f"loss_at_{pct}pct_bn": 1.0}
    assert c.sentence.startswith(f"After {pct}% of the steps")


# --------------------------------------------------------------------------------------------- gradients

def gradients_table(last_none, last_bn, seeds=(0,), datasets=("a",)):
    """relative_grad_norm per layer at each seed's last step (seed s: step 100 - 10 s; dataset b: 50 more),
    with distractors: earlier steps, the common run, grad_norm, raw inputs (BN uneven there)."""
    rows = []
    for ds, seed, (norm, vals) in itertools.product(datasets, seeds, (("none", last_none), ("batchnorm", last_bn))):
        last = 100 - 10 * seed + (50 if ds == "b" else 0)
        for layer, v in enumerate(vals, start=1):
            rows += product(dataset=ds, input="standardize", norm=norm, depth=2, run="best", seed=seed, step=last,
                            layer=layer, metric="relative_grad_norm", value=v)
            rows += product(dataset=ds, input="standardize", norm=norm, depth=2, run="best", seed=seed, step=0,
                            layer=layer, metric="relative_grad_norm", value=1.0)
    df = with_ids(rows)
    flip = lambda r: 1.0 + 99.0 * (r["norm"] == "batchnorm") * (r["layer"] == 2)  # noqa: E731
    df = distract(df, {"step": [10], "run": ["common"], "metric": ["grad_norm"], "input": ["raw"]}, flip)
    return arm_copies(df, "value", 1.0)  # even across layers: read as the arm without BN, they flip it


@pytest.mark.parametrize(("none", "outcome"), [(1.5, "all"), (1.4999, "none")])
def test_gradient_spread_claim_at_its_threshold(none, outcome):
    c = V.gradient_spread_claim(gradients_table([1.0, none, 1.0], [1.0, 1.0, 1.0], seeds=(0, 1), datasets=("a", "b")))
    assert c.outcome == outcome and c.n_cases == 2
    assert all(case.n_seeds == 2 for case in c.cases)  # every seed's own last step
    assert c.cases[0].numbers == {"grad_spread_no_bn": none, "grad_spread_bn": 1.0}
    assert c.sentence.startswith("At the end of training, ") and "(last evaluation step)" in c.rule
    init = V.gradient_spread_claim(gradients_table([1.0, none, 1.0], [1.0, 1.0, 1.0]), "init")
    assert init.outcome == "none" and init.cases[0].numbers["grad_spread_no_bn"] == 1.0  # step 0: all 1
    assert init.sentence.startswith("At initialization, ") and "(first evaluation step)" in init.rule


# ----------------------------------------------------------------------------------------- curvature

def curvature_table(none, bn, checkpoint="end", seeds=(0,)):
    """Per-layer GGN lambda_max of layers 1..3 (lists), best run, standardized inputs: without BN the plain
    ``ggn``; with BN the scale-invariant ``ggn_invariant`` of the hidden layers 1, 2 and the plain ``ggn`` of
    the output layer 3 (``bn``), the plain ggn of BN's hidden layers being a distractor (very uneven), as is a
    ggn_invariant row without BN. Other distractors: the model scope, the Hessian, the trace, other
    checkpoints, the common run, raw inputs, the new arms."""
    rows = []
    for norm, vals in (("none", none), ("batchnorm", bn)):
        for layer, v in enumerate(vals, start=1):
            matrix = "ggn_invariant" if norm == "batchnorm" and layer < len(vals) else "ggn"
            rows += product(dataset="a", input="standardize", norm=norm, depth=2, run="best", seed=list(seeds),
                            lr=0.5, checkpoint=checkpoint, scope=f"layer{layer}", matrix=matrix, metric="lambda_max",
                            value=v)
            if matrix == "ggn_invariant" or norm == "none":  # BN's plain hidden values, and an invariant without BN
                rows += product(dataset="a", input="standardize", norm=norm, depth=2, run="best", seed=list(seeds),
                                lr=0.5, checkpoint=checkpoint, scope=f"layer{layer}",
                                matrix="ggn" if norm == "batchnorm" else "ggn_invariant", metric="lambda_max",
                                value=1e4 if layer == 1 else 1.0)
    df = with_ids(rows)
    flip = lambda r: 1000.0 if (r["norm"] == "batchnorm") == (r["scope"] == "layer1") else 1.0  # noqa: E731
    df = distract(df, {"scope": ["model"], "matrix": ["hessian"], "metric": ["trace"], "run": ["common"],
                       "checkpoint": [c for c in V.PHASE if c != checkpoint], "input": ["raw"]}, flip)
    return pd.concat([df, new_arm_rows(df[df["matrix"] == "ggn"], "value", 1.0)], ignore_index=True)


@pytest.mark.parametrize("checkpoint", ["init", "matched", "end"])
@pytest.mark.parametrize(("none", "outcome"), [(6.0, "all"), (5.9999, "none")])
def test_layer_sharpness_claim_at_its_threshold(checkpoint, none, outcome):
    c = V.layer_sharpness_claim(curvature_table([2.0, none, 2.0], [2.0, 4.0, 2.0], checkpoint), checkpoint)
    assert c.outcome == outcome and c.comparison == checkpoint
    assert c.cases[0].numbers == {"layer_sharpness_spread_no_bn": none / 2, "layer_sharpness_spread_bn": 2.0}
    assert c.sentence.startswith(V.PHASE[checkpoint])


def test_edge_of_stability_per_seed():
    rows = []
    for seed, lam in ((0, 3.0), (1, 5.0), (2, 4.0)):
        base = {**ids("a", "standardize", "none", 2), "run": "best", "lr": 0.5, "seed": seed, "checkpoint": "end",
                "scope": "model", "matrix": "hessian", "metric": "lambda_max", "value": lam}
        rows += [base, {**base, "checkpoint": "init", "value": 99.0}, {**base, "run": "common", "value": 99.0},
                 {**base, "scope": "layer1", "value": 99.0}, {**base, "matrix": "ggn", "value": 99.0},
                 {**base, "metric": "trace", "value": 99.0}]
    eos = V.edge_of_stability(pd.DataFrame(rows))
    assert len(eos) == 1
    r = eos.iloc[0]
    assert (r["lambda_max"], r["two_over_lr"], r["n_seeds"]) == (4.0, 4.0, 3)
    assert (r["ratio"], r["ratio_min"], r["ratio_max"]) == (1.0, 0.75, 1.25)


# ------------------------------------------------------------------------------------------------ slices

def slice_row(input_, norm, scope, ratio, seed=0, checkpoint="init", depth=2, **flags):
    return {**ids("a", input_, norm, depth), "run": "best", "lr": 0.1, "seed": seed, "checkpoint": checkpoint,
            "slice": "lecture", "scope": scope, "axis_ratio_ggn": ratio, "censored": False, "flat_direction": False,
            "degenerate": False, **flags}


def slice_distractors(df, flip, checkpoint="init"):
    d = df.rename(columns={"axis_ratio_ggn": "value"})
    d = distract(d, {"slice": ["eig", "random"], "run": ["common"],
                     "checkpoint": [c for c in V.PHASE if c != checkpoint]}, flip)
    return d.rename(columns={"value": "axis_ratio_ggn"})


def lecture_table(raw, std, seeds=(0,), **flags):
    """Layer-1 lecture slices without normalization layers (raw, std: a ratio or (ratio, flags)), with
    distractors (other slices, runs, checkpoints, layer 2, BN) that flip the rule."""
    rows = []
    for seed in seeds:
        for inp, v in (("raw", raw), ("standardize", std)):
            v, f = v if isinstance(v, tuple) else (v, {})
            rows.append(slice_row(inp, "none", "layer1", v, seed, **f))
    df = pd.DataFrame(rows)
    flip = lambda r: 1.0 if r["input"] == "raw" else 100.0  # noqa: E731
    df = slice_distractors(df, flip)
    extra = []
    for inp, scope, norm in (("standardize", "layer2", "none"), ("standardize", "layer1", "batchnorm"),
                             ("batchnorm", "layer1", "none")):
        extra += [slice_row(inp, norm, scope, 100.0, s) for s in seeds] * COPIES
    # the slide's model (depth 0) is its own claim: here its slices flip the rule
    extra += [slice_row(inp, "none", "layer1", 1.0 if inp == "raw" else 100.0, s, depth=0)
              for s in seeds for inp in ("raw", "standardize")] * COPIES
    return pd.concat([df, pd.DataFrame(extra)], ignore_index=True)


@pytest.mark.parametrize(("raw", "std", "outcome"), [
    (4.98, 2.49, "all"),  # raw = 2 x standardized, standardized just below 2.5
    (4.97, 2.49, "none"),
    (100.0, 2.5, "none"),  # standardized not near round
    ((3162.3, {"censored": True}), 1.2, "all"),  # a censored raw ratio counts as elongated
    ((3162.3, {"censored": True}), (3162.3, {"censored": True}), "none"),  # censored standardized: not round
    (np.nan, 1.2, "missing"),
])
def test_lecture_slice_claim(raw, std, outcome):
    c = V.lecture_slice_claim(lecture_table(raw, std))
    assert c.outcome == outcome and c.comparison == "init"
    if outcome == "all":
        assert c.sentence.startswith("At initialization, the lecture's picture")
    if isinstance(raw, tuple):
        assert c.cases[0].numbers["censored_raw"] == 1 and c.cases[0].numbers["ratio_raw"] == 3162.3
        n = 1 + isinstance(std, tuple)
        assert c.cases[0].numbers["censored_standardized"] == n - 1
        assert f"{n} censored slice{'s' if n > 1 else ''} (axis ratio beyond numerical resolution, >= 3.16e+03) " \
               "counted as elongated." in c.sentence


@pytest.mark.parametrize(("std", "couplings", "why"), [
    (9.6, (0.948,), " Of the 1 case where standardizing left the slice elongated, in 1 its two weights are so "
                    "coupled that no rescaling of the two inputs could make it near round: the roundest is "
                    "sqrt((1 + c) / (1 - c)), c = |G12| / sqrt(G11 G22) of its Gauss-Newton matrix (a d2: c = 0.948, "
                    "at least 6.12)."),
    (9.6, (C_ROUND - 1e-4,), " Of the 1 case where standardizing left the slice elongated, in 1 the curvature along "
                             "its two weights differs, and equal curvature would make it near round."),
    (9.6, (C_ROUND + 1e-4,), "in 1 its two weights are so coupled"),
    (9.6, (0.9, 0.99, 0.1), "median c = 0.9"),  # the median over seeds (0.9) in each of four cases
    (2.49, (0.948,), ""),  # near round: nothing to explain
])
def test_lecture_slice_claim_says_why_standardizing_left_the_slice_elongated(std, couplings, why):
    seeds = tuple(range(len(couplings)))
    t = lecture_table(1000.0, std, seeds=seeds)
    t["ggn_coupling"] = 0.999  # the distractors, raw rows included
    target = ((t["input"] == "standardize") & (t["slice"] == "lecture") & (t["scope"] == "layer1")
              & (t["norm"] == "none") & (t["run"] == "best") & (t["checkpoint"] == "init") & (t["depth"] == 2))
    for seed, x in zip(seeds, couplings, strict=True):
        t.loc[target & (t["seed"] == seed), "ggn_coupling"] = x
    c = V.lecture_slice_claim(t)
    assert c.cases[0].numbers["coupling_standardized"] == pytest.approx(float(np.median(couplings)))
    if why.startswith("median"):
        # more coupled cases than are named: one case per depth, four depths
        t4 = pd.concat([t.assign(depth=t["depth"].where(t["depth"] != 2, d),
                                 variant=t["variant"].str.replace("-d2", f"-d{d}")) for d in (2, 4, 6, 8)])
        c4 = V.lecture_slice_claim(t4)
        assert "in 4 its two weights are so coupled" in c4.sentence and why + ")." in c4.sentence
        # each case reads its own depth's slices: d2 coupled, d4 not
        t2 = t4[t4["depth"].isin([2, 4])].copy()
        t2.loc[(t2["depth"] == 4) & (t2["ggn_coupling"] != 0.999), "ggn_coupling"] = 0.3
        c2 = V.lecture_slice_claim(t2)
        assert ("in 1 its two weights are so coupled that" in c2.sentence and "(a d2: c = 0.9, at least 4.36); in 1 "
                "the curvature along its two weights differs" in c2.sentence)
    elif why:
        assert why in c.sentence
    else:
        assert "coupled" not in c.sentence and "curvature along" not in c.sentence


def test_lecture_slice_claim_leaves_out_flat_and_degenerate_slices_and_says_so():
    t = lecture_table(50.0, 1.2, seeds=(0, 1))
    t = pd.concat([t, pd.DataFrame([slice_row("standardize", "none", "layer1", 100.0, 0, degenerate=True),
                                    slice_row("standardize", "none", "layer1", 100.0, 1, degenerate=True),
                                    slice_row("standardize", "none", "layer1", 100.0, 1, flat_direction=True)])])
    c = V.lecture_slice_claim(t, "init")
    assert c.outcome == "all" and c.cases[0].numbers["ratio_standardized"] == 1.2
    assert "Left out 3 of 7 slices: 1 containing an exact flat direction (a batch-normalized unit's own weights, " \
           "a layer norm's scale, the softmax's shift); 2 degenerate (fewer than two distinct live inputs, or a " \
           "dead unit)." in c.sentence
    assert "Seeds for which it held: 2 of 2 in every case." in c.sentence


def hidden_slice_table(none, bn, checkpoint="end", seeds=(0,)):
    """Lecture slices of layers 2..4 (lists of a ratio or (ratio, flags)), standardized inputs, with
    distractors (layer 1, raw inputs, other slices, runs, checkpoints) that flip the rule."""
    rows = []
    for seed, (norm, vals) in itertools.product(seeds, (("none", none), ("batchnorm", bn))):
        for layer, v in zip((2, 3, 4), vals, strict=True):
            v, f = v if isinstance(v, tuple) else (v, {})
            rows.append(slice_row("standardize", norm, f"layer{layer}", v, seed, checkpoint, **f))
    df = pd.DataFrame(rows)
    flip = lambda r: 1.0 if r["norm"] == "none" else 100.0  # noqa: E731
    df = slice_distractors(df, flip, checkpoint)
    extra = []
    for seed, norm in itertools.product(seeds, ("none", "batchnorm")):
        v = 1.0 if norm == "none" else 100.0
        extra += [slice_row("standardize", norm, "layer1", v, seed, checkpoint),
                  slice_row("raw", norm, "layer2", v, seed, checkpoint)] * COPIES
    return arm_copies(pd.concat([df, pd.DataFrame(extra)], ignore_index=True), "axis_ratio_ggn", 1.0)


@pytest.mark.parametrize(("none", "bn", "holds"), [
    ([3.0, 3.0, 0.1], [2.0, 2.0, 2.0], True),  # layer 4 low: the median needs layer 2
    ([2.99, 2.99, 0.1], [2.0, 2.0, 2.0], False),
    ([(3162.3, {"censored": True})] * 3, [2.0] * 3, True),
    ([(3162.3, {"censored": True})] * 3, [(3162.3, {"censored": True})] * 3, None),  # two censored: undecided
    ([2.0] * 3, [(3162.3, {"censored": True})] * 3, False),
    ([3.0] * 3, [2.0, 2.0, (100.0, {"flat_direction": True})], True),  # the flat slice is left out
    ([3.0] * 3, [(100.0, {"degenerate": True}), 2.0, 2.0], True),
])
def test_hidden_slice_claim(none, bn, holds):
    c = V.hidden_slice_claim(hidden_slice_table(none, bn, "matched"), "matched")
    assert c.cases[0].holds is holds and c.comparison == "matched"
    assert c.sentence.startswith("At matched training loss, ")
    flags = [f for v in none + bn if isinstance(v, tuple) for f in v[1]]
    if "flat_direction" in flags:
        assert "Left out 1 of 6 slices: 1 containing an exact flat direction" in c.sentence
    if "degenerate" in flags:
        assert "Left out 1 of 6 slices: 1 degenerate" in c.sentence
    if holds is None:
        assert c.outcome == "missing"
        assert c.sentence == "At matched training loss, no case of this rule could be decided: a d2 (undecided " \
                             "for seed 0). 6 censored slices (axis ratio beyond numerical resolution, >= 3.16e+03) " \
                             "counted as elongated."
    assert "were not measured" in V.hidden_slice_claim(hidden_slice_table(none, bn).iloc[:0], "end").sentence


# ------------------------------------------------------------------------------------ the arms must not leak

def test_the_new_arms_do_not_leak_into_the_none_against_bn_claims(full_tables):
    """Every claim comparing no normalization layer with BN reads the same with or without rows of batch norm on
    the inputs, depth 0 and layer norm (each with values that would flip it)."""
    plain = {k: v[v["variant"].str.match(r"^(raw|standardize)-(none|batchnorm)-d[1-9]")] if "variant" in v else v
             for k, v in full_tables.items()}
    keep = ("layer_sharpness", "hidden_spread_", "input_conditioning", "input_cov", "hidden_slice", "gradient_spread",
            "learning_rate", "large_lr", "outcome_best", "steps_to", "loss_after", "input_scales", "lecture_slice",
            "converse_")
    with_arms = {c.key: c.sentence for c in V.all_claims(full_tables) if c.key.startswith(keep)
                 and "layernorm" not in c.key}
    without = {c.key: c.sentence for c in V.all_claims(plain) if c.key in with_arms}
    assert with_arms == without and len(with_arms) >= 20


# --------------------------------------------------------------------------------------------- layer norm

LN_DISTRACTORS = (("batchnorm", "none", None), ("standardize", "none", 0), ("standardize", "batchnorm", None))


@pytest.mark.parametrize("checkpoint", ["init", "end"])
@pytest.mark.parametrize(("none", "outcome"), [(1.5, "all"), (1.4999, "none")])
def test_layernorm_hidden_spread_claim_at_its_threshold(checkpoint, none, outcome):
    li = layer_inputs({"none": [none, none, 0.1], "layernorm": [1.0] * 3}, checkpoint=checkpoint, arms=LN_DISTRACTORS)
    c = V.hidden_spread_claim(li, checkpoint, arm="layernorm")
    assert c.outcome == outcome and c.key == f"hidden_spread_layernorm_{checkpoint}" and c.group == "layernorm"
    assert c.rule_key == "hidden_spread" and "without LN >= 1.5 x with LN" in c.rule
    assert c.cases[0].numbers == {"spread_no_ln": none, "spread_ln": 1.0} and c.cases[0].label == "a d3"
    assert c.effect == "spread without LN / with LN"
    if outcome == "all":
        assert "LN also puts the deeper layers' inputs back on one scale" in c.sentence
        assert "against the K-FAC view's prediction" in c.sentence
    else:
        assert "LN did not make the deeper layers' input scales more uniform in any of the 1" in c.sentence
        assert "as the K-FAC view predicts" in c.sentence
    # the BN claim on the same table reads its own arm only (the BN rows here are distractors at 100)
    assert V.hidden_spread_claim(li, checkpoint).cases[0].numbers["spread_bn"] == 100.0


@pytest.mark.parametrize(("none", "ln", "holds"), [
    ((1.0, 1.125), (2.25, 2.5), True),
    ((1.0, 1.125), (2.2, 2.5), None),
    ((1.0, 1.125), (1.5, 1.99), False),
    ((1.0, 1.125), (1.5, 2.0), None),
])
def test_layernorm_learning_rate_claim_decides_on_brackets(none, ln, holds):
    t = variant_seeds({"none": {"max_stable_lr": [none[0]] * 2, "max_stable_lr_upper": [none[1]] * 2},
                       "layernorm": {"max_stable_lr": [ln[0]] * 2, "max_stable_lr_upper": [ln[1]] * 2}},
                      arms=LN_DISTRACTORS)
    c = V.learning_rate_claim(t, lr_min=0.01, arm="layernorm")
    assert c.key == "learning_rate_layernorm" and c.rule_key == "learning_rate" and c.group == "layernorm"
    assert c.cases[0].holds is holds and c.cases[0].n_seeds == 2 and len(c.cases) == 1
    assert c.cases[0].numbers["max_stable_lr_ln"] == ln[0] and c.cases[0].numbers["max_stable_lr_no_ln"] == none[0]
    if holds:
        assert c.sentence.startswith("With inputs already standardized, LN raised the largest stable learning rate "
                                     "at least 2-fold in all 1 dataset/depth cases.")
        assert "2 of 2 in every case" in c.sentence
    elif holds is False:
        assert "LN did not raise the largest stable learning rate 2-fold in any of the 1" in c.sentence
    else:
        assert "every refined bracket straddles 2x" in c.sentence
    assert "without LN" in c.rule and "pair of standardized variants with and without LN" in V.learning_rate_claim(
        t.iloc[:0], arm="layernorm").sentence


# ------------------------------------------------------------------------------------------------ the slide

def slide_table(raw, std, seeds=(0,), datasets=("a",), coupling=None, rms=(1.0, 1.0)):
    """Depth-0 layer-1 lecture slices at init (raw, std: a ratio or (ratio, flags)), with distractors that flip
    the rule: the networks' layer-1 slices (depth 2), other slices, the common run, other checkpoints, BN on the
    inputs at depth 0. ``coupling``: the standardized slices' ggn_coupling and (rms_hi, rms_lo) = ``rms`` (a
    column only when given; every other row, raw included, has coupling 0.999 and RMS 50 and 0.02)."""
    rows = []
    for ds, seed in itertools.product(datasets, seeds):
        for inp, v in (("raw", raw), ("standardize", std)):
            v, f = v if isinstance(v, tuple) else (v, {})
            if coupling is not None:
                std_row = inp == "standardize"
                f = {**f, "ggn_coupling": coupling if std_row else 0.999, "rms_hi": rms[0] if std_row else 50.0,
                     "rms_lo": rms[1] if std_row else 0.02}
            rows.append({**slice_row(inp, "none", "layer1", v, seed, "init", depth=0, **f), "dataset": ds})
    df = pd.DataFrame(rows)
    flip = lambda r: 1.0 if r["input"] == "raw" else 100.0  # noqa: E731
    df = slice_distractors(df, flip)
    nets = df[df["depth"] == 0].assign(depth=2)
    nets["variant"] = nets["input"] + "-none-d2"
    nets["axis_ratio_ggn"] = nets.apply(flip, axis=1)
    inbn = df[(df["depth"] == 0) & (df["input"] == "standardize")].assign(
        input="batchnorm", variant="batchnorm-none-d0", axis_ratio_ggn=1.0)
    out = pd.concat([nets] * COPIES + [inbn] * COPIES + [df], ignore_index=True)
    if coupling is not None:
        target = ((out["depth"] == 0) & (out["input"] == "standardize") & (out["slice"] == "lecture")
                  & (out["run"] == "best") & (out["checkpoint"] == "init"))
        out.loc[~target, ["ggn_coupling", "rms_hi", "rms_lo"]] = [0.999, 50.0, 0.02]
    return out


@pytest.mark.parametrize(("raw", "std", "outcome"), [
    (4.98, 2.49, "all"),
    (4.97, 2.49, "none"),
    (1000.0, 2.5, "none"),  # standardized not near round
    ((3162.3, {"censored": True}), 1.0, "all"),
    (np.nan, 1.0, "missing"),
])
def test_slide_claim(raw, std, outcome):
    c = V.slide_claim(slide_table(raw, std, seeds=(0, 1)))
    assert c.outcome == outcome and c.key == "slide" and c.comparison == "init" and c.rule_key == "slide"
    assert c.group == "slide" and "depth 0" in c.rule
    if outcome != "missing":
        assert c.cases[0].label == "a" and c.cases[0].n_seeds == 2 and len(c.cases) == 1
    if outcome == "all":
        assert c.sentence.startswith("At initialization (W = 0), on the slide's own model (no hidden layer), the cost "
                                     "against the two weights of one output unit is elongated on raw inputs and near "
                                     "round on standardized inputs in every dataset (1 of 1): the lecture's slide, "
                                     "reproduced")
        text = ">= 3.16e+03 raw against 1 standardized" if isinstance(raw, tuple) else "a: 4.98 raw against 2.49"
        assert text in c.sentence
    if outcome == "none":
        assert "the slide was not reproduced" in c.sentence


def test_slide_claim_mixed_and_missing():
    t = pd.concat([slide_table(50.0, 1.0, datasets=("a",)), slide_table(3.0, 2.0, datasets=("b",))])
    c = V.slide_claim(t)
    assert c.outcome == "mixed" and "in 1 of 2 datasets; not in: b" in c.sentence
    no_d0 = V.slide_claim(t[t["depth"] != 0])
    assert no_d0.outcome == "missing" and "add 0 to variants.depths" in no_d0.sentence
    # the networks' layer-1 claim does not read depth 0 (there its distractors would flip it)
    assert V.lecture_slice_claim(lecture_table(50.0, 1.2)).cases[0].label == "a d2"


def test_rescaled_axis_ratio_is_the_roundest_any_rescaling_reaches():
    assert V.rescaled_axis_ratio(0.0) == 1.0
    assert V.rescaled_axis_ratio(0.5) == pytest.approx(math.sqrt(3.0), rel=1e-15)
    assert V.rescaled_axis_ratio(0.95) == pytest.approx(math.sqrt(39.0), rel=1e-14)
    assert V.rescaled_axis_ratio(1.0) == np.inf and np.isnan(V.rescaled_axis_ratio(np.nan))
    # against a dense search over diagonal rescalings S M S of random PSD 2x2 matrices: never below the bound,
    # and reached at the scaling that equalizes the diagonal
    rng = np.random.default_rng(3)
    for _ in range(20):
        A = rng.normal(size=(2, 2)) * rng.uniform(0.01, 10.0, size=2)
        M = A @ A.T
        c = abs(M[0, 1]) / math.sqrt(M[0, 0] * M[1, 1])

        def ratio(s, M=M):
            ev = np.linalg.eigvalsh(np.diag([s, 1.0]) @ M @ np.diag([s, 1.0]))
            return math.sqrt(ev[1] / ev[0])
        searched = min(ratio(s) for s in np.geomspace(1e-4, 1e4, 4001))
        best = V.rescaled_axis_ratio(c)
        assert searched >= best * (1 - 1e-9) and searched == pytest.approx(best, rel=1e-3)
        assert ratio(math.sqrt(M[1, 1] / M[0, 0])) == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize(("std", "coupling", "why"), [
    (9.6, 0.948, "correlated"),
    (2.5, C_ROUND + 1e-4, "correlated"),  # standardized just not near round; c just above the round bound
    (2.5, C_ROUND - 1e-4, "scaled"),      # c just below it: the scales, not the correlation
    (9.6, 0.3, "scaled"),
    (2.49, 0.948, ""),                    # near round: the slide holds, nothing to explain
    (9.6, np.nan, ""),                    # no coupling measured
])
def test_slide_claim_says_why_standardizing_left_the_slice_elongated(std, coupling, why):
    c = V.slide_claim(slide_table(1000.0, std, seeds=(0, 1), coupling=coupling, rms=(1.62, 0.596)))
    assert c.outcome == ("all" if std < V.LECTURE_ROUND else "none")
    got = c.cases[0].numbers["coupling_standardized"]
    assert (np.isnan(got) and np.isnan(coupling)) or got == coupling
    correlated = "the two inputs are correlated: no rescaling of them makes the slice rounder than" in c.sentence
    scaled = "their scales differ on the analysis set" in c.sentence
    assert (correlated, scaled) == (why == "correlated", why == "scaled")
    if why == "correlated":
        bound = math.sqrt((1 + coupling) / (1 - coupling))
        assert f"a: c = {coupling:.3g}, so at least {bound:.3g}." in c.sentence
        assert "it does not decorrelate the features." in c.sentence
    if why == "scaled":
        assert f"a: RMS 1.62 and 0.596, {math.sqrt((1 + coupling) / (1 - coupling)):.3g} at equal scales." in c.sentence


def test_slide_claim_explains_only_the_failing_datasets():
    t = pd.concat([slide_table(50.0, 1.0, datasets=("a",), coupling=0.948),
                   slide_table(290.0, 9.6, datasets=("b",), coupling=0.948)])
    c = V.slide_claim(t)
    assert c.outcome == "mixed" and "not in: b" in c.sentence
    assert "analysis set); b: c = 0.948, so at least 6.12." in c.sentence and "a: c = " not in c.sentence
    assert c.reasons == {"b": "whose two standardized inputs are correlated, c = 0.948"}
    scaled = V.slide_claim(pd.concat([t[t["dataset"] == "a"], slide_table(290.0, 9.6, datasets=("b",), coupling=0.3)]))
    assert scaled.reasons == {"b": "whose two standardized inputs differ in scale on the analysis set"}
    # a table from before the coupling column: the same claim, no explanation
    old = V.slide_claim(t.drop(columns=["ggn_coupling"]))
    assert old.outcome == "mixed" and "correlated" not in old.sentence
    assert np.isnan(old.cases[1].numbers["coupling_standardized"])


# --------------------------------------------------------------------------------------------- smoothness

def smoothness_table(none, normed, arm="batchnorm", checkpoint="end", seeds=(0,), raw_beta=1e-3, nonfinite=(0, 0),
                     distractors=True):
    """Aggregate smoothness rows (step_size NaN) of the common run: without a normalization layer beta_max and
    loss_range = ``none``; with ``arm`` beta_invariant_max and loss_range = ``normed`` and a flattering raw
    beta_max; nonfinite_steps of each. Distractors, placed first (a rule reading the first row of a dropped
    filter reads them): the best run, other checkpoints, per-step rows, raw inputs, BN on the inputs, depth 0,
    the other normalization layer."""
    rows = []
    for norm, v, nf in (("none", none, nonfinite[0]), (arm, normed, nonfinite[1])):
        metrics = {"beta_max": v if norm == "none" else raw_beta, "loss_range": v, "nonfinite_steps": nf}
        if norm != "none":
            metrics["beta_invariant_max"] = v
        for m, x in metrics.items():
            rows += product(dataset="a", input="standardize", norm=norm, depth=2, run="common", lr=0.1,
                            seed=list(seeds), checkpoint=checkpoint, step_size=np.nan, metric=m, value=x)
    df = with_ids(rows)
    if not distractors:
        return df
    flip = lambda r: (0.0 if r["metric"] == "nonfinite_steps" else 1e-3) if r["norm"] == "none" else 100.0  # noqa: E731
    other = "layernorm" if arm == "batchnorm" else "batchnorm"
    out = distract(df, {"run": ["best"], "checkpoint": [c for c in V.PHASE if c != checkpoint], "step_size": [1.0],
                        "input": ["raw"]}, flip)
    out = arm_copies(out, "value", flip, arms=(("batchnorm", "none", None), ("standardize", "none", 0),
                                               ("standardize", other, None)))
    return pd.concat([out.iloc[len(df):], df], ignore_index=True)


@pytest.mark.parametrize("arm", ["batchnorm", "layernorm"])
@pytest.mark.parametrize(("none", "outcome"), [(1.5, "all"), (1.4999, "none")])
def test_smoothness_beta_claim_compares_the_invariant_beta(arm, none, outcome):
    A = {"batchnorm": "BN", "layernorm": "LN"}[arm]
    c = V.smoothness_claim(smoothness_table(none, 1.0, arm, seeds=(0, 1)), arm, "beta", "end")
    assert c.outcome == outcome and c.key == f"smoothness_beta_{arm}_end" and c.rule_key == "smoothness_beta"
    assert c.comparison == "end" and c.group == "smoothness" and "common-LR run" in c.rule
    a = A.lower()
    assert c.cases[0].numbers == {f"beta_max_no_{a}": none, f"beta_invariant_max_{a}": 1.0, f"beta_max_{a}_raw": 1e-3}
    assert c.cases[0].label == "a d2" and len(c.cases) == 1 and c.cases[0].n_seeds == 2
    assert f"{A}'s raw beta_max was 0.001 x its scale-invariant value" in c.sentence
    assert "flatters" in c.sentence
    if outcome == "all":
        assert c.sentence.startswith(f"At the end of training, at the common learning rate with standardized inputs, "
                                     f"the gradient changes faster along the gradient without {A} than with it")
    else:
        assert f"{A}'s scale-invariant beta-smoothness was not 1.5x below the one without {A} in any" in c.sentence


@pytest.mark.parametrize(("none", "outcome"), [(1.5, "all"), (1.4999, "none")])
def test_smoothness_loss_claim(none, outcome):
    c = V.smoothness_claim(smoothness_table(none, 1.0, checkpoint="matched"), "batchnorm", "loss", "matched")
    assert c.outcome == outcome and c.key == "smoothness_loss_batchnorm_matched" and c.rule_key == "smoothness_loss"
    assert c.cases[0].numbers == {"loss_range_no_bn": none, "loss_range_bn": 1.0}
    assert c.sentence.startswith("At matched training loss, ") and "flatters" not in c.sentence


@pytest.mark.parametrize(("nonfinite", "holds"), [((1, 0), True), ((0, 1), False), ((1, 1), None), ((0, 0), False)])
def test_smoothness_claim_counts_a_non_finite_step_as_infinitely_rough(nonfinite, holds):
    for metric in ("beta", "loss"):
        c = V.smoothness_claim(smoothness_table(1.0, 1.0, nonfinite=nonfinite), "batchnorm", metric, "end")
        assert c.cases[0].holds is holds, (metric, nonfinite)


def test_smoothness_claim_without_a_pair_or_a_hidden_layer():
    t = smoothness_table(2.0, 1.0)
    assert "was not measured at the common learning rate" in V.smoothness_claim(t[t["norm"] != "none"]).sentence
    d0 = t[t["depth"] == 0]
    assert len(d0) and "there is no deeper layer" in V.smoothness_claim(d0).sentence


# -------------------------------------------------------------------------------- scale-invariant sharpness

@pytest.mark.parametrize(("none", "outcome"), [(12.0, "all"), (11.999, "none")])
def test_layer_sharpness_reads_bn_invariant_hidden_layers_and_its_plain_output_layer(none, outcome):
    # BN: invariant layers 1, 2 = 2, 4 and the plain output layer 1: spread 4; without BN: spread none / 2
    c = V.layer_sharpness_claim(curvature_table([2.0, none, 2.0], [2.0, 4.0, 1.0]), "end")
    assert c.outcome == outcome
    assert c.cases[0].numbers == {"layer_sharpness_spread_no_bn": none / 2, "layer_sharpness_spread_bn": 4.0}
    assert "scale-invariant lambda_max(S G S)" in c.rule
    assert "With BN, the hidden layers' sharpness is the scale-invariant lambda_max(S G S) (2 layer values" \
        in c.sentence
    # without invariant rows, the plain values are read, and the claim says they flatter BN
    t = curvature_table([2.0, none, 2.0], [2.0, 4.0, 1.0])
    plain = V.layer_sharpness_claim(t[t["matrix"] != "ggn_invariant"], "end")
    assert plain.cases[0].numbers["layer_sharpness_spread_bn"] == 1e4 and "flatters BN" in plain.sentence


def test_comparable_sharpness_prefers_the_invariant_rows_of_normalized_variants():
    t = curvature_table([2.0, 3.0, 4.0], [5.0, 6.0, 7.0])
    t = t[(t["run"] == "best") & (t["checkpoint"] == "end") & (t["metric"] == "lambda_max")
          & t["scope"].str.startswith("layer") & (t["input"] == "standardize")
          & t["variant"].isin(("standardize-none-d2", "standardize-batchnorm-d2"))]
    ln = t[t["variant"] == "standardize-batchnorm-d2"].assign(norm="layernorm", variant="standardize-layernorm-d2")
    got = V.comparable_sharpness(pd.concat([t, ln]).drop_duplicates())
    for variant, matrices in (("standardize-none-d2", ["ggn"] * 3),
                              ("standardize-batchnorm-d2", ["ggn_invariant", "ggn_invariant", "ggn"]),
                              ("standardize-layernorm-d2", ["ggn_invariant", "ggn_invariant", "ggn"])):
        g = got[got["variant"] == variant].sort_values("scope")
        assert list(g["matrix"]) == matrices, variant
        want = [2.0, 3.0, 4.0] if variant.endswith("none-d2") else [5.0, 6.0, 7.0]
        assert list(g["value"]) == want


def test_edge_of_stability_adds_the_invariant_sharpness_of_normalized_arms():
    rows = []
    for variant_norm, lam, inv in (("none", 4.0, None), ("batchnorm", 0.01, 8.0), ("layernorm", 0.02, 6.0)):
        for seed in (0, 1):
            base = {**ids("a", "standardize", variant_norm, 2), "run": "best", "lr": 0.5, "seed": seed,
                    "checkpoint": "end", "scope": "model", "matrix": "hessian", "metric": "lambda_max", "value": lam}
            rows += [base, {**base, "matrix": "ggn_invariant", "value": 99.0}]
            if inv is not None:
                rows += [{**base, "matrix": "hessian_invariant", "value": inv + seed},
                         {**base, "matrix": "hessian_invariant", "checkpoint": "init", "value": 99.0},
                         {**base, "matrix": "hessian_invariant", "scope": "layer1", "value": 99.0},
                         {**base, "matrix": "hessian_invariant", "run": "common", "value": 99.0}]
            else:  # an invariant row of a variant without normalization is not shown
                rows += [{**base, "matrix": "hessian_invariant", "value": 99.0}]
    eos = V.edge_of_stability(pd.DataFrame(rows)).set_index("variant")
    assert np.isnan(eos.loc["standardize-none-d2", "lambda_max_invariant"])
    assert eos.loc["standardize-batchnorm-d2", "lambda_max_invariant"] == 8.5
    assert eos.loc["standardize-layernorm-d2", "lambda_max_invariant"] == 6.5
    assert eos.loc["standardize-batchnorm-d2", "ratio"] == pytest.approx(0.01 * 0.5 / 2)
    assert V.edge_of_stability(pd.DataFrame(rows).iloc[:0]).empty


def effective_lr_gradients():
    """weight_norm and effective_lr per layer of two normalized variants, runs best (lr 0.5) and common (lr 0.2),
    seeds 0, 1 (last step 100 - seed), layers 1, 2 with invariant weights (norms 2 and 4 at the end, 1 at step
    0) and the output layer 3 (no invariant weights: effective_lr NaN, norm 50). Distractors: a middle step, the
    variant without normalization, depth 0, grad_norm."""
    rows = []
    for norm, run, seed in itertools.product(("none", "batchnorm", "layernorm"), ("best", "common"), (0, 1)):
        lr = 0.5 if run == "best" else 0.2
        for step, layer in itertools.product((0, 50, 100 - seed), (1, 2, 3)):
            wn = {0: 1.0, 50: 77.0}.get(step, {1: 2.0, 2: 4.0}.get(layer, 50.0))
            inv = norm == "none" or layer < 3  # the variant without normalization: a finite distractor
            for depth in ((2, 0) if norm == "none" else (2,)):
                base = {**ids("a", "standardize", norm, depth), "run": run, "lr": lr, "seed": seed, "step": step,
                        "layer": layer}
                rows += [{**base, "metric": "weight_norm", "value": wn},
                         {**base, "metric": "effective_lr", "value": lr / wn ** 2 if inv else np.nan},
                         {**base, "metric": "grad_norm", "value": 1e-9}]
    return pd.DataFrame(rows)


def test_effective_lr_table_and_sentence():
    t = V.effective_lr_table(effective_lr_gradients())
    assert list(t["variant"]) == ["standardize-batchnorm-d2"] * 2 + ["standardize-layernorm-d2"] * 2
    r = t[(t["variant"] == "standardize-batchnorm-d2") & (t["run"] == "best")].iloc[0]
    assert r["lr"] == 0.5 and r["effective_lr"] == pytest.approx((0.125 + 0.03125) / 2)
    assert (r["effective_lr_min"], r["effective_lr_max"]) == (0.03125, 0.125)
    assert r["ratio"] == pytest.approx(0.15625) and r["n_seeds"] == 2
    assert (r["weight_norm_init"], r["weight_norm_end"]) == (1.0, 3.0)  # the output layer's norm 50 left out
    text = V.effective_lr_sentence(t)
    assert text.startswith("At the end of training, at each variant's best learning rate, lr / ||w||^2 was 0.156 to "
                           "0.156 times the nominal lr over the 2 normalized variants")
    assert "at the common learning rate, lr / ||w||^2 was 0.156 to 0.156" in text
    assert V.effective_lr_table(effective_lr_gradients().iloc[:0]).empty and V.effective_lr_sentence(t.iloc[:0]) == ""


# ----------------------------------------------------------------------------------------------- the converse

def converse_seeds(raw_bn, std, against="batchnorm", acc=(0.8, 0.99)):
    """variant_seeds rows of raw-batchnorm-d2 (final losses ``raw_bn`` per seed) and standardize-<against>-d2
    (``std``); distractors first, each better or worse so that reading it flips the rule: raw inputs without BN,
    the other standardized arm, layer norm, BN on the inputs, depth 0."""
    rows = []
    other = "none" if against == "batchnorm" else "batchnorm"
    for s, (x, y) in enumerate(zip(raw_bn, std, strict=True)):
        for (inp, norm, depth), loss in ((("raw", "none", 2), 1e-9), (("standardize", other, 2), 1e9),
                                         (("standardize", "layernorm", 2), 1e9), (("batchnorm", "none", 2), 1e9),
                                         (("raw", "none", 0), 1e-9), (("standardize", "none", 0), 1e9)):
            rows += [{**ids("a", inp, norm, depth), "seed": s, "final_train_loss": loss, "test_accuracy": 0.5}] * COPIES
        rows += [{**ids("a", "raw", "batchnorm", 2), "seed": s, "final_train_loss": x, "test_accuracy": acc[0]},
                 {**ids("a", "standardize", against, 2), "seed": s, "final_train_loss": y, "test_accuracy": acc[1]}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("against", ["none", "batchnorm"])
@pytest.mark.parametrize(("raw_bn", "std", "outcome"), [
    ([10.0, 10.0, 10.0], [1.0, 1.0, 1.0], "all"),
    ([9.99, 9.99, 9.99], [1.0, 1.0, 1.0], "none"),
    ([100.0, 100.0, 0.5], [1.0, 1.0, 1.0], "none"),  # one seed better
    ([100.0, 100.0, 1.0], [1.0, 1.0, 1.0], "none"),  # one seed equal
])
def test_converse_outcome_claim(against, raw_bn, std, outcome):
    c = V.converse_outcome_claim(converse_seeds(raw_bn, std, against), against)
    assert c.outcome == outcome and c.key == f"converse_outcome_{against}" and c.group == "converse"
    assert c.rule_key == "converse_outcome" and c.comparison == "best_lr" and len(c.cases) == 1
    case = c.cases[0]
    assert case.label == "a d2" and case.numbers == {
        "final_loss_raw_bn": np.median(raw_bn), f"final_loss_standardized_{against}": 1.0,
        "test_accuracy_raw_bn": 0.8, f"test_accuracy_standardized_{against}": 0.99}
    assert case.k_seeds == sum(x > 1.0 for x in raw_bn)
    with_ = "with BN" if against == "batchnorm" else "without BN"
    if outcome == "all":
        assert c.sentence.startswith("BN does not replace input normalization: with raw inputs and BN, training ended "
                                     f"clearly worse (final loss >= 10x) than with standardized inputs {with_}")
    else:
        assert c.sentence.startswith("With raw inputs and BN, training did not end clearly worse (final loss >= 10x) "
                                     f"than with standardized inputs {with_} in any of the 1")


def test_converse_outcome_claim_names_raw_bn_clearly_better():
    c = V.converse_outcome_claim(converse_seeds([0.01, 0.01], [1.0, 1.0], "none"), "none")
    assert c.outcome == "none" and "Raw inputs with BN were clearly better than standardized inputs without BN in: " \
                                   "a d2." in c.sentence
    assert "standardized inputs without BN were not both trained" in V.converse_outcome_claim(
        converse_seeds([1.0], [1.0]).query("norm != 'batchnorm'"), "none").sentence


def converse_slices(raw_bn, std_bn, std_none=7.0, checkpoint="end"):
    """Layer-1 lecture slices of raw-batchnorm-d2, standardize-batchnorm-d2 (projected) and standardize-none-d2
    (shown beside), best run; distractors that flip the rule: layer 2, the common run, another checkpoint, raw
    inputs without BN, layer norm, BN on the inputs."""
    rows = [slice_row("raw", "batchnorm", "layer1", raw_bn, 0, checkpoint, projected=True),
            slice_row("standardize", "batchnorm", "layer1", std_bn, 0, checkpoint, projected=True),
            slice_row("standardize", "none", "layer1", std_none, 0, checkpoint)]
    df = pd.DataFrame(rows)
    flip = lambda r: 1.0 if r["input"] == "raw" else 1000.0  # noqa: E731
    df = slice_distractors(df, flip, checkpoint)
    extra = [slice_row("raw", "batchnorm", "layer2", 1.0, 0, checkpoint, projected=True),
             slice_row("raw", "none", "layer1", 1.0, 0, checkpoint),
             slice_row("standardize", "layernorm", "layer1", 1000.0, 0, checkpoint),
             slice_row("batchnorm", "none", "layer1", 1000.0, 0, checkpoint)] * COPIES
    return pd.concat([df, pd.DataFrame(extra)], ignore_index=True)


@pytest.mark.parametrize(("raw_bn", "std_bn", "holds"), [(4.0, 2.0, True), (3.99, 2.0, False),
                                                          ((1e6, {"censored": True}), 2.0, True),
                                                          ((1e6, {"flat_direction": True}), 2.0, None)])
def test_converse_slice_claim(raw_bn, std_bn, holds):
    v, f = raw_bn if isinstance(raw_bn, tuple) else (raw_bn, {})
    t = converse_slices(v, std_bn)
    if f:
        t.loc[(t["variant"] == "raw-batchnorm-d2") & (t["scope"] == "layer1") & (t["slice"] == "lecture")
              & (t["run"] == "best") & (t["checkpoint"] == "end"), list(f)] = True
    c = V.converse_slice_claim(t, "end")
    assert c.key == "converse_slice_end" and c.rule_key == "converse_slice" and c.group == "converse"
    if holds is None:
        assert c.outcome == "missing" and "Left out 1 of 3 slices: 1 containing an exact flat direction" in c.sentence
        return
    assert c.cases[0].holds is holds and c.cases[0].numbers["ratio_standardized_no_bn"] == 7.0
    assert c.cases[0].numbers["ratio_standardized_bn"] == 2.0
    assert "2 of the 3 slices compared belong to scale-invariant units" in c.sentence
    if holds:
        assert c.sentence.startswith("At the end of training, BN does not do input normalization's work on layer 1")


# --------------------------------------------------------------------------------------- BN on the inputs

def input_bn_seeds(inbn, std, depths=(2,)):
    """variant_seeds rows of batchnorm-none-d<depth> (final losses ``inbn``) and standardize-none-d<depth>
    (``std``); distractors first that flip the rule: hidden BN, raw inputs, layer norm."""
    rows = []
    for depth, (s, (x, y)) in itertools.product(depths, enumerate(zip(inbn, std, strict=True))):
        for inp, norm, loss in (("standardize", "batchnorm", 1e9), ("raw", "none", 1e-9),
                                ("standardize", "layernorm", 1e9), ("batchnorm", "batchnorm", 1e-9)):
            rows += [{**ids("a", inp, norm, depth), "seed": s, "final_train_loss": loss, "test_accuracy": 0.1}] * COPIES
        rows += [{**ids("a", "batchnorm", "none", depth), "seed": s, "final_train_loss": x, "test_accuracy": 0.9},
                 {**ids("a", "standardize", "none", depth), "seed": s, "final_train_loss": y, "test_accuracy": 0.95}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("inbn", "std", "outcome"), [
    ([1.999, 1.999], [1.0, 1.0], "all"),
    ([2.0, 2.0], [1.0, 1.0], "none"),
    ([0.001, 2.0], [1.0, 1.0], "none"),  # one seed 2x worse
    ([1e-6, 1e-6], [1.0, 1.0], "all"),  # lower counts as matching
])
def test_input_bn_outcome_claim(inbn, std, outcome):
    c = V.input_bn_outcome_claim(input_bn_seeds(inbn, std, depths=(0, 2)))
    assert c.outcome == outcome and c.key == "input_bn_outcome" and c.group == "input_bn"
    assert [x.label for x in c.cases] == ["a d0", "a d2"]  # the slide's model is a case too
    assert c.cases[1].numbers == {"final_loss_input_bn": np.median(inbn), "final_loss_standardized": 1.0,
                                  "test_accuracy_input_bn": 0.9, "test_accuracy_standardized": 0.95}
    if outcome == "all":
        assert c.sentence.startswith("Batch norm on the raw inputs matched standardizing them: at each arm's best "
                                     "learning rate its final training loss stayed below 2x the standardized model's "
                                     "in all 2 dataset/depth cases.")
        assert "Seeds for which it matched: 2 of 2 in every case." in c.sentence
    else:
        assert c.sentence.startswith("Batch norm on the raw inputs did not match standardizing them")


@pytest.mark.parametrize("checkpoint", ["init", "end"])
@pytest.mark.parametrize(("inbn", "outcome"), [(3.99, "all"), (4.0, "none")])
def test_input_bn_slice_claim(checkpoint, inbn, outcome):
    rows = [slice_row("batchnorm", "none", "layer1", inbn, 0, checkpoint, depth=0),
            slice_row("standardize", "none", "layer1", 2.0, 0, checkpoint, depth=0)]
    df = pd.DataFrame(rows)
    flip = lambda r: 1000.0 if r["input"] == "batchnorm" else 1.0  # noqa: E731
    df = slice_distractors(df, flip, checkpoint)
    extra = [slice_row("raw", "none", "layer1", 1000.0, 0, checkpoint, depth=0),
             slice_row("standardize", "batchnorm", "layer1", 1000.0, 0, checkpoint, depth=0),
             slice_row("standardize", "batchnorm", "layer1", 1.0, 0, checkpoint, depth=0, flat_direction=True),
             slice_row("batchnorm", "none", "layer2", 1000.0, 0, checkpoint, depth=0)] * COPIES
    c = V.input_bn_slice_claim(pd.concat([pd.DataFrame(extra), df], ignore_index=True), checkpoint)
    assert c.outcome == outcome and c.key == f"input_bn_slice_{checkpoint}" and c.rule_key == "input_bn_slice"
    assert c.cases[0].label == "a d0" and c.cases[0].numbers["ratio_input_bn"] == inbn
    assert c.cases[0].numbers["ratio_standardized"] == 2.0
    assert c.sentence.startswith(V.PHASE[checkpoint] + ", batch norm on the raw inputs ")
    assert "Left out" not in c.sentence  # the other arms' slices are not counted


def mode_runs(train, test, diverged=False):
    """runs.csv rows of batchnorm-none-d2 at its best LR 0.5 (per seed training- and test-mode losses); first,
    distractors far apart: another LR, a refinement run at the same LR, hidden BN at its best LR."""
    rows = []
    for s, (a, b) in enumerate(zip(train, test, strict=True)):
        base = {**ids("a", "batchnorm", "none", 2), "seed": s, "diverged": False, "grid": True}
        rows += [{**base, "lr": 0.2, "train_mode_loss": 1.0, "test_mode_loss": 100.0},
                 {**base, "lr": 0.5, "grid": False, "train_mode_loss": 1.0, "test_mode_loss": 100.0},
                 {**ids("a", "standardize", "batchnorm", 2), "seed": s, "lr": 0.5, "diverged": False, "grid": True,
                  "train_mode_loss": 1.0, "test_mode_loss": 100.0},
                 {**base, "lr": 0.5, "diverged": diverged, "train_mode_loss": a, "test_mode_loss": b}]
    variants = pd.DataFrame([{**ids("a", "batchnorm", "none", 2), "best_lr": 0.5},
                             {**ids("a", "standardize", "batchnorm", 2), "best_lr": 0.5}])
    return pd.DataFrame(rows), variants


@pytest.mark.parametrize(("train", "test", "outcome"), [
    ([1.0, 1.0], [1.4999, 1.2], "all"),
    ([1.0, 1.0], [1.5, 1.2], "none"),
    ([1.5, 1.0], [1.0, 1.0], "none"),  # either way round
    ([1.0, np.nan], [1.2, 1.2], "missing"),
])
def test_input_bn_mode_gap_claim(train, test, outcome):
    runs, variants = mode_runs(train, test)
    c = V.input_bn_mode_gap_claim(runs, variants)
    assert c.outcome == outcome and c.key == "input_bn_mode_gap" and c.group == "input_bn"
    assert c.cases[0].label == "a d2" and len(c.cases) == 1 and c.cases[0].numbers["best_lr"] == 0.5
    assert c.cases[0].numbers["test_mode_loss"] == np.median(test)
    if outcome == "all":
        assert "stayed within 1.5x of each other in all 1 dataset/depth cases" in c.sentence
    elif outcome == "none":
        assert "1.5x or more apart (for at least one seed)" in c.sentence and "the quoted caveat bites" in c.sentence


def test_input_bn_mode_gap_claim_without_its_tables():
    runs, variants = mode_runs([1.0], [1.0], diverged=True)
    assert V.input_bn_mode_gap_claim(runs, variants).cases[0].holds is None  # a diverged run decides nothing
    for args in ((runs, None), (runs[runs["input"] != "batchnorm"], variants), (runs.drop(columns="test_mode_loss"),
                                                                               variants)):
        c = V.input_bn_mode_gap_claim(*args)
        assert c.outcome == "missing" and "were not measured" in c.sentence


# ----------------------------------------------------------------------------------- all claims, report

@pytest.fixture
def full_tables():
    li = pd.concat([layer_inputs({"none": [3.0] * 3, "batchnorm": [1.0] * 3}, metric=m, checkpoint=c,
                                 distractors=False)
                    for m in (V.SPREAD_METRIC, "eff_cond", "cov_eff_cond") for c in ("init", "matched", "end")]
                   + [layer_inputs({"none": [3.0] * 3, "layernorm": [2.5] * 3}, checkpoint=c, distractors=False)
                      for c in ("init", "matched", "end")]
                   + [layer1_table(50.0, 1.0)])
    vs = variant_seeds({"none": {"max_stable_lr": [0.5], "max_stable_lr_upper": [0.55], "final_train_loss": [0.1],
                                 "test_accuracy": [0.9], "steps_to_case_target": [np.nan], "case_target": [0.2],
                                 "loss_at_10pct": [1.0], "loss_at_30pct": [0.5]},
                        "batchnorm": {"max_stable_lr": [3.0], "max_stable_lr_upper": [3.3],
                                      "final_train_loss": [0.001], "test_accuracy": [0.95],
                                      "steps_to_case_target": [60.0], "case_target": [0.2], "loss_at_10pct": [0.1],
                                      "loss_at_30pct": [0.05]}})
    # its distractors hold the new arms: layer norm stable up to 100 (2x without it), raw inputs with BN at a
    # final loss 1e3 (clearly worse than standardized), BN on the inputs at 1e-6 (as good as standardized)
    _, runs = large_lr_tables([1.0], [0.1])
    mode, variants = mode_runs([1.0], [1.2])
    training = pd.DataFrame([{**ids("a", "standardize", "none", 2), "lr": 0.5, "seed": 0, "step": 99,
                              "train_loss": 0.1}])
    contours = pd.concat([lecture_table(50.0, 1.2).query("depth != 0"),
                          hidden_slice_table([3.0] * 3, [1.0] * 3, "end").query("depth != 0 and scope != 'layer1'"),
                          slide_table(50.0, 1.0).query("depth == 0"),
                          converse_slices(4.0, 1.0).query("checkpoint == 'end'")], ignore_index=True)
    smooth = pd.concat([smoothness_table(2.0, 1.0, arm, checkpoint=c, distractors=False)
                        for arm in ("batchnorm", "layernorm")
                        for c in ("matched", "end")], ignore_index=True)
    return {"layer_inputs": li, "variant_seeds": vs,
            "runs": pd.concat([runs, mode[mode["input"] == "batchnorm"]], ignore_index=True),
            "training": training, "variants": variants, "smoothness": smooth,
            "curvature": curvature_table([1.0, 4.0, 1.0], [1.0, 1.0, 1.0], "end"), "contours": contours,
            "gradients": gradients_table([1.0, 3.0, 1.0], [1.0, 1.0, 1.0])}


def test_claims_by_question_covers_q1_to_q5(full_tables):
    by_q = V.claims_by_question(full_tables)
    assert list(by_q) == ["q1", "q2", "q3", "q4", "q5"]
    keys = {q: [c.key for c in cs] for q, cs in by_q.items()}
    assert keys["q1"] == ["layer_sharpness_init", "layer_sharpness_early", "layer_sharpness_matched",
                          "layer_sharpness_end"]  # the distractors hold every checkpoint
    assert keys["q2"] == ["slide", "input_scales", "lecture_slice_init", "lecture_slice_early", "lecture_slice_matched",
                          "lecture_slice_end"]  # the slide first
    assert keys["q3"][:3] == ["hidden_spread_init", "input_conditioning_init", "input_cov_conditioning_init"]
    assert "hidden_spread_matched" in keys["q3"] and "hidden_slice_matched" in keys["q3"]
    assert keys["q3"][-11:-8] == ["hidden_spread_layernorm_init", "hidden_spread_layernorm_matched",
                                  "hidden_spread_layernorm_end"]
    assert keys["q3"][-8:] == [
        f"smoothness_{m}_{arm}_{c}" for arm in ("batchnorm", "layernorm") for m in ("beta", "loss")
        for c in ("matched", "end")]
    assert keys["q4"] == ["gradient_spread_end"]
    assert keys["q5"] == ["learning_rate", "large_lr_outcome", "outcome_best_lr", "steps_to_case_target",
                          "loss_after_budget_10pct", "loss_after_budget_30pct", "learning_rate_layernorm",
                          "converse_outcome_none", "converse_outcome_batchnorm", "converse_slice_init",
                          "converse_slice_end", "input_bn_outcome", "input_bn_slice_init", "input_bn_slice_end",
                          "input_bn_mode_gap"]
    claims = {c.key: c for c in V.all_claims(full_tables)}
    for key in ("layer_sharpness_end", "input_scales", "lecture_slice_init", "hidden_spread_matched",
                "input_cov_conditioning_end", "hidden_slice_end", "gradient_spread_end", "learning_rate",
                "large_lr_outcome", "outcome_best_lr", "steps_to_case_target", "loss_after_budget_30pct", "slide",
                "learning_rate_layernorm", "smoothness_beta_batchnorm_end", "smoothness_loss_layernorm_matched",
                "converse_outcome_batchnorm", "converse_slice_end", "input_bn_outcome", "input_bn_mode_gap"):
        assert claims[key].outcome == "all", (key, claims[key].sentence)
    assert claims["hidden_spread_layernorm_end"].outcome == "none"  # 3 / 2.5 < 1.5
    # the summary at the top opens with the slide
    summary = V.summary(by_q)
    assert summary[0] == ("q2", claims["slide"]) and len(summary) == sum(len(cs) for cs in by_q.values())
    assert [c.key for _, c in summary[1:5]] == keys["q1"]
    # the smallest grid LR and the steps of the runs come from runs.csv and training.csv
    assert claims["steps_to_case_target"].cases[0].seeds == {0: True}  # never: [99, inf) >= 1.5 x 60
    late = dict(full_tables, training=full_tables["training"].assign(step=80))
    assert V.claims_by_question(late)["q5"][3].cases[0].holds is None
    # no stable LR without BN: in [0, 1.0], 1.0 the smallest grid LR of runs.csv (refinement LRs left out)
    vs = full_tables["variant_seeds"].copy()
    no_bn = (vs["variant"] == "standardize-none-d2")
    vs.loc[no_bn, ["max_stable_lr", "max_stable_lr_upper"]] = np.nan
    runs = full_tables["runs"].query("input != 'batchnorm'")
    runs = pd.concat([runs, runs.iloc[:1].assign(lr=0.01, grid=False)])
    lr = V.claims_by_question(dict(full_tables, variant_seeds=vs, runs=runs))["q5"][0]
    assert lr.cases[0].holds is True
    lr = V.claims_by_question(dict(full_tables, variant_seeds=vs.assign(max_stable_lr=lambda d: np.where(
        no_bn, np.nan, 1.9)), runs=runs))["q5"][0]
    assert lr.cases[0].holds is None  # BN at 1.9 < 2 x 1.0; it would hold against the refinement LR 0.01


def only(tables: dict, keep) -> dict:
    """The tables with only the rows whose (input, norm, depth) ``keep`` accepts."""
    return {k: v[[keep(i, n, d) for i, n, d in zip(v["input"], v["norm"], v["depth"], strict=True)]]
            for k, v in tables.items()}


def test_a_study_of_depth_0_only_says_there_is_no_deeper_layer(full_tables):
    li = layer1_table(50.0, 1.0).query("norm == 'none'").assign(depth=0)
    li["variant"] = li["input"] + "-none-d0"
    t = only(dict(full_tables, layer_inputs=li), lambda i, n, d: d == 0)
    assert len(t["layer_inputs"]) and len(t["contours"])
    by_q = V.claims_by_question(t)  # no crash
    keys = {q: [c.key for c in cs] for q, cs in by_q.items()}
    assert keys["q1"] == ["layer_sharpness_init"] and keys["q4"] == ["gradient_spread_end"]
    assert keys["q3"] == ["hidden_spread_init", "input_conditioning_init", "input_cov_conditioning_init",
                          "hidden_slice_init"]
    for c in by_q["q1"] + by_q["q3"] + by_q["q4"]:
        assert c.outcome == "missing" and "no deeper layer: every model of this study has depth 0" in c.sentence
    assert keys["q2"] == ["slide", "input_scales"] and by_q["q2"][0].outcome == "all"
    assert keys["q5"] == ["input_bn_outcome", "input_bn_slice_init", "input_bn_slice_end", "input_bn_mode_gap"]
    assert all(c.sentence for c in V.all_claims(t))


def test_a_study_of_layernorm_only_has_no_bn_claim(full_tables):
    t = only(full_tables, lambda i, n, d: n == "layernorm" or (d == 0 and i != "batchnorm") or
             (n == "none" and i != "batchnorm"))
    claims = V.all_claims(t)  # no crash
    keys = [c.key for c in claims]
    assert keys and not [k for k in keys if not (k.startswith(("slide", "input_scales", "lecture_slice"))
                                                 or "layernorm" in k)], keys
    assert "learning_rate_layernorm" in keys and "hidden_spread_layernorm_end" in keys
    # without the arm without normalization, the layer-norm claims say what is missing
    alone = only(full_tables, lambda i, n, d: n == "layernorm")
    for c in V.all_claims(alone):
        assert c.outcome == "missing" and c.sentence, c.key


def render_claims(by_question: dict) -> str:
    """The report's template rendered with these claims and nothing else."""
    return R.render_html(
        divergence={}, divergence_factor=1000.0, runs_per_variant={}, title="t", answer=V.summary(by_question),
        by_question=by_question, questions=V.QUESTIONS, edge=pd.DataFrame(), datasets=[], provenance={},
        variants=pd.DataFrame(), figures={},
        methods={"versions": {}, "commit": "x", "python": "3", "config": "", "wall": []})


def test_report_claim_block_shows_seeds_range_comparison_and_flips():
    li = pd.concat([layer_inputs({"none": {0: [3.0] * 3, 1: [4.0] * 3}, "batchnorm": [1.0] * 3}, seeds=(0, 1),
                                 checkpoint="matched"),
                    layer_inputs({"none": {0: [3.0] * 3, 1: [np.nan] * 3}, "batchnorm": [1.0] * 3}, seeds=(0, 1),
                                 dataset="b", checkpoint="matched")])
    html = render_claims({q: [V.hidden_spread_claim(li, "matched")] if q == "q3" else [] for q in V.QUESTIONS})
    assert "BN puts them back on one scale, in all 1 dataset/depth cases" in html
    assert "Comparison: checkpoint matched (at matched training loss)." in html
    assert ("<th>seeds for which it held</th><th>spread without BN / with BN (range over seeds)</th>"
            "<th class=\"l\">holds?</th>") in html
    assert "<td>2 of 2 seeds</td><td>3 to 4</td><td class=\"l\">yes</td>" in html
    assert "<td>1 of 2 seeds</td><td>3</td><td class=\"l\">undecided: undecided for seed 1</td>" in html
    lr = V.learning_rate_claim(lr_table((1.0, 1.125), (1.5, 1.75)), lr_min=0.01)
    html = render_claims({q: [lr] if q == "q5" else [] for q in V.QUESTIONS})
    assert "did not raise the largest stable learning rate 2-fold in any of the 1" in html
    assert "<td>0 of 1 seed</td><td>1.5</td><td class=\"l\">no</td>" in html
    assert "Comparison: training runs: the refined largest stable learning rate of each arm." in html

"""Each claim's sentence is chosen by its rule: synthetic tables make the rule hold, fail, or hold for
some cases only, and the sentence must flip with it."""

import numpy as np
import pandas as pd
import pytest

from normlab import verdict as V


def ids(dataset, input_, norm, depth):
    return {"dataset": dataset, "variant": f"{input_}-{norm}-d{depth}", "input": input_, "norm": norm, "depth": depth}


def layer_inputs(spread_none, spread_bn, checkpoint="end", datasets=("a",)):
    rows = []
    for ds in datasets:
        for inp in ("raw", "standardize"):
            for norm, spread in (("none", spread_none), ("batchnorm", spread_bn)):
                for layer in (1, 2, 3):
                    value = (1000.0 if inp == "raw" else 1.0) if layer == 1 else spread
                    for tag in ("init", checkpoint):
                        rows.append({**ids(ds, inp, norm, 2), "run": "best", "checkpoint": tag, "layer": layer,
                                     "metric": "rms_spread", "value": value})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("none", "bn", "outcome"), [(10.0, 2.0, "all"), (2.0, 2.0, "none")])
def test_hidden_spread_claim_flips(none, bn, outcome):
    c = V.hidden_spread_claim(layer_inputs(none, bn), "end")
    assert c.outcome == outcome
    assert c.cases[0].numbers == {"spread_no_bn": none, "spread_bn": bn}
    if outcome == "all":
        assert "BN puts them back on one scale, in all 1 dataset/depth cases" in c.sentence
    else:
        assert "BN did not make the deeper layers' input scales more uniform in any of the 1" in c.sentence


def test_mixed_outcome_names_the_failing_case():
    li = pd.concat([layer_inputs(10.0, 2.0, datasets=("a",)), layer_inputs(2.0, 2.0, datasets=("b",))])
    c = V.hidden_spread_claim(li, "end")
    assert c.outcome == "mixed" and c.n_holds == 1 and c.n_cases == 2
    assert "in 1 of 2 dataset/depth cases; not in: b d2." in c.sentence


def test_input_scale_claim():
    c = V.input_scale_claim(layer_inputs(1.0, 1.0))
    assert c.outcome == "all" and "every dataset (1 of 1)" in c.sentence
    li = layer_inputs(1.0, 1.0)
    li.loc[(li["layer"] == 1) & (li["input"] == "standardize"), "value"] = 5.0
    assert V.input_scale_claim(li).outcome == "none"


def variants_table(lr_none, lr_bn, steps_none=100.0, steps_bn=50.0):
    rows = []
    for norm, lr, steps in (("none", lr_none, steps_none), ("batchnorm", lr_bn, steps_bn)):
        rows.append({**ids("a", "standardize", norm, 4), "max_stable_lr": lr, "steps_to_target_median": steps})
    return pd.DataFrame(rows)


def test_learning_rate_claim_flips_and_is_undecided_when_censored():
    assert V.learning_rate_claim(variants_table(0.1, 1.0), lr_max=10.0).outcome == "all"
    assert V.learning_rate_claim(variants_table(0.1, 0.1), lr_max=10.0).outcome == "none"
    no_stable = V.learning_rate_claim(variants_table(np.nan, 0.1), lr_max=10.0)
    assert no_stable.outcome == "all"  # no stable LR without BN counts as 0
    censored = V.learning_rate_claim(variants_table(10.0, 10.0), lr_max=10.0)
    assert censored.outcome == "missing" and "largest learning rate tried" in censored.sentence
    assert "no pair" in V.learning_rate_claim(variants_table(0.1, 1.0).iloc[:0], lr_max=10.0).sentence


def test_steps_claim_flips():
    assert V.steps_claim(variants_table(1, 1, 100.0, 50.0)).outcome == "all"
    assert V.steps_claim(variants_table(1, 1, 60.0, 50.0)).outcome == "none"
    assert V.steps_claim(variants_table(1, 1, np.nan, 50.0)).outcome == "all"  # never reached without BN
    assert V.steps_claim(variants_table(1, 1, np.nan, np.nan)).outcome == "missing"


def contours_table(raw, std, checkpoint="init"):
    rows = [{**ids("a", inp, "none", 2), "run": "best", "checkpoint": checkpoint, "slice": "lecture",
             "scope": "layer1", "axis_ratio_ggn": r} for inp, r in (("raw", raw), ("standardize", std))]
    return pd.DataFrame(rows)


def test_lecture_slice_claim_flips():
    c = V.lecture_slice_claim(contours_table(900.0, 1.1))
    assert c.outcome == "all" and c.sentence.startswith("At initialization, the lecture's picture")
    assert V.lecture_slice_claim(contours_table(3.0, 2.9)).outcome == "none"
    assert V.lecture_slice_claim(contours_table(900.0, 3.0)).outcome == "none"  # standardized not near round


def curvature_table(spread_none, spread_bn):
    rows = []
    for norm, spread in (("none", spread_none), ("batchnorm", spread_bn)):
        for layer, value in ((1, 1.0), (2, spread), (3, 2.0)):
            rows.append({**ids("a", "standardize", norm, 2), "run": "best", "checkpoint": "end",
                         "scope": f"layer{layer}", "matrix": "ggn", "metric": "lambda_max", "value": value})
    return pd.DataFrame(rows)


def test_layer_sharpness_claim_flips():
    c = V.layer_sharpness_claim(curvature_table(30.0, 2.0))
    assert c.outcome == "all" and c.cases[0].numbers["layer_sharpness_spread_no_bn"] == 30.0
    assert c.cases[0].numbers["layer_sharpness_spread_bn"] == 2.0
    assert V.layer_sharpness_claim(curvature_table(2.0, 2.0)).outcome == "none"


def test_gradient_spread_claim_flips():
    def grads(vals_none, vals_bn):
        rows = []
        for norm, vals in (("none", vals_none), ("batchnorm", vals_bn)):
            for layer, v in enumerate(vals, start=1):
                rows.append({**ids("a", "standardize", norm, 2), "run": "best", "step": 100, "layer": layer,
                             "metric": "relative_grad_norm", "value": v})
        return pd.DataFrame(rows)

    assert V.gradient_spread_claim(grads([1.0, 10.0, 1.0], [1.0, 2.0, 1.0])).outcome == "all"
    assert V.gradient_spread_claim(grads([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])).outcome == "none"


def test_claims_by_question_covers_q1_to_q5():
    t = {"layer_inputs": layer_inputs(10.0, 2.0), "variants": variants_table(0.1, 1.0),
         "runs": pd.DataFrame({"lr": [0.1, 10.0]}), "curvature": curvature_table(30.0, 2.0),
         "contours": contours_table(900.0, 1.1),
         "gradients": pd.DataFrame([{**ids("a", "standardize", n, 2), "run": "best", "step": 1, "layer": 1,
                                     "metric": "relative_grad_norm", "value": 1.0} for n in ("none", "batchnorm")])}
    by_q = V.claims_by_question(t)
    assert list(by_q) == ["q1", "q2", "q3", "q4", "q5"]
    assert all(by_q[q] for q in by_q)


def test_edge_of_stability_ratio():
    cv = pd.DataFrame([{**ids("a", "standardize", "none", 2), "run": "best", "lr": 0.5, "checkpoint": "end",
                        "scope": "model", "matrix": "hessian", "metric": "lambda_max", "value": 3.0},
                       {**ids("a", "standardize", "none", 2), "run": "best", "lr": 0.5, "checkpoint": "init",
                        "scope": "model", "matrix": "hessian", "metric": "lambda_max", "value": 99.0}])
    eos = V.edge_of_stability(cv)
    assert len(eos) == 1
    assert eos.loc[0, "two_over_lr"] == 4.0 and eos.loc[0, "ratio"] == pytest.approx(0.75)

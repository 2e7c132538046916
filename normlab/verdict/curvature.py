"""Claims and tables on curvature and smoothness: the per-layer sharpness (Q1), the end-of-training
sharpness against 2 / lr (Q5), smoothness along the gradient (Q3, Santurkar et al. 2018) and the effective
learning rate of scale-invariant weights.

Scale invariance. Under BN a hidden unit's incoming weights w are scale-invariant (J(c w) = J(w)), under
LN a hidden layer's (W, b) together: the gradient along such a group scales as 1/||w|| and the curvature as
1/||w||^2, so plain sharpness and plain beta-smoothness fall as the weights grow, for free. Every claim
here that compares a normalized arm's sharpness or smoothness therefore reads its scale-invariant
counterpart (``*_invariant``: measured in units of each group's norm, S = diag of the group norms); the
arm without a normalization layer has no invariant weights and keeps the plain value."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.verdict.core import (
    LAYER_SHARPNESS_RATIO,
    NORMALIZED,
    PHASE,
    SMOOTH_RATIO,
    Claim,
    _arm_names,
    _at_least,
    _by_case_and_seed,
    _case,
    _compared,
    _median,
    _networks,
    _no_hidden_layer,
    _num,
    _point,
    _ratio,
    _ratio_claim_cases,
    _spread,
    no_deeper_layer_sentence,
)


def _invariant_where_present(d: pd.DataFrame, arms=NORMALIZED, plain: str = "ggn",
                             invariant: str = "ggn_invariant") -> tuple[pd.DataFrame, int]:
    """The rows of ``d`` a sharpness comparison reads: the arm without normalization, matrix ``plain``; a
    normalized arm (``arms``), matrix ``invariant`` where the table has it for that (dataset, variant, seed,
    run, checkpoint, scope) and ``plain`` elsewhere (a scope without scale-invariant weights, e.g. the output
    layer, where S = 1 and both are one number). Also the number of invariant rows used."""
    arms = (arms,) if isinstance(arms, str) else tuple(arms)
    none = d[(d["norm"] == "none") & (d["matrix"] == plain)]
    normed = d[d["norm"].isin(arms)]
    inv = normed[normed["matrix"] == invariant]
    keys = [k for k in ("dataset", "variant", "seed", "run", "checkpoint", "scope") if k in d]
    have = set(map(tuple, inv[keys].itertuples(index=False)))
    plain_rows = normed[normed["matrix"] == plain]
    plain_rows = plain_rows[[tuple(k) not in have for k in plain_rows[keys].itertuples(index=False)]]
    return pd.concat([none, inv, plain_rows]), len(inv)


def comparable_sharpness(curvature: pd.DataFrame) -> pd.DataFrame:
    """The per-layer and whole-model Gauss-Newton sharpness that compares across arms: for a normalized
    variant the scale-invariant ``ggn_invariant`` rows where the table has them (``ggn`` for a scope without
    invariant weights), for the others ``ggn``; the rows keep their columns (``matrix`` says which)."""
    return _invariant_where_present(curvature[curvature["matrix"].isin(("ggn", "ggn_invariant"))])[0]


def layer_sharpness_claim(curvature: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule (Q1): with standardized inputs, the spread over layers (max / min over l) of the top
    Gauss-Newton eigenvalue of layer l's own (W[l], b[l]) block is >= LAYER_SHARPNESS_RATIO x larger
    without BN than with BN (best-LR run, given checkpoint), every seed. With BN, a hidden layer's value
    is the scale-invariant lambda_max(S G S) (``ggn_invariant``: S the norms of each unit's incoming
    weights), the output layer's (no invariant weights) the plain one; without BN the plain one."""
    c = curvature
    d = c[(c["metric"] == "lambda_max") & c["scope"].str.startswith("layer") & (c["run"] == "best")
          & (c["checkpoint"] == checkpoint) & c["matrix"].isin(("ggn", "ggn_invariant"))]
    d, n_invariant = _invariant_where_present(_compared(d), "batchnorm")
    cases = _ratio_claim_cases(_by_case_and_seed(d, _spread), LAYER_SHARPNESS_RATIO,
                               ("layer_sharpness_spread_no_bn", "layer_sharpness_spread_bn"))
    if n_invariant:
        notes = [f"With BN, the hidden layers' sharpness is the scale-invariant lambda_max(S G S) ({n_invariant} "
                 "layer values; S = the norm of each unit's incoming weights, whose plain curvature falls as "
                 "1/||w||^2 as they grow), the output layer's the plain lambda_max (it has no scale-invariant "
                 "weights); without BN the plain lambda_max."]
    elif any(c.seeds for c in cases):
        notes = ["The table has no scale-invariant lambda_max (ggn_invariant) for BN: the plain one is compared, "
                 "which flatters BN as its weights grow."]
    else:
        notes = []
    phase = PHASE[checkpoint]
    return Claim(
        f"layer_sharpness_{checkpoint}", f"checkpoint {checkpoint}, standardized inputs: spread over layers of "
        f"the per-layer Gauss-Newton lambda_max (with BN: scale-invariant lambda_max(S G S) of each hidden layer) "
        f"without BN >= {LAYER_SHARPNESS_RATIO} x with BN, every seed", cases,
        {"all": phase + ", J is much sharper along some layers' weights than others without BN, and "
                "BN evens out the per-layer sharpness, in all {n} dataset/depth cases.",
         "none": phase + ", BN did not even out the per-layer sharpness of J in any of the {n} "
                 "dataset/depth cases.",
         "mixed": phase + ", BN evened out the per-layer sharpness of J in {k} of {n} dataset/depth "
                  "cases; not in: {failing}.",
         "missing": (no_deeper_layer_sentence(phase) if _no_hidden_layer(curvature)
                     else phase + ", per-layer curvature was not measured.")},
        comparison=checkpoint, notes=notes, rule_key="layer_sharpness",
        effect="sharpness spread without BN / with BN")


def edge_of_stability(curvature: pd.DataFrame) -> pd.DataFrame:
    """Sharpness at the end of training against the stability limit of gradient descent: per dataset and
    variant, the best-LR run's whole-model Hessian lambda_max at checkpoint ``end`` (median over seeds),
    2 / lr, and the ratio lambda_max * lr / 2 (about 1: training sits at the edge of stability; well
    below 1: it does not), its median, min and max over seeds; for a normalized variant also the
    scale-invariant lambda_max(S H S) (``hessian_invariant``, median over seeds; NaN without a
    normalization layer), the sharpness that compares across arms. Columns dataset, variant, lr,
    lambda_max, two_over_lr, ratio, ratio_min, ratio_max, n_seeds, lambda_max_invariant; empty if not
    measured."""
    base = curvature[(curvature["run"] == "best") & (curvature["checkpoint"] == "end")
                     & (curvature["scope"] == "model") & (curvature["metric"] == "lambda_max")]
    d = base[base["matrix"] == "hessian"]
    d = d.assign(ratio=d["value"] * d["lr"] / 2.0)
    out = d.groupby(["dataset", "variant"], sort=True).agg(
        lr=("lr", "median"), lambda_max=("value", "median"), ratio=("ratio", "median"), ratio_min=("ratio", "min"),
        ratio_max=("ratio", "max"), n_seeds=("seed", "nunique")).reset_index()
    out.insert(4, "two_over_lr", 2.0 / out["lr"])
    inv = base[(base["matrix"] == "hessian_invariant") & base["norm"].isin(NORMALIZED)]
    inv = inv.groupby(["dataset", "variant"])["value"].median().rename("lambda_max_invariant")
    return out.merge(inv.reset_index(), on=["dataset", "variant"], how="left") if len(out) else \
        out.assign(lambda_max_invariant=pd.Series(dtype=float))


SMOOTHNESS_METRICS = {"beta": ("beta_max", "beta_invariant_max"), "loss": ("loss_range", "loss_range")}


def _smoothness_interval(metric_of: dict):
    """value_of for ``_by_case_and_seed``: one arm's (variant's) and seed's rows at step_size NaN -> the
    interval of its metric (``metric_of[norm]``); a variant with a non-finite step (``nonfinite_steps`` > 0:
    the loss or gradient left the finite range along the gradient) is rougher than any finite value:
    [inf, inf]."""
    def value_of(g: pd.DataFrame):
        nonfinite = g.loc[g["metric"] == "nonfinite_steps", "value"]
        if len(nonfinite) and float(nonfinite.iloc[0]) > 0:
            return np.inf, np.inf
        v = g.loc[g["metric"] == metric_of[g["norm"].iloc[0]], "value"]
        return _point(v.iloc[0]) if len(v) else (np.nan, np.nan)
    return value_of


def smoothness_claim(smoothness: pd.DataFrame, arm: str = "batchnorm", metric: str = "beta",
                     checkpoint: str = "end") -> Claim:
    """Rule (Q3, Santurkar et al.): at the common-LR run (the same learning rate for both arms), given
    checkpoint, with standardized inputs, the smoothness along the gradient without a normalization layer
    is >= SMOOTH_RATIO x rougher than with ``arm``, every seed. ``metric`` ``beta``: beta_max (the largest
    ||g(theta') - g|| / ||theta' - theta|| over steps theta' = theta - c lr g, c in the configured step
    multipliers) without, against beta_invariant_max with the arm (the same in units of each invariant
    group's norm: raw beta flatters scale-invariant weights as they grow). ``loss``: loss_range (max - min of
    J over c = 0 and the step multipliers) of each. A step whose loss or gradient is not finite makes its
    variant infinitely rough (two such: undecided)."""
    A, a, _ = _arm_names(arm)
    none_metric, arm_metric = SMOOTHNESS_METRICS[metric]
    s = smoothness
    d = _compared(s[(s["run"] == "common") & (s["checkpoint"] == checkpoint) & s["step_size"].isna()], arm)
    pairs = _by_case_and_seed(d, _smoothness_interval({"none": none_metric, arm: arm_metric}), arms=("none", arm))
    cases = []
    for key, per in pairs.items():
        decided = {s_: (_at_least(x, y, SMOOTH_RATIO), _ratio(x[0], y[0])) for s_, (x, y) in per.items()}
        numbers = {f"{none_metric}_no_{a}": _median(x[0] for x, _ in per.values()),
                   f"{arm_metric}_{a}": _median(y[0] for _, y in per.values())}
        cases.append(_case(key, decided, numbers))
    notes = []
    if metric == "beta":
        raw = d[(d["norm"] == arm) & (d["metric"] == "beta_max")]
        inv = d[(d["norm"] == arm) & (d["metric"] == "beta_invariant_max")]
        both = raw.merge(inv, on=["dataset", "variant", "seed"], suffixes=("_raw", "_inv"))
        flatter = _median(_ratio(r, i) for r, i in zip(both["value_raw"], both["value_inv"], strict=True))
        for c in cases:
            rows = both[(both["dataset"] == c.dataset) & (both["depth_raw"] == c.depth)]
            c.numbers[f"beta_max_{a}_raw"] = _median(rows["value_raw"])
        if not np.isnan(flatter):
            notes.append(f"{A}'s raw beta_max is not what is compared: for scale-invariant weights the gradient "
                         f"scales as 1/||w|| and the curvature as 1/||w||^2, so the raw number flatters {A} as its "
                         f"weights grow; here {A}'s raw beta_max was {_num(flatter)} x its scale-invariant value "
                         "(median over cases and seeds).")
    phase = PHASE[checkpoint]
    lead = phase + ", at the common learning rate with standardized inputs, "
    if metric == "beta":
        what = (f"beta_max without {A} >= {SMOOTH_RATIO} x beta_invariant_max with {A} (a non-finite step: "
                "infinitely rough)")
        all_ = (lead + f"the gradient changes faster along the gradient without {A} than with it (beta-smoothness "
                f">= {SMOOTH_RATIO:g}x {A}'s scale-invariant one) in all {{n}} dataset/depth cases: {A} makes the "
                "landscape smoother in Santurkar et al.'s sense.")
        none = (lead + f"{A}'s scale-invariant beta-smoothness was not {SMOOTH_RATIO:g}x below the one without "
                f"{A} in any of the {{n}} dataset/depth cases: by this measure {A} did not make the landscape "
                "smoother.")
        mixed = (lead + f"{A} made the gradient change at least {SMOOTH_RATIO:g}x more slowly along the gradient "
                 "(scale-invariant beta-smoothness) in {k} of {n} dataset/depth cases; not in: {failing}.")
        effect = f"beta without {A} / with {A} (invariant)"
    else:
        what = (f"loss_range without {A} >= {SMOOTH_RATIO} x with {A} (a non-finite step: infinitely rough)")
        all_ = (lead + f"the loss varies more along the gradient without {A} than with it (its range over the "
                f"steps >= {SMOOTH_RATIO:g}x) in all {{n}} dataset/depth cases.")
        none = (lead + f"the loss did not vary {SMOOTH_RATIO:g}x more along the gradient without {A} than with it "
                "in any of the {n} dataset/depth cases.")
        mixed = (lead + f"the loss varied at least {SMOOTH_RATIO:g}x more along the gradient without {A} than "
                 "with it in {k} of {n} dataset/depth cases; not in: {failing}.")
        effect = f"loss range without {A} / with {A}"
    missing = (no_deeper_layer_sentence(phase) if _no_hidden_layer(smoothness) else
               phase + f", smoothness along the gradient was not measured at the common learning rate for a pair "
               f"of standardized variants without and with {A}.")
    return Claim(
        f"smoothness_{metric}_{arm}_{checkpoint}", f"checkpoint {checkpoint}, common-LR run (the same learning rate "
        f"for both arms), standardized inputs, steps c x lr x g along the gradient: {what}, every seed", cases,
        {"all": all_, "none": none, "mixed": mixed, "missing": missing},
        comparison=checkpoint, notes=notes, rule_key=f"smoothness_{metric}", effect=effect, group="smoothness")


def effective_lr_table(gradients: pd.DataFrame) -> pd.DataFrame:
    """The effective learning rate of scale-invariant weights: per dataset, normalized variant (BN or LN,
    depth >= 1) and analysed run (common, best), at each seed's last evaluation step, ``effective_lr`` =
    lr / ||w||^2 of the hidden layers that have invariant groups (``weight_norm``: the RMS over the
    layer's groups of the group's norm), median over those layers and seeds (``effective_lr``, and its
    ``effective_lr_min``, ``effective_lr_max`` over them), ``ratio`` = that median / lr, and the median
    ``weight_norm`` of those layers at the first and the last evaluation step. Empty when not measured."""
    columns = ["dataset", "variant", "run", "lr", "effective_lr", "effective_lr_min", "effective_lr_max", "ratio",
               "weight_norm_init", "weight_norm_end", "n_seeds"]
    g = gradients[gradients["metric"].isin(("effective_lr", "weight_norm"))]
    g = _networks(g)[lambda x: x["norm"].isin(NORMALIZED)]
    if not len(g):
        return pd.DataFrame(columns=columns)
    run_keys = ["dataset", "variant", "run", "seed"]
    last = g[g["step"] == g.groupby(run_keys)["step"].transform("max")]
    first = g[g["step"] == g.groupby(run_keys)["step"].transform("min")]
    eff = last[(last["metric"] == "effective_lr") & np.isfinite(last["value"].to_numpy(float))]
    layers = eff[[*run_keys, "layer"]]
    wn = lambda rows: rows[rows["metric"] == "weight_norm"].merge(layers, on=[*run_keys, "layer"])  # noqa: E731
    out = []
    for (ds, variant, run), e in eff.groupby(["dataset", "variant", "run"], sort=True):
        sel = lambda rows: rows[(rows["dataset"] == ds) & (rows["variant"] == variant) & (rows["run"] == run)]  # noqa: E731,B023
        lr = float(e["lr"].median())
        med = float(e["value"].median())
        out.append({"dataset": ds, "variant": variant, "run": run, "lr": lr, "effective_lr": med,
                    "effective_lr_min": float(e["value"].min()), "effective_lr_max": float(e["value"].max()),
                    "ratio": _ratio(med, lr), "weight_norm_init": float(sel(wn(first))["value"].median()),
                    "weight_norm_end": float(sel(wn(last))["value"].median()), "n_seeds": int(e["seed"].nunique())})
    return pd.DataFrame(out, columns=columns)


def effective_lr_sentence(table: pd.DataFrame) -> str:
    """What the effective-LR table says, in one or two sentences with its ranges (empty when it is empty)."""
    if not len(table):
        return ""
    parts = []
    for run, words in (("best", "at each variant's best learning rate"), ("common", "at the common learning rate")):
        t = table[table["run"] == run]
        if not len(t):
            continue
        parts.append(f"{words}, lr / ||w||^2 was {_num(t['ratio'].min())} to {_num(t['ratio'].max())} times the "
                     f"nominal lr over the {len(t)} normalized variant{'s' if len(t) > 1 else ''} (their invariant "
                     f"weights' norms: median {_num(t['weight_norm_init'].median())} at the start, "
                     f"{_num(t['weight_norm_end'].median())} at the end)")
    return ("At the end of training, " + "; ".join(parts) + ". A scale-invariant group moves by lr / ||w||^2 "
            "per unit of its scale-free gradient: a ratio below 1 means its steps are smaller than lr suggests "
            "(its weights grew), above 1 larger.")

"""Claims on the contour slices (``contours.csv``, slice ``lecture``): the slide itself on the model with
no hidden layer (Q2, the report's headline), the layer-1 slice of the networks (Q2), the deeper layers'
slices without and with BN (Q3), and the layer-1 slice of the converse (raw inputs with BN) and of batch
norm on the inputs (Q5). Each compares the Gauss-Newton axis ratio of the slices per seed pair; censored
ratios lie in [bound, inf), flat and degenerate slices are left out (``core._slice_rows``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.verdict.core import (
    LECTURE_RATIO,
    LECTURE_ROUND,
    PHASE,
    SLICE_RATIO,
    Claim,
    _arm_label,
    _at_least,
    _by_case_and_seed,
    _case,
    _median,
    _negate,
    _networks,
    _no_hidden_layer,
    _num,
    _ratio,
    _slice_interval,
    _slice_rows,
    _standardized,
    no_deeper_layer_sentence,
    rescaled_axis_ratio,
)

LEFT_OUT_RULE = "censored ratios count as elongated; flat and degenerate slices left out"


def _lecture_rows(contours: pd.DataFrame, checkpoint: str, scope: str = "layer1") -> pd.DataFrame:
    c = contours
    return c[(c["slice"] == "lecture") & (c["scope"] == scope) & (c["run"] == "best") & (c["checkpoint"] == checkpoint)]


def _round_and_elongated(raw, std) -> bool | None:
    """The lecture rule on one seed's (raw, standardized) intervals: standardized < LECTURE_ROUND (its whole
    interval) and raw >= LECTURE_RATIO x standardized; a censored standardized ratio is not near round."""
    if np.isnan(std[0]) or np.isnan(raw[0]):
        return None
    if std[0] >= LECTURE_ROUND:
        return False
    if std[1] < LECTURE_ROUND:
        return _at_least(raw, std, LECTURE_RATIO)
    return None


def _pair_cases(d: pd.DataFrame, arms: tuple[str, str], decide, names: tuple[str, str], keys=("dataset", "depth"),
                arm_col: str = "arm") -> list:
    """Cases of a slice rule comparing arms[0] with arms[1] (values of ``arm_col``) per seed: decide(interval
    of arms[0], interval of arms[1]) -> True | False | None; the numbers are the median ratios over seeds
    (``names``) and how many seeds' medians were censored."""
    cases = []
    for key, per in _by_case_and_seed(d, _slice_interval, keys=keys, arm_col=arm_col, arms=arms).items():
        decided = {s: (decide(x, y), _ratio(x[0], y[0])) for s, (x, y) in per.items()}
        numbers = {names[0]: _median(x[0] for x, _ in per.values()), names[1]: _median(y[0] for _, y in per.values()),
                   f"censored_{names[0].removeprefix('ratio_')}": sum(bool(np.isinf(x[1])) for x, _ in per.values()),
                   f"censored_{names[1].removeprefix('ratio_')}": sum(bool(np.isinf(y[1])) for _, y in per.values())}
        cases.append(_case(key, decided, numbers))
    return cases


def _with_arm(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(arm=_arm_label(d))


def _ratio_text(case, name: str) -> str:
    """A case's median ratio for a sentence: '>= x' when some seed's value was censored."""
    censored = case.numbers.get(f"censored_{name.removeprefix('ratio_')}", 0)
    return (">= " if censored else "") + _num(case.numbers[name])


NAMED_CAUSES = 3  # the layer-1 sentence names the coupled cases when there are at most this many


def _elongation_causes(d: pd.DataFrame, cases: list) -> tuple[list, list]:
    """Why standardizing left a layer-1 slice elongated. Sets every case's ``coupling_standardized``: the
    median ``ggn_coupling`` c of its standardized slices (NaN when the table has no such column). Returns
    (coupled, unequal): the decided cases whose standardized slice is not near round (median ratio >=
    LECTURE_ROUND), as (case, c, rescaled_axis_ratio(c), their rows), split by whether
    ``rescaled_axis_ratio(c)`` (the roundest any rescaling of the two inputs reaches) is >= LECTURE_ROUND:
    then the coupling alone keeps the slice elongated; below it, the unequal curvature along the two
    weights does (at the slide's W = 0, the two inputs' unequal RMS). A case with a depth reads that depth's
    rows; a case of a dataset alone (the slide's), all of the dataset's."""
    coupled, unequal = [], []
    for c in cases:
        mask = (d["dataset"] == c.dataset) & (d["input"] == "standardize")
        g = d[mask] if c.depth is None else d[mask & (d["depth"] == c.depth)]
        coupling = _median(g["ggn_coupling"]) if "ggn_coupling" in g.columns else np.nan
        c.numbers["coupling_standardized"] = coupling
        if c.holds is None or np.isnan(coupling) or not c.numbers["ratio_standardized"] >= LECTURE_ROUND:
            continue
        best = rescaled_axis_ratio(coupling)
        (coupled if best >= LECTURE_ROUND else unequal).append((c, coupling, best, g))
    return coupled, unequal


def _slide_elongation(coupled: list, unequal: list) -> str:
    """The slide's sentence on why standardizing left it elongated, from ``_elongation_causes``, per
    dataset: the coupling c (at W = 0 the two inputs' uncentred correlation over the analysis set) and the
    bound it sets, or the two inputs' RMS on the analysis set and the ratio at equal scales. '' when none."""
    out = ""
    if coupled:
        out += (" Where standardizing left it elongated, the two inputs are correlated: no rescaling of them makes "
                "the slice rounder than sqrt((1 + c) / (1 - c)), c = |G12| / sqrt(G11 G22) of its Gauss-Newton matrix"
                " (at W = 0 their uncentred correlation over the analysis set); " + "; ".join(
                    f"{c.label}: c = {_num(x)}, so at least {_num(b)}" for c, x, b, _ in coupled) +
                ". Standardizing sets each feature's scale; it does not decorrelate the features.")
    if unequal:
        out += (" Where standardizing left it elongated with weakly correlated inputs, their scales differ on the "
                "analysis set, which the training split's statistics standardized: " + "; ".join(
                    f"{c.label}: RMS {_num(_median(g['rms_hi']))} and {_num(_median(g['rms_lo']))}, "
                    f"{_num(b)} at equal scales" for c, _, b, g in unequal) + ".")
    return out


def _lecture_elongation(d: pd.DataFrame, cases: list) -> str:
    """The networks' layer-1 sentence on why standardizing left slices elongated (``_elongation_causes``):
    in how many of those cases the coupling alone keeps the slice elongated (named, with c, when at most
    NAMED_CAUSES) and in how many the unequal curvature along the two weights does. '' when none."""
    coupled, unequal = _elongation_causes(d, cases)
    n = len(coupled) + len(unequal)
    if not n:
        return ""
    out = f" Of the {n} case{'s' if n > 1 else ''} where standardizing left the slice elongated"
    if coupled:
        named = ("; ".join(f"{c.label}: c = {_num(x)}, at least {_num(b)}" for c, x, b, _ in coupled)
                 if len(coupled) <= NAMED_CAUSES else f"median c = {_num(_median(x for _, x, _, _ in coupled))}")
        out += (f", in {len(coupled)} its two weights are so coupled that no rescaling of the two inputs could make "
                "it near round: the roundest is sqrt((1 + c) / (1 - c)), c = |G12| / sqrt(G11 G22) of its "
                f"Gauss-Newton matrix ({named})")
    if unequal:
        out += (f"{'; in' if coupled else ', in'} {len(unequal)} the curvature along its two weights differs, and "
                "equal curvature would make it near round")
    return out + "."


def slide_claim(contours: pd.DataFrame) -> Claim:
    """Rule (Q2, the headline): on the model with no hidden layer (depth 0, ``<input>-none-d0``: softmax or
    linear regression on the inputs, weights at zero at init), the layer-1 lecture slice at ``init`` (the
    slide's two weights) has GGN axis ratio < LECTURE_ROUND on standardized inputs and >= LECTURE_RATIO x
    that on raw inputs, per dataset and seed. There every p_ij = 1/k, so the slice's Gauss-Newton matrix
    is the inputs' second moment up to a constant: the slide, exactly. Censored and left-out slices as in
    ``lecture_slice_claim``. Where the standardized slide stays elongated, the sentence and ``reasons`` say
    why (``_elongation_causes``): the two inputs' correlation, or their unequal scales."""
    d = _lecture_rows(contours, "init")
    d, notes = _slice_rows(d[(d["depth"] == 0) & (d["norm"] == "none") & d["input"].isin(("raw", "standardize"))])
    cases = _pair_cases(d, ("raw", "standardize"), _round_and_elongated, ("ratio_raw", "ratio_standardized"),
                        keys=("dataset",), arm_col="input")
    numbers = "; ".join(f"{c.label}: {_ratio_text(c, 'ratio_raw')} raw against "
                        f"{_ratio_text(c, 'ratio_standardized')} standardized" for c in cases if c.holds is not None)
    numbers = f" (median axis ratio over seeds, 1 = round; {numbers})" if numbers else ""
    coupled, unequal = _elongation_causes(d, cases)
    why = _slide_elongation(coupled, unequal)
    reasons = {c.label: f"whose two standardized inputs are correlated, c = {_num(x)}" for c, x, _, _ in coupled}
    reasons |= {c.label: "whose two standardized inputs differ in scale on the analysis set" for c, *_ in unequal}
    lead = ("At initialization (W = 0), on the slide's own model (no hidden layer), the cost against the two weights "
            "of one output unit")
    return Claim(
        "slide", "checkpoint init, depth 0 (no hidden layer, W = 0), layer-1 lecture slice: GGN axis ratio "
        f"standardized < {LECTURE_ROUND} and raw >= {LECTURE_RATIO} x standardized, every seed ({LEFT_OUT_RULE})",
        cases,
        {"all": lead + " is elongated on raw inputs and near round on standardized inputs in every dataset ({n} of "
                "{n}): the lecture's slide, reproduced" + numbers + ".",
         "none": lead + " was not both elongated on raw inputs and near round on standardized inputs in any of the "
                 "{n} datasets: the slide was not reproduced" + numbers + "." + why,
         "mixed": lead + " is elongated on raw inputs and near round on standardized inputs, as on the slide, in "
                  "{k} of {n} datasets; not in: {failing}" + numbers + "." + why,
         "missing": "At initialization, the slide's own model (depth 0, no hidden layer) is not in this study "
                    "(add 0 to variants.depths), so the slide itself was not reproduced."},
        comparison="init", notes=notes, rule_key="slide", effect="axis ratio raw / standardized", group="slide",
        reasons=reasons)


def lecture_slice_claim(contours: pd.DataFrame, checkpoint: str = "init") -> Claim:
    """Rule (Q2): in the networks (depth >= 1) without normalization layers, the layer-1 lecture slice (the
    slide's two weights) has GGN axis ratio < LECTURE_ROUND on standardized inputs and >= LECTURE_RATIO x
    that on raw inputs (best-LR run, given checkpoint), per dataset, depth and seed. Censored ratios lie in
    [bound, inf): a censored raw ratio against a finite round standardized one holds; a censored
    standardized one is not near round. Flat and degenerate slices are left out (the claim's notes count
    them). Depth 0 is the slide's own claim (``slide_claim``); batch norm on the inputs is neither arm."""
    d = _lecture_rows(contours, checkpoint)
    d = _networks(d[(d["norm"] == "none") & d["input"].isin(("raw", "standardize"))])
    d, notes = _slice_rows(d)
    cases = _pair_cases(d, ("raw", "standardize"), _round_and_elongated, ("ratio_raw", "ratio_standardized"),
                        arm_col="input")
    phase = PHASE[checkpoint]
    why = _lecture_elongation(d, cases)
    return Claim(
        f"lecture_slice_{checkpoint}", f"checkpoint {checkpoint}, layer-1 lecture slice, networks (depth >= 1) "
        f"without normalization layers: GGN axis ratio standardized < {LECTURE_ROUND} and raw >= {LECTURE_RATIO} x "
        f"standardized, every seed ({LEFT_OUT_RULE})", cases,
        {"all": phase + ", the lecture's picture (the slice of J through two weights of layer 1) is "
                "elongated on raw inputs and near round on standardized inputs, in all {n} dataset/depth cases.",
         "none": phase + ", the layer-1 slice was not near round on standardized inputs (or not "
                 "clearly rounder than on raw inputs) in any of the {n} dataset/depth cases." + why,
         "mixed": phase + ", standardizing the inputs made the layer-1 slice near round in {k} of {n} "
                  "dataset/depth cases; not in: {failing}." + why,
         "missing": phase + ", the layer-1 lecture slices of the networks were not measured."},
        comparison=checkpoint, notes=notes, rule_key="lecture_slice",
        effect="axis ratio raw / standardized")


def hidden_slice_claim(contours: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule (Q3): with standardized inputs, the median over layers l >= 2 of the GGN axis ratio of the
    lecture slice (two incoming weights of one unit of layer l) without BN is >= SLICE_RATIO x the same
    with BN (best-LR run, given checkpoint), every seed. Censored ratios lie in [bound, inf) (two censored
    medians are undecided); flat and degenerate slices are left out (the claim's notes count them); a BN
    unit's slice lies in the plane orthogonal to its weights (``projected``)."""
    scope_layer = contours["scope"].str.extract(r"^layer(\d+)$", expand=False).astype(float)
    d = contours[(contours["slice"] == "lecture") & (scope_layer >= 2) & (contours["run"] == "best")
                 & (contours["checkpoint"] == checkpoint)]
    d, notes = _slice_rows(_networks(_standardized(d))[lambda x: x["norm"].isin(("none", "batchnorm"))])
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
        "elongated; flat and degenerate slices left out; BN slices orthogonal to the unit's weights)", cases,
        {"all": phase + ", with standardized inputs, the slices of J through two weights of a deeper layer are "
                "more elongated without BN than with it in all {n} dataset/depth cases.",
         "none": phase + ", with standardized inputs, BN did not make the deeper layers' slices of J rounder in "
                 "any of the {n} dataset/depth cases.",
         "mixed": phase + ", with standardized inputs, BN made the deeper layers' slices of J rounder in {k} of "
                  "{n} dataset/depth cases; not in: {failing}.",
         "missing": (no_deeper_layer_sentence(phase) if _no_hidden_layer(contours)
                     else phase + ", the deeper layers' slices were not measured.")},
        comparison=checkpoint, notes=notes, rule_key="hidden_slice",
        effect="axis ratio without BN / with BN")


def converse_slice_claim(contours: pd.DataFrame, checkpoint: str = "end") -> Claim:
    """Rule (Q5, the converse): in the networks with BN, the layer-1 lecture slice on raw inputs has GGN
    axis ratio >= LECTURE_RATIO x the same on standardized inputs (best-LR run, given checkpoint), every
    seed: BN after layer 1 does not round the contours in the W[1] directions that input normalization
    rounds. Both arms' layer-1 units are scale-invariant, so both slices lie in the plane orthogonal to the
    unit's weights (where that plane is 2-D; with two input features it is not, and the slice is flat and
    left out). The standardized model without BN is shown beside them."""
    d = _networks(_with_arm(_lecture_rows(contours, checkpoint)))
    d, notes = _slice_rows(d[d["arm"].isin(("raw-batchnorm", "standardize-batchnorm", "standardize-none"))])
    cases = _pair_cases(d, ("raw-batchnorm", "standardize-batchnorm"),
                        lambda x, y: _at_least(x, y, LECTURE_RATIO), ("ratio_raw_bn", "ratio_standardized_bn"))
    for c in cases:
        std = d[(d["dataset"] == c.dataset) & (d["depth"] == c.depth) & (d["arm"] == "standardize-none")]
        c.numbers["ratio_standardized_no_bn"] = _median(
            _slice_interval(g)[0] for _, g in std.groupby("seed")) if len(std) else np.nan
    phase = PHASE[checkpoint]
    return Claim(
        f"converse_slice_{checkpoint}", f"checkpoint {checkpoint}, networks with BN, layer-1 lecture slice: GGN axis "
        f"ratio on raw inputs >= {LECTURE_RATIO} x on standardized inputs, every seed ({LEFT_OUT_RULE})", cases,
        {"all": phase + ", BN does not do input normalization's work on layer 1: with BN, the slice of J through "
                "two weights of layer 1 is clearly more elongated on raw inputs than on standardized inputs in all "
                "{n} dataset/depth cases.",
         "none": phase + ", with BN, the layer-1 slice of J on raw inputs was not clearly more elongated than on "
                 "standardized inputs in any of the {n} dataset/depth cases: there BN rounds the W[1] contours as "
                 "input normalization does.",
         "mixed": phase + ", with BN, the layer-1 slice of J stayed clearly more elongated on raw inputs than on "
                  "standardized inputs in {k} of {n} dataset/depth cases ({holding}); not in: {failing}.",
         "missing": phase + ", the layer-1 slices of raw and standardized inputs with BN were not both measured."},
        comparison=checkpoint, notes=notes, rule_key="converse_slice",
        effect="axis ratio raw with BN / standardized with BN", group="converse")


def input_bn_slice_claim(contours: pd.DataFrame, checkpoint: str = "init") -> Claim:
    """Rule (Q5, BN on the inputs): without normalization layers (any depth, the slide's model included),
    the layer-1 lecture slice of the network that batch-normalizes its raw inputs (``batchnorm-none-d*``)
    is not clearly more elongated than with standardized inputs (``standardize-none-d*``): its GGN axis
    ratio < LECTURE_RATIO x the standardized one (best-LR run, given checkpoint), every seed. The
    analysis normalizes the inputs with the analysis batch's statistics (training mode)."""
    d = _with_arm(_lecture_rows(contours, checkpoint))
    d, notes = _slice_rows(d[d["arm"].isin(("batchnorm-none", "standardize-none"))])
    cases = _pair_cases(d, ("batchnorm-none", "standardize-none"),
                        lambda x, y: _negate(_at_least(x, y, LECTURE_RATIO)),
                        ("ratio_input_bn", "ratio_standardized"))
    phase = PHASE[checkpoint]
    return Claim(
        f"input_bn_slice_{checkpoint}", f"checkpoint {checkpoint}, no normalization layers, layer-1 lecture slice: "
        f"GGN axis ratio with BN on the raw inputs < {LECTURE_RATIO} x with standardized inputs, every seed "
        f"({LEFT_OUT_RULE})", cases,
        {"all": phase + ", batch norm on the raw inputs rounds the layer-1 slice as standardizing does (its axis "
                f"ratio below {LECTURE_RATIO:g}x the standardized one) in all {{n}} dataset/depth cases.",
         "none": phase + ", batch norm on the raw inputs left the layer-1 slice clearly more elongated than "
                 f"standardizing (axis ratio >= {LECTURE_RATIO:g}x, for at least one seed) in every one of the {{n}} "
                 "dataset/depth cases.",
         "mixed": phase + ", batch norm on the raw inputs rounded the layer-1 slice as standardizing does in {k} of "
                  "{n} dataset/depth cases; not in: {failing}.",
         "missing": phase + ", the layer-1 slices of batch norm on the inputs and of standardized inputs were not "
                    "both measured."},
        comparison=checkpoint, notes=notes, rule_key="input_bn_slice",
        seeds_label="Seeds for which it matched", effect="axis ratio BN on inputs / standardized", group="input_bn")

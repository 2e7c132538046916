"""The Snakemake workflow end to end on config/quick.yaml, checked by content.

The session-scoped ``quick`` fixture (tests/conftest.py, shared with tests/test_browser.py) copies workflow/,
scripts/ and config/ into a temporary folder and runs the quick DAG once through the ``snakemake`` command in
a subprocess, as a user runs it. The tests then read the tables, checkpoints, processed data and report it
wrote (in the study's folders: data/quick/, results/quick/, reports/quick/, logs/quick/), and recompute what
they can with their own numpy code: the checkpoints + model.json + data/quick/processed npz must rebuild the
logged loss.
``test_lint`` lints the workflow as it is in the repository.
"""

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK, copy_workflow, study_folders
from snakemake_cli import snakemake_exe, subprocess_env

IDS = ["dataset", "variant", "input", "norm", "depth"]
RUNS, TAGS = ("common", "best"), ("init", "early", "end")
RUN_TAGS = {"common": TAGS, "best": ("init", "early", "matched", "end")}  # the best run: also at matched loss


def table(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(study_folders(root, QUICK).tables / f"{name}.csv")


def expected_variants(config) -> list[tuple[str, str, int]]:
    """(input, norm, depth) of the study's variants: the input x norm x depth product less two kinds, written
    out here from the config's documentation: depth 0 only without a norm, the batchnorm input only with
    variants.batchnorm_input_norms."""
    v = config["variants"]
    out = []
    for i in v["inputs"]:
        for n in v["norms"]:
            for d in v["depths"]:
                n_ = "none" if d == 0 else n
                if (i == "batchnorm" and n_ not in v["batchnorm_input_norms"]) or (i, n_, d) in out:
                    continue
                out.append((i, n_, int(d)))
    return out


def data_input(inp: str) -> str:
    """The processed file an input treatment trains on (batch norm on the inputs reads the raw file)."""
    return "raw" if inp == "batchnorm" else inp


def lr_grid(config) -> np.ndarray:
    s = config["sweep"]
    return np.geomspace(s["lr_min"], s["lr_max"], s["n_lr"])


def eval_steps(tr: pd.DataFrame) -> list[int]:
    """The evaluation schedule: the steps where training.csv holds the evaluation-set loss."""
    return sorted(tr.loc[tr["eval_loss"].notna(), "step"].unique().tolist())


# ---------------------------------------------------------------- an independent numpy model


def np_forward(spec: dict, arrays: dict, X: np.ndarray):
    """(outputs, [A[0..L-1]], [Z[1..L]]) from model.json and the checkpoint arrays, written from the
    contract in docs/methods.md (BN in training mode on X: batch mean, biased variance, eps; batch norm on the
    inputs, input_norm batchnorm, likewise on X's features before layer 1, without gamma and beta)."""
    sizes, eps = spec["sizes"], spec["eps"]
    L = len(sizes) - 1
    a, inputs, pre = X.astype(np.float64), [], []
    if spec.get("input_norm", "none") == "batchnorm":
        a = (a - a.mean(axis=0)) / np.sqrt(a.var(axis=0) + eps)
    for l in range(1, L + 1):
        inputs.append(a)
        z = a @ arrays[f"layer{l}.W"].astype(np.float64)
        if f"layer{l}.b" in arrays:
            z = z + arrays[f"layer{l}.b"]
        pre.append(z)
        if l == L:
            return z, inputs, pre
        if spec["norm"] in ("batchnorm", "layernorm"):
            axis = 0 if spec["norm"] == "batchnorm" else 1
            mean = z.mean(axis=axis, keepdims=True)
            var = ((z - mean) ** 2).mean(axis=axis, keepdims=True)
            z = (z - mean) / np.sqrt(var + eps) * arrays[f"layer{l}.gamma"] + arrays[f"layer{l}.beta"]
        a = np.maximum(z, 0.0) if spec["activation"] == "relu" else np.tanh(z)


def np_loss(spec: dict, arrays: dict, X: np.ndarray, y: np.ndarray) -> float:
    out = np_forward(spec, arrays, X)[0]
    if spec["loss"] == "mse":
        return float(np.mean((out - y.reshape(out.shape)) ** 2))
    out = out - out.max(axis=1, keepdims=True)
    logp = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y]))


def np_weight_grad_norms(spec: dict, arrays: dict, X: np.ndarray, y: np.ndarray) -> list[float]:
    """||dJ/dW[l]||_F of a ReLU network without normalization, softmax cross-entropy, by hand backprop."""
    assert spec["norm"] == "none" and spec["activation"] == "relu" and spec["loss"] == "softmax_cross_entropy"
    out, inputs, pre = np_forward(spec, arrays, X)
    p = np.exp(out - out.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    delta = p.copy()
    delta[np.arange(len(y)), y] -= 1.0
    delta /= len(y)
    norms = []
    for l in range(len(inputs), 0, -1):
        norms.append(float(np.linalg.norm(inputs[l - 1].T @ delta)))
        if l > 1:
            delta = (delta @ arrays[f"layer{l}.W"].T) * (pre[l - 2] > 0)
    return norms[::-1]


def analysis_set(root: Path, config, dataset: str, inp: str, rows: int | None = None):
    """The processed data and its first ``rows`` training rows (default: the analysis set's)."""
    with np.load(study_folders(root, QUICK).data / "processed" / dataset / f"{data_input(inp)}.npz") as f:
        data = {k: f[k] for k in f.files}
    m = config["analysis"]["max_examples"] if rows is None else rows
    return data, data["X_train"][:m], data["y_train"][:m]


# ---------------------------------------------------------------- tables


@pytest.mark.workflow
def test_tables_have_the_contract_columns_and_row_counts(quick):
    root, config, _ = quick
    datasets = sorted(config["datasets"])
    variants = expected_variants(config)
    n_var = len(datasets) * len(variants)
    n_lr, n_seeds = config["sweep"]["n_lr"], len(config["sweep"]["seeds"])
    contract = {
        "runs": ["lr", "seed", "grid", "diverged", "diverged_step", "final_train_loss", "test_accuracy",
                 "steps_to_target", "train_mode_loss", "test_mode_loss"],
        "variants": ["max_stable_lr", "max_stable_lr_upper", "best_lr", "common_lr", "matched_level"],
        "variant_seeds": ["seed", "max_stable_lr", "max_stable_lr_upper", "best_lr", "final_train_loss",
                          "test_accuracy", "steps_to_case_target", "case_target"],
        "training": ["lr", "seed", "step", "train_loss", "eval_loss", "frozen"],
        "checkpoints": ["run", "lr", "seed", "checkpoint", "step", "frozen", "reached", "level"],
        "layer_inputs": ["run", "seed", "checkpoint", "layer", "metric", "value"],
        "gradients": ["run", "seed", "step", "layer", "metric", "value"],
        "curvature": ["run", "seed", "checkpoint", "scope", "matrix", "metric", "value"],
        "contours": ["run", "seed", "checkpoint", "slice", "scope", "axis_ratio_ggn", "axis_ratio_levelset",
                     "singular", "censored", "flat_direction", "degenerate", "projected"],
        "smoothness": ["run", "lr", "seed", "checkpoint", "step_size", "metric", "value"],
    }
    t = {name: table(root, name) for name in contract}
    for name, cols in contract.items():
        assert list(t[name].columns[:5]) == IDS, name
        assert set(cols) <= set(t[name].columns), (name, set(cols) - set(t[name].columns))
    runs = t["runs"]
    grid = runs[runs["grid"]]
    assert len(grid) == n_var * n_lr * n_seeds
    assert len(t["variants"]) == n_var and len(t["variant_seeds"]) == n_var * n_seeds
    steps = config["sweep"]["steps"]
    assert len(t["training"]) == n_var * n_lr * n_seeds * (steps + 1)
    names = {f"{i}-{n}-d{d}" for i, n, d in variants}
    for name in contract:
        assert set(t[name]["dataset"]) == set(datasets), name
        assert set(t[name]["variant"]) == names, name
        # the id columns agree with the variant name
        parsed = t[name]["variant"].str.extract(r"^([a-z]+)-([a-z]+)-d(\d+)$")
        assert (parsed[0] == t[name]["input"]).all() and (parsed[1] == t[name]["norm"]).all()
        assert (parsed[2].astype(int) == t[name]["depth"]).all()
    np.testing.assert_allclose(np.sort(grid["lr"].unique()), lr_grid(config), rtol=1e-3)
    assert sorted(runs["seed"].unique()) == sorted(config["sweep"]["seeds"])
    assert not runs.duplicated(IDS + ["lr", "seed"]).any()
    # the refinement runs lie strictly inside the grid's range
    refined = runs[~runs["grid"]]
    assert ((refined["lr"] > lr_grid(config).min()) & (refined["lr"] < lr_grid(config).max())).all()
    tr = t["training"]
    assert (tr.groupby(IDS + ["lr", "seed"])["step"].apply(list).map(lambda s: s == list(range(steps + 1)))).all()
    schedule = eval_steps(tr)
    assert schedule[0] == 0 and schedule[-1] == steps and len(schedule) >= min(40, steps + 1) - 1
    per_run = tr[tr["eval_loss"].notna()].groupby(IDS + ["lr", "seed"])["step"].apply(list)
    assert (per_run.map(lambda s: s == schedule)).all()

    # layer_inputs: one value per (variant, run, seed, checkpoint, layer) for each contract metric
    li = t["layer_inputs"]
    metrics = ["rms_spread", "rms_spread_p90_p10", "dead_fraction", "cond", "eff_cond", "cov_cond", "cov_eff_cond"]
    assert set(metrics) <= set(li["metric"])
    li = li[li["metric"].isin(metrics)]
    assert set(li["run"]) == set(RUNS) and set(li["checkpoint"]) == set(RUN_TAGS["best"])
    assert set(li["seed"]) == set(config["sweep"]["seeds"])
    per_variant = sum(len(tags) for tags in RUN_TAGS.values()) * n_seeds * len(metrics)
    assert len(li) == sum(per_variant * (d + 1) for _, _, d in variants) * len(datasets)
    assert not li.duplicated(IDS + ["run", "seed", "checkpoint", "layer", "metric"]).any()
    assert (li.groupby("variant")["layer"].max() == li.groupby("variant")["depth"].first() + 1).all()
    dead = li[li["metric"] == "dead_fraction"]["value"]
    assert ((dead >= 0) & (dead <= 1)).all()
    ck = t["checkpoints"]
    assert len(ck) == n_var * n_seeds * sum(len(tags) for tags in RUN_TAGS.values())
    assert (ck.loc[ck["checkpoint"] == "init", "step"] == 0).all()
    assert (ck.loc[ck["checkpoint"] == "end", "step"] == steps).all()
    matched = ck[ck["checkpoint"] == "matched"]
    assert ((matched["step"] >= 0) & (matched["step"] <= steps)).all() and matched["level"].notna().any()

    g = t["gradients"]
    metrics = {"grad_norm", "relative_grad_norm", "weight_norm", "effective_lr"}
    assert set(g["metric"]) == metrics and set(g["run"]) == set(RUNS)
    # the weight norms at every evaluation step, the gradient's at 12 of them (with the first, early and last)
    grad_schedule = sorted(g.loc[g["metric"] == "grad_norm", "step"].unique().tolist())
    assert set(grad_schedule) <= set(schedule) and {0, ck.loc[ck["checkpoint"] == "early", "step"].iloc[0],
                                                     steps} <= set(grad_schedule)
    assert 12 <= len(grad_schedule) <= 13 < len(schedule)
    per_layer = 2 * len(grad_schedule) + 2 * len(schedule)  # grad_norm, relative_grad_norm; weight_norm, effective_lr
    expected_g = sum(len(RUNS) * n_seeds * per_layer * (d + 1) for _, _, d in variants)
    assert len(g) == expected_g * len(datasets)
    # a depth-0 model starts at W = 0, where the relative gradient norm is undefined
    undefined = (g["metric"] == "relative_grad_norm") & (g["depth"] == 0) & (g["step"] == 0)
    assert g.loc[undefined, "value"].isna().all()
    defined = ~undefined
    for metric in ("grad_norm", "relative_grad_norm", "weight_norm"):
        v = g.loc[(g["metric"] == metric) & defined, "value"]
        assert np.isfinite(v).all() and (v >= 0).all(), metric
    # the effective LR lr / ||w||^2 exists for the layers whose weights are scale-invariant (BN and LN hidden layers)
    eff = g[g["metric"] == "effective_lr"]
    invariant = (eff["norm"] != "none") & (eff["layer"] <= eff["depth"])
    assert np.isfinite(eff.loc[invariant, "value"]).all() and eff.loc[~invariant, "value"].isna().all()
    assert invariant.any()

    # runs: train- and test-mode losses exist exactly for the models with batch statistics (BN on a hidden
    # layer or on the inputs), for the runs that did not diverge
    modes = runs[~runs["diverged"].astype(bool)]
    batch_stats = (modes["norm"] == "batchnorm") | (modes["input"] == "batchnorm")
    for col in ("train_mode_loss", "test_mode_loss"):
        assert np.isfinite(modes.loc[batch_stats, col]).all() and modes.loc[~batch_stats, col].isna().all(), col

    # smoothness: every analysed run, seed and configured checkpoint, with per-step and aggregate metrics
    sm = t["smoothness"]
    per_step = sm[sm["step_size"].notna()]
    assert sorted(per_step["step_size"].unique()) == sorted(config["analysis"]["smoothness"]["step_multipliers"])
    assert {"loss", "grad_change", "beta"} <= set(per_step["metric"])
    assert {"loss_range", "beta_max", "nonfinite_steps"} <= set(sm.loc[sm["step_size"].isna(), "metric"])
    assert set(sm["checkpoint"]) == set(config["analysis"]["smoothness"]["checkpoints"])
    inv = sm[sm["metric"] == "beta_invariant_max"]
    assert set(inv["norm"]) == set(config["variants"]["norms"]) - {"none"}

    # contours: every row is either a finite ratio (censored ones hold their bound) or flat / degenerate
    c = t["contours"]
    kept = ~(c["flat_direction"].astype(bool) | c["degenerate"].astype(bool))
    assert np.isfinite(c.loc[kept, "axis_ratio_ggn"]).all()
    assert (c["singular"].astype(bool) == (c["censored"].astype(bool) | ~kept)).all()


@pytest.mark.workflow
def test_runs_and_variants_are_consistent(quick):
    root, config, _ = quick
    runs, var, tr = table(root, "runs"), table(root, "variants"), table(root, "training")
    div = runs["diverged"].astype(bool)
    assert runs.loc[~div, "diverged_step"].isna().all()
    ds = runs.loc[div, "diverged_step"]
    assert ((ds >= 0) & (ds < config["sweep"]["steps"]) & (ds == ds.round())).all()
    assert (runs["test_accuracy"].isna() == div).all()
    assert (np.isfinite(runs["final_train_loss"]) | div).all()
    acc = runs.loc[~div, "test_accuracy"]
    assert ((acc >= 0) & (acc <= 1)).all()
    # training.csv: the first and last evaluation-set losses are the grid runs' initial and final losses
    last = config["sweep"]["steps"]
    keys = IDS + ["lr", "seed"]
    grid = runs[runs["grid"]]
    merged = grid.merge(tr[tr["step"] == 0][keys + ["eval_loss"]], on=keys).merge(
        tr[tr["step"] == last][keys + ["eval_loss"]], on=keys, suffixes=("_0", "_end"))
    assert len(merged) == len(grid)
    np.testing.assert_allclose(merged["final_train_loss"], merged["eval_loss_end"], rtol=1e-6)
    np.testing.assert_allclose(merged["initial_train_loss"], merged["eval_loss_0"], rtol=1e-6)
    # variants.csv recomputed from runs.csv with the definitions (docs/methods.md, selection's docstring): the
    # largest grid LR at which every seed converges, refined inside the next grid step to <= 1.15x
    converged = ~runs["diverged"].astype(bool) & (runs["final_train_loss"] < runs["initial_train_loss"])
    runs = runs.assign(ok=converged)
    stable = runs[runs["grid"]].groupby(["dataset", "variant", "lr"])["ok"].all().reset_index()
    for (dataset, variant), grp in stable.groupby(["dataset", "variant"]):
        row = var[(var["dataset"] == dataset) & (var["variant"] == variant)].iloc[0]
        good = grp.loc[grp["ok"], "lr"]
        if len(good):
            assert row["max_stable_grid_lr"] == pytest.approx(good.max())
            assert row["best_lr"] in set(good)
            assert row["max_stable_lr"] >= row["max_stable_grid_lr"] * (1 - 1e-9)
            if np.isfinite(row["max_stable_lr_upper"]):
                assert 1 < row["max_stable_lr_upper"] / row["max_stable_lr"] <= 1.15
                # every seed converged at the max stable LR, and some seed did not at its upper bound
                v = runs[(runs["dataset"] == dataset) & (runs["variant"] == variant)]
                at_max = v[np.isclose(v["lr"], row["max_stable_lr"], rtol=1e-9)]
                assert at_max["ok"].all() if len(at_max) else True
        else:
            assert np.isnan(row["max_stable_lr"]) and np.isnan(row["best_lr"])
    for dataset, grp in var.groupby("dataset"):
        assert grp["common_lr"].nunique() == 1
        assert (grp["depth"] == 0).any() and (grp["depth"] > 0).any()
        deep = grp[grp["depth"] > 0]  # the depth-0 models (convex, their own stability limit) do not set it
        if deep["max_stable_lr"].notna().all():
            # the common LR is a grid LR: the smallest of the variants' largest stable grid LRs
            assert grp["common_lr"].iloc[0] == pytest.approx(deep["max_stable_grid_lr"].min())
        else:
            assert grp["common_lr"].iloc[0] == pytest.approx(runs.loc[runs["dataset"] == dataset, "lr"].min())


@pytest.mark.workflow
def test_layer1_input_scales_on_the_lecture_dataset(quick):
    """Layer 1's input is X itself: its RMS spread is a fixed number of the data, ~1000 raw (the
    lecture's 1000:1 features) and ~1 standardized, recomputed here from the processed npz (every row of the
    training split, as the analysis measures layer inputs). Under batch norm on the inputs it is the raw
    features standardized with the analysis set's statistics (the batch the analysis loss uses)."""
    root, config, _ = quick
    assert "lecture" in config["datasets"]
    li = table(root, "layer_inputs")
    l1 = li[(li["dataset"] == "lecture") & (li["layer"] == 1)]
    for inp in config["variants"]["inputs"]:
        data, X_an, _ = analysis_set(root, config, "lecture", inp)
        X = data["X_train"].astype(np.float64)
        if inp == "batchnorm":
            X = (X - X_an.mean(axis=0)) / np.sqrt(X_an.var(axis=0) + config["variants"]["eps"])
        assert len(X) > config["analysis"]["max_examples"]  # else the split and the analysis set coincide
        rms = np.sqrt(np.mean(X**2, axis=0))
        spread = rms.max() / rms.min()
        Xa = np.hstack([X, np.ones((len(X), 1))])
        ev = np.linalg.eigvalsh(Xa.T @ Xa / len(X))
        vals = l1[(l1["input"] == inp) & (l1["metric"] == "rms_spread")]["value"]
        assert len(vals) > 0
        np.testing.assert_allclose(vals, spread, rtol=1e-6)
        cond = l1[(l1["input"] == inp) & (l1["metric"] == "cond")]["value"]
        np.testing.assert_allclose(cond, ev.max() / ev.min(), rtol=1e-5)
        dead = l1[(l1["input"] == inp) & (l1["metric"] == "dead_fraction")]["value"]
        assert (dead == 0).all()
        if inp == "raw":
            assert 500 < vals.min() and vals.max() < 2000, vals.describe()
        if inp in ("standardize", "batchnorm"):
            assert vals.max() < 1.5, vals.describe()


@pytest.mark.workflow
def test_checkpoints_rebuild_the_logged_loss(quick):
    """Every analysed checkpoint (each run, seed and tag) rebuilt with numpy from model.json: its loss on the
    evaluation set is the one training logged at its step (checkpoints.csv), and a matched checkpoint's loss on
    the analysis set is at or below its level when it reached it."""
    root, config, _ = quick
    tr, var, grads = table(root, "training"), table(root, "variants"), table(root, "gradients")
    ck = table(root, "checkpoints")
    seeds = config["sweep"]["seeds"]
    lrs = lr_grid(config)
    checked_grads = checked_matched = 0
    for dataset in sorted(config["datasets"]):
        for inp, norm, depth in expected_variants(config):
            variant = f"{inp}-{norm}-d{depth}"
            vdir = study_folders(root, QUICK).results / dataset / variant
            spec = json.loads((vdir / "model.json").read_text())
            assert spec["norm"] == norm and spec["input"] == inp and spec["depth"] == depth
            assert spec["input_norm"] == ("batchnorm" if inp == "batchnorm" else "none")
            assert len(spec["sizes"]) == depth + 2 and spec["loss"] == "softmax_cross_entropy"
            # the training log and its gradients are measured on the evaluation set (sweep.eval_examples rows)
            data, X, y = analysis_set(root, config, dataset, inp, config["sweep"]["eval_examples"])
            _, X_an, y_an = analysis_set(root, config, dataset, inp)
            assert spec["sizes"][0] == X.shape[1] and spec["sizes"][-1] == len(np.unique(data["y_train"]))
            row = var[(var["dataset"] == dataset) & (var["variant"] == variant)].iloc[0]
            L = depth + 1
            for run in RUNS:
                lr = row["common_lr"] if run == "common" else row["best_lr"]
                lr = lrs.min() if not np.isfinite(lr) else lr
                for seed in seeds:
                    curve = tr[(tr["dataset"] == dataset) & (tr["variant"] == variant) & (tr["seed"] == seed)
                               & np.isclose(tr["lr"], lr, rtol=1e-9)].set_index("step")["eval_loss"]
                    for tag in RUN_TAGS[run]:
                        with np.load(vdir / "checkpoints" / f"{run}-s{seed}-{tag}.npz") as f:
                            arrays = {k: f[k] for k in f.files}
                        expected = {f"layer{l}.W" for l in range(1, L + 1)}
                        expected |= {f"layer{l}.b" for l in range(1, L + 1) if not (norm == "batchnorm" and l < L)}
                        expected |= {f"layer{l}.{n}" for l in range(1, L) for n in ("gamma", "beta") if norm != "none"}
                        assert set(arrays) == expected, (variant, run, tag)
                        for l in range(1, L + 1):
                            assert arrays[f"layer{l}.W"].shape == (spec["sizes"][l - 1], spec["sizes"][l])
                            for n in ("b", "gamma", "beta"):
                                if f"layer{l}.{n}" in arrays:
                                    assert arrays[f"layer{l}.{n}"].shape == (spec["sizes"][l],)
                        where = ck[(ck["dataset"] == dataset) & (ck["variant"] == variant) & (ck["run"] == run)
                                   & (ck["seed"] == seed) & (ck["checkpoint"] == tag)]
                        assert len(where) == 1, (variant, run, seed, tag)
                        point = where.iloc[0]
                        if tag == "matched":
                            loss = np_loss(spec, arrays, X_an, y_an)  # the analysis set's loss
                            if point["reached"] is True or point["reached"] == "True":
                                assert loss <= point["level"] * (1 + 1e-4) + 1e-6, (variant, seed, loss)
                                checked_matched += 1
                            continue
                        loss = np_loss(spec, arrays, X, y)
                        assert np.isfinite(loss), (variant, run, tag)
                        # the training log evaluated the same function (BN in training mode on the same rows)
                        np.testing.assert_allclose(loss, curve.loc[int(point["step"])], rtol=2e-3, atol=1e-5,
                                                   err_msg=f"{variant} {run}-s{seed}-{tag}")
                        if tag != "init":
                            continue
                        # gradients.csv at step 0: relative = grad_norm / ||W[l]|| of the init checkpoint
                        g = grads[(grads["dataset"] == dataset) & (grads["variant"] == variant)
                                  & (grads["run"] == run) & (grads["seed"] == seed) & (grads["step"] == 0)]
                        g = g.pivot(index="layer", columns="metric", values="value")
                        w = [np.linalg.norm(arrays[f"layer{l}.W"]) for l in range(1, L + 1)]
                        if depth == 0:  # zero init: the relative norm is undefined
                            assert g["relative_grad_norm"].isna().all() and not np.any(w)
                        else:
                            np.testing.assert_allclose(g["grad_norm"] / g["relative_grad_norm"], w, rtol=1e-4)
                        if norm == "none":
                            np.testing.assert_allclose(g["grad_norm"], np_weight_grad_norms(spec, arrays, X, y),
                                                       rtol=2e-3)
                            checked_grads += 1
    assert checked_grads > 0 and checked_matched > 0


# ---------------------------------------------------------------- report and rerun


@pytest.mark.workflow
def test_report_is_self_contained(quick):
    root, config, _ = quick
    html = study_folders(root, QUICK).report.read_text()
    for ds in config["datasets"]:
        assert ds in html
    srcs = re.findall(r"""\bsrc\s*=\s*["']?([^"'\s>]+)""", html, flags=re.I)
    assert srcs and all(s.startswith("data:") for s in srcs), [s[:40] for s in srcs if not s.startswith("data:")]
    assert not re.search(r"""<link[^>]+href\s*=\s*["']?(https?:)?//""", html, flags=re.I)
    assert not re.search(r"""@import|url\(\s*["']?(https?:)?//""", html, flags=re.I)
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 4
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.workflow
def test_dry_run_after_completion_does_nothing(quick):
    root, _, _ = quick
    proc = subprocess.run([snakemake_exe(), "-n", "--configfile", "config/quick.yaml"], cwd=root,
                          env=subprocess_env(root / "jax-cache"), capture_output=True, text=True, timeout=300,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Nothing to be done" in out, out[-3000:]


@pytest.mark.workflow
def test_quick_study_jobs_compile_at_level_zero(quick):
    """The quick study's train and analyze jobs are compile-bound (normlab.runtime.SMALL_JOB_SCALE): each
    log's first line shows the XLA level the job ran with, 0, unless the user's XLA_FLAGS set one."""
    root, config, _ = quick
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        pytest.skip("XLA_FLAGS sets the optimization level")
    logs = study_folders(root, QUICK).logs
    train = sorted((logs / "train").rglob("*.log"))
    analyze = sorted((logs / "analyze").rglob("*.log"))
    variants = expected_variants(config)
    prepared = [i for i in config["variants"]["inputs"] if i != "batchnorm"]
    networks = {f"{n}-d{d}" for i, n, d in variants if i != "batchnorm"}
    input_bn = {f"batchnorm-{n}-d{d}" for i, n, d in variants if i == "batchnorm"}
    assert len(train) == len(config["datasets"]) * len(variants)
    assert sorted(log.stem for log in analyze) == sorted(list(networks) + list(input_bn)) * len(config["datasets"])
    for log in analyze:  # one analyze job per network measures each of its prepared input treatments
        text = log.read_text()
        own = [log.stem] if log.stem in input_bn else [f"{i}-{log.stem}" for i in prepared]
        assert all(f"{v}: common run" in text for v in own), (log, text)
    for log in train + analyze:
        first = log.read_text().splitlines()[0]
        assert "1 CPU thread(s)" in first and "--xla_backend_optimization_level=0" in first, (log, first)


def test_lint(tmp_path):
    """`snakemake --lint` on the repository's workflow with the quick config reports nothing."""
    copy_workflow(tmp_path)
    proc = subprocess.run([snakemake_exe(), "--lint", "--configfile", "config/quick.yaml"], cwd=tmp_path,
                          env=subprocess_env(tmp_path / "jax-cache"), capture_output=True, text=True, timeout=300,
                          check=False)
    out = proc.stdout + proc.stderr
    assert "Lints for" not in out, out
    assert proc.returncode == 0, out
    assert "Congratulations, your workflow is in a good condition!" in out, out


@pytest.mark.workflow
def test_curvature_table_contract_and_loss(quick):
    """curvature.csv: every variant x run x curvature checkpoint has the model loss row, and lambda_max,
    trace, eff_cond for the model and every layer, both matrices; the GGN is PSD (lambda_max >= 0) and
    eff_cond equals lambda_max / (trace / n_params) where the trace is positive."""
    root, config, _ = quick
    cv = table(root, "curvature")
    assert list(cv.columns[:13]) == ["dataset", "variant", "input", "norm", "depth", "run", "lr", "seed",
                                     "checkpoint", "scope", "matrix", "metric", "value"]
    assert set(cv["seed"]) == set(config["sweep"]["seeds"])
    tags = config["analysis"]["curvature"]["checkpoints"]
    for (variant, _run, _seed, tag), g in cv.groupby(["variant", "run", "seed", "checkpoint"]):
        assert tag in tags
        depth = int(variant.rsplit("d", 1)[1])
        assert len(g[(g["scope"] == "model") & (g["matrix"] == "none") & (g["metric"] == "loss")]) == 1
        norm = variant.split("-")[1]
        for scope in ["model"] + [f"layer{l}" for l in range(1, depth + 2)]:
            # lambda_max(S H S), S the norms of the scale-invariant weight groups: BN / LN models, scopes with them
            invariant = norm != "none" and scope != f"layer{depth + 1}"
            for matrix in ("hessian_invariant", "ggn_invariant"):
                m = g[(g["scope"] == scope) & (g["matrix"] == matrix) & (g["metric"] == "lambda_max")]["value"]
                assert len(m) == int(invariant) and np.isfinite(m).all(), (variant, scope, matrix)
            for matrix in ("hessian", "ggn"):
                m = g[(g["scope"] == scope) & (g["matrix"] == matrix)].set_index("metric")["value"]
                assert {"lambda_max", "trace", "eff_cond", "n_params"} <= set(m.index), (variant, scope, matrix)
                if matrix == "ggn":
                    assert m["lambda_max"] >= -1e-9 * abs(m["trace"])
                if m["trace"] > 0:
                    assert m["eff_cond"] == pytest.approx(m["lambda_max"] / (m["trace"] / m["n_params"]), rel=1e-9)
    assert set(cv["variant"]) == {f"{i}-{n}-d{d}" for i, n, d in expected_variants(config)}


@pytest.mark.workflow
def test_lecture_slide_effect_in_the_contour_table(quick):
    """The slide: on the lecture dataset (features on scales 1000:1), the layer-1 lecture slice of a network
    without normalization is clearly elongated on raw inputs and near round on standardized ones, at
    initialization, for every depth and seed (GGN axis ratio from contours.csv)."""
    root, config, _ = quick
    ct = table(root, "contours")
    for col in ("slice", "scope", "axis_ratio_ggn", "axis_ratio_levelset", "singular"):
        assert col in ct.columns
    assert set(ct["slice"]) == {"lecture", "eig", "random"}
    layer1 = ct[(ct["dataset"] == "lecture") & (ct["slice"] == "lecture") & (ct["scope"] == "layer1")
                & (ct["checkpoint"] == "init") & (ct["norm"] == "none") & (ct["run"] == "best")
                & (ct["input"] != "batchnorm")]
    for depth in config["variants"]["depths"]:
        for seed in config["sweep"]["seeds"]:
            case = layer1[(layer1["depth"] == depth) & (layer1["seed"] == seed)]
            raw = case[case["input"] == "raw"].iloc[0]
            std = case[case["input"] == "standardize"]["axis_ratio_ggn"].item()
            assert std < 2.5, (depth, seed, std)
            # censored: the smaller curvature is below what the float64 2x2 resolves next to the larger (the
            # ratio holds the bound 1e6), the extreme of elongation; neither flat nor degenerate without norms
            assert not raw["flat_direction"] and not raw["degenerate"], raw.to_dict()
            assert np.isfinite(raw["axis_ratio_ggn"]) and raw["axis_ratio_ggn"] > 4 * std, (depth, raw.to_dict(), std)
    # the slice picks the largest and smallest RMS inputs: x1 (scale ~1000) and x2 (scale ~1) on raw inputs
    raw_rows = ct[(ct["slice"] == "lecture") & (ct["scope"] == "layer1") & (ct["input"] == "raw")]
    assert (raw_rows["rms_hi"] / raw_rows["rms_lo"]).between(500, 2000).all()
    # the slide (depth 0, W = 0): its GGN is the two inputs' second moment up to a constant, so its coupling is
    # their uncentred correlation over the analysis set, recomputed here from the processed npz
    slide = ct[(ct["slice"] == "lecture") & (ct["scope"] == "layer1") & (ct["depth"] == 0)
               & (ct["checkpoint"] == "init") & (ct["input"] != "batchnorm")]
    assert set(slide["input"]) == {"raw", "standardize"} and set(slide["seed"]) == set(config["sweep"]["seeds"])
    for _, r in slide.iterrows():
        _, X, _ = analysis_set(root, config, r["dataset"], r["input"])
        hi, lo = X[:, int(r["input_hi"])].astype(np.float64), X[:, int(r["input_lo"])].astype(np.float64)
        corr = abs(np.mean(hi * lo)) / np.sqrt(np.mean(hi ** 2) * np.mean(lo ** 2))
        assert r["ggn_coupling"] == pytest.approx(corr, rel=1e-6, abs=1e-9), r.to_dict()


@pytest.mark.workflow
def test_snakemake_report_builds(quick, tmp_path):
    """Snakemake's own report (`snakemake --report`) builds from the finished quick study and carries normlab's
    report as its marked result."""
    root, _, _ = quick
    out = study_folders(root, QUICK).reports / "snakemake-report.html"
    proc = subprocess.run([snakemake_exe(), "--configfile", "config/quick.yaml", "--report", str(out)], cwd=root,
                          env=subprocess_env(root / "jax-cache"), capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text(errors="replace")
    assert len(text) > 10_000
    assert "report.html" in text


@pytest.mark.workflow
def test_report_figures_are_the_same_drawn_in_parallel(quick):
    """The report draws its figures in a process pool (rule report's threads); the PNG bytes must be those
    drawn one by one, in the same order. Run in a fresh Python without JAX, as the report job runs (forked
    workers)."""
    root, _, _ = quick
    code = f"""
import sys
from pathlib import Path
from normlab import figure_tasks, report
results = Path({str(study_folders(root, QUICK).results)!r})
names = ["runs", "variants", "training", "layer_inputs", "layer_units", "gradients", "curvature", "contours"]
t = report.load_tables({{k: results / "tables" / f"{{k}}.csv" for k in names}})
spectra = figure_tasks.load_spectra(sorted(results.glob("*/*/analysis/spectra.npz")))
grids = figure_tasks.load_contour_grids(sorted(results.glob("*/*/analysis/contours.npz")))
tasks = [task for _, task in figure_tasks.dataset_figure_tasks("lecture", t, spectra, grids)]
assert len(tasks) >= 8, len(tasks)
tasks = tasks[:4]  # the four cheapest to draw (curves, stable LRs, two per-layer plots): enough to compare
one_by_one = figure_tasks.render_figures(tasks, workers=1)
assert "jax" not in sys.modules
assert figure_tasks.render_figures(tasks, workers=2) == one_by_one, "parallel figures differ"
assert all(png.startswith(b"\\x89PNG\\r\\n\\x1a\\n") for png in one_by_one)
print("ok", len(one_by_one))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok 4", proc.stdout + proc.stderr

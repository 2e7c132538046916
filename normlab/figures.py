"""Figures for the report: pure functions from tidy tables to PNG bytes (deterministic: fixed DPI, no
timestamps in the metadata)."""

from __future__ import annotations

import base64
import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

PALETTE = {"raw-none": "#d95f02", "raw-batchnorm": "#7570b3", "standardize-none": "#e7298a",
           "standardize-batchnorm": "#1b9e77", "raw-layernorm": "#a6761d", "standardize-layernorm": "#66a61e"}


def arm(df: pd.DataFrame) -> pd.Series:
    """input-norm label of each row (the variant without its depth)."""
    return df["input"] + "-" + df["norm"]


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _depth_axes(depths, height=2.8):
    fig, axes = plt.subplots(1, len(depths), figsize=(3.4 * len(depths), height), squeeze=False, sharey=True)
    return fig, axes[0]


def training_curves(training: pd.DataFrame, variants: pd.DataFrame) -> bytes:
    """Median (over seeds) training loss vs step at each variant's best LR; one panel per depth."""
    best = variants[["variant", "best_lr"]]
    d = training.merge(best, on="variant")
    d = d[np.isclose(d["lr"], d["best_lr"])].assign(arm=arm)
    depths = sorted(d["depth"].unique())
    fig, axes = _depth_axes(depths)
    for ax, depth in zip(axes, depths, strict=True):
        g = d[d["depth"] == depth].groupby(["arm", "step"])["train_loss"].agg(["median", "min", "max"]).reset_index()
        for name, h in g.groupby("arm"):
            ax.plot(h["step"], h["median"], label=name, color=PALETTE.get(name))
            ax.fill_between(h["step"], h["min"], h["max"], color=PALETTE.get(name), alpha=0.15)
        ax.set_yscale("log")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("step")
    axes[0].set_ylabel("training loss (median, range over seeds)")
    axes[-1].legend(fontsize=7)
    return to_png(fig)


def max_stable_lr(variants: pd.DataFrame) -> bytes:
    """Max stable LR per variant, by depth; a variant with no stable LR is drawn at the bottom as x."""
    d = variants.assign(arm=arm)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    floor = d["max_stable_lr"].min() / 3 if d["max_stable_lr"].notna().any() else 1e-5
    for name, h in d.groupby("arm"):
        ok = h["max_stable_lr"].notna()
        ax.plot(h["depth"][ok], h["max_stable_lr"][ok], "o-", label=name, color=PALETTE.get(name))
        ax.plot(h["depth"][~ok], [floor] * int((~ok).sum()), "x", color=PALETTE.get(name))
    ax.set_yscale("log")
    ax.set_xlabel("hidden layers")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("max stable learning rate")
    ax.legend(fontsize=7)
    return to_png(fig)


def per_layer(df: pd.DataFrame, value: str, ylabel: str, log: bool = True) -> bytes:
    """A per-layer quantity (column ``value``) against layer index, one line per arm, one panel per
    depth. df: rows with input, norm, depth, layer and ``value``; seeds/runs already reduced."""
    d = df.assign(arm=arm)
    depths = sorted(d["depth"].unique())
    fig, axes = _depth_axes(depths)
    for ax, depth in zip(axes, depths, strict=True):
        for name, h in d[d["depth"] == depth].groupby("arm"):
            h = h.sort_values("layer")
            ax.plot(h["layer"], h[value], "o-", label=name, color=PALETTE.get(name), ms=3)
        if log:
            ax.set_yscale("log")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("layer l (input A[l-1])")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=7)
    return to_png(fig)


sns.set_theme(style="whitegrid", context="paper")


def spectral_densities(densities: list[dict]) -> bytes:
    """SLQ spectral densities (one curve per arm, one panel per depth). densities: dicts with input, norm,
    depth, grid (g,), density (g,)."""
    depths = sorted({d["depth"] for d in densities})
    fig, axes = _depth_axes(depths)
    for ax, depth in zip(axes, depths, strict=True):
        for d in sorted((d for d in densities if d["depth"] == depth), key=lambda d: (d["input"], d["norm"])):
            name = f"{d['input']}-{d['norm']}"
            ax.plot(d["grid"], np.maximum(d["density"], 1e-12), label=name, color=PALETTE.get(name), lw=1)
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-6)
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("eigenvalue")
    axes[0].set_ylabel("density")
    axes[-1].legend(fontsize=7)
    return to_png(fig)


def conditioning_scatter(df: pd.DataFrame) -> bytes:
    """Per-layer Gauss-Newton eff_cond against the layer-input factor's eff_cond (log-log), one point per
    (variant, layer). df: input, norm, layer, input_eff_cond, ggn_eff_cond."""
    d = df.assign(arm=arm)
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for name, h in d.groupby("arm"):
        ax.scatter(h["input_eff_cond"], h["ggn_eff_cond"], s=14, label=name, color=PALETTE.get(name))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("layer input E[a~a~^T]: lambda_max / mean lambda")
    ax.set_ylabel("layer's Gauss-Newton block: lambda_max / mean lambda")
    ax.legend(fontsize=7)
    return to_png(fig)

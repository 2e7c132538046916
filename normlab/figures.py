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

# One colour per arm (input-norm, the variant without its depth), the same in every figure: every input
# treatment (raw, standardize, and batchnorm: the network's own batch norm on the raw inputs) with every norm
# (none, batchnorm, layernorm). Depth 0 (``<input>-none-d0``, the slide's model) has the colour of its arm; the
# figures that put depth on an axis draw it apart (``DEPTH0_MARKER``, not joined to the networks' line).
PALETTE = {"raw-none": "#d95f02", "raw-batchnorm": "#7570b3", "standardize-none": "#e7298a",
           "standardize-batchnorm": "#1b9e77", "raw-layernorm": "#a6761d", "standardize-layernorm": "#66a61e",
           "batchnorm-none": "#1f78b4", "batchnorm-batchnorm": "#6a3d9a", "batchnorm-layernorm": "#b15928"}
DEPTH0_MARKER = "s"


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


def no_data(message: str) -> bytes:
    """A small figure that says why there is nothing to plot (e.g. every run diverged)."""
    fig, ax = plt.subplots(figsize=(5.5, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return to_png(fig)


def training_curves(training: pd.DataFrame, variants: pd.DataFrame) -> bytes:
    """Median (over seeds) training loss vs step at each variant's best LR; one panel per depth."""
    best = variants[["variant", "best_lr"]]
    d = training.merge(best, on="variant")
    d = d[np.isclose(d["lr"], d["best_lr"])].assign(arm=arm)
    depths = sorted(d["depth"].unique())
    if not depths:
        return no_data("No variant has a best learning rate: every run diverged or failed to converge.")
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
        net, d0 = ok & (h["depth"] >= 1), ok & (h["depth"] == 0)  # depth 0 is another model: not on the line
        ax.plot(h["depth"][net], h["max_stable_lr"][net], "o-", label=name, color=PALETTE.get(name))
        ax.plot(h["depth"][d0], h["max_stable_lr"][d0], DEPTH0_MARKER, mfc="none", color=PALETTE.get(name),
                label=None if net.any() else name)
        ax.plot(h["depth"][~ok], [floor] * int((~ok).sum()), "x", color=PALETTE.get(name))
    ax.set_yscale("log")
    ax.set_xlabel("hidden layers (0, open square: no hidden layer)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("max stable learning rate")
    ax.legend(fontsize=7)
    return to_png(fig)


def per_layer(df: pd.DataFrame, value: str, ylabel: str, log: bool = True) -> bytes:
    """A per-layer quantity (column ``value``) against layer index, one line per arm, one panel per
    depth. df: rows with input, norm, depth, layer and ``value``; seeds/runs already reduced."""
    d = df.assign(arm=arm)
    depths = sorted(d["depth"].unique())
    if not depths:
        return no_data(f"No data for {ylabel}.")
    fig, axes = _depth_axes(depths)
    for ax, depth in zip(axes, depths, strict=True):
        for name, h in d[d["depth"] == depth].groupby("arm"):
            h = h.sort_values("layer")
            ax.plot(h["layer"], h[value], "o-", label=name, color=PALETTE.get(name), ms=3)
        panel = pd.to_numeric(d.loc[d["depth"] == depth, value], errors="coerce")
        if log and (panel[np.isfinite(panel)] > 0).any():  # log scale needs a positive value (e.g. not all 0)
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
    x, y = (pd.to_numeric(d[c], errors="coerce") for c in ("input_eff_cond", "ggn_eff_cond"))
    d = d[np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)]  # log-log: e.g. a diverged run's NaN drops out
    if d.empty:
        return no_data("No finite, positive condition numbers to plot (e.g. every run diverged).")
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for name, h in d.groupby("arm"):
        ax.scatter(h["input_eff_cond"], h["ggn_eff_cond"], s=14, label=name, color=PALETTE.get(name))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("layer input E[a~a~^T]: lambda_max / mean lambda")
    ax.set_ylabel("layer's Gauss-Newton block: lambda_max / mean lambda")
    ax.legend(fontsize=7)
    return to_png(fig)


def ratio_label(panel: dict) -> str:
    """A slice's axis ratio in words: the number; "> bound" when censored (beyond numerical resolution: at least
    that elongated); "flat direction" when the plane holds an exact symmetry direction of J; "degenerate" when
    it has no two distinct live inputs; "n/a" when not measured."""
    if panel.get("flat_direction"):
        return "ratio: flat direction"
    if panel.get("degenerate"):
        return "ratio: degenerate"
    if not np.isfinite(panel["ratio"]):
        return "ratio n/a"
    return f"ratio > {panel['ratio']:.2g}" if panel.get("censored") else f"ratio {panel['ratio']:.3g}"


def contour_grid(panels: list[list[dict | None]], row_labels: list[str], col_labels: list[str]) -> bytes:
    """A grid of contour slices: rows (e.g. variants) x columns (e.g. layers). Each panel dict holds
    alphas (n_a,), betas (n_b,), loss (n_a, n_b), origin (2,), ratio (float, NaN if not reported) and the
    flags censored, flat_direction, degenerate (bool; ``ratio_label``) and projected (a scale-invariant unit's
    slice in the plane orthogonal to its weights: its axes are distances along two directions of that plane,
    ``slice_axes``, ``axis_labels``); None leaves the panel empty.
    Colour = log10(J - min J) with one colour scale per row (``landscape.shared_log_scale``); the axis ratio
    is printed on each panel."""
    from normlab import landscape

    n_rows, n_cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols + 0.8, 1.8 * n_rows + 0.3), squeeze=False)
    for i, row in enumerate(panels):
        vmin, vmax = landscape.shared_log_scale([p["loss"] for p in row if p is not None])
        levels = np.linspace(vmin, vmax if vmax > vmin else vmin + 1, 12)
        for j in range(n_cols):
            ax = axes[i][j]
            p = row[j] if j < len(row) else None
            ax.set_xticks([])
            ax.set_yticks([])
            if p is None:
                ax.axis("off")
                continue
            x, y = slice_axes(p)
            z = landscape.log_excess(p["loss"]).T
            ax.contourf(x, y, np.clip(z, levels[0], levels[-1]), levels=levels, cmap="viridis")
            ax.contour(x, y, np.clip(z, levels[0], levels[-1]), levels=levels[::2], colors="white", linewidths=0.3)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(ratio_label(p), fontsize=7)
            xlabel, ylabel = axis_labels(p)
            ax.set_xlabel(xlabel, fontsize=6, labelpad=1)
            if i == 0:
                ax.text(0.5, 1.25, col_labels[j], transform=ax.transAxes, ha="center", fontsize=8)
            ax.set_ylabel(f"{row_labels[i]}\n{ylabel}" if j == 0 else ylabel, fontsize=6 if j else 7, labelpad=1)
    return to_png(fig)


def slice_axes(panel: dict) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates a slice is drawn at: for a lecture slice of two weights, the weights' own values
    (origin + alphas, origin + betas); for a projected slice (``projected``: a scale-invariant unit, the plane
    orthogonal to its weight vector), the distances alphas, betas from the checkpoint along the plane's two
    orthonormal directions."""
    if panel.get("projected"):
        return np.asarray(panel["alphas"]), np.asarray(panel["betas"])
    return panel["origin"][0] + np.asarray(panel["alphas"]), panel["origin"][1] + np.asarray(panel["betas"])


def axis_labels(panel: dict) -> tuple[str, str]:
    """A slice's axis labels: the two weights (from the inputs of largest and smallest RMS), or, for a
    projected slice, distances along two directions orthogonal to the unit's weights."""
    if panel.get("projected"):
        return "distance along u1 \u22a5 w", "distance along u2 \u22a5 w"
    return "w from largest-RMS input", "w from smallest-RMS input"

"""Figures for the report: pure functions from tidy tables to PNG bytes (deterministic: fixed DPI, no
timestamps in the metadata, palette PNGs), the arms' palette and names shared by every figure, and the line and
point plots (training curves, per-layer profiles, seeds, loss against learning rate). The contour slices'
figures are in ``normlab.contour_figures``."""

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


INPUT_NAMES = {"raw": "raw inputs", "standardize": "standardized inputs", "batchnorm": "BN on raw inputs",
               "whiten": "whitened inputs"}
NORM_NAMES = {"none": "no norm layer", "batchnorm": "batch norm", "layernorm": "layer norm"}


def arm(df: pd.DataFrame) -> pd.Series:
    """input-norm label of each row (the variant without its depth)."""
    return df["input"] + "-" + df["norm"]


def arm_label(name: str) -> str:
    """An arm (``input-norm``) in words for legends, e.g. 'standardized inputs, batch norm'."""
    inp, _, norm = name.partition("-")
    return f"{INPUT_NAMES.get(inp, inp)}, {NORM_NAMES.get(norm, norm)}"


def arm_palette(names) -> dict[str, str]:
    """{arm_label: colour} for the arms ``names`` (``input-norm``): PALETTE's colour under the arm's words, for
    seaborn's ``palette`` (legends show the words, the colour stays the arm's)."""
    return {arm_label(n): PALETTE.get(n, "#555555") for n in names}


DPI = 90  # every figure's resolution (pixels per inch of its figsize)
PNG_COLORS = 256  # the palette of the saved PNG (``quantize_png``): a third of the RGBA file's bytes


def to_png(fig, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (then closed): drawn at ``dpi``, cropped to its content, no timestamp or software
    in the metadata, reduced to a palette of PNG_COLORS colours (``quantize_png``): the same figure gives the
    same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return quantize_png(buf.getvalue())


def quantize_png(png: bytes, colors: int = PNG_COLORS) -> bytes:
    """An RGB(A) PNG re-encoded with a palette of at most ``colors`` colours (median cut, no dithering: flat
    colour areas stay flat and compress well; deterministic)."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    q = im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    q.save(out, format="PNG", optimize=True)
    return out.getvalue()


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
            ax.plot(h["step"], h["median"], label=arm_label(name), color=PALETTE.get(name))
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
        ax.plot(h["depth"][net], h["max_stable_lr"][net], "o-", label=arm_label(name), color=PALETTE.get(name))
        ax.plot(h["depth"][d0], h["max_stable_lr"][d0], DEPTH0_MARKER, mfc="none", color=PALETTE.get(name),
                label=None if net.any() else arm_label(name))
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
            ax.plot(h["layer"], h[value], "o-", label=arm_label(name), color=PALETTE.get(name), ms=3)
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
            ax.plot(d["grid"], np.maximum(d["density"], 1e-12), label=arm_label(name), color=PALETTE.get(name), lw=1)
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
        ax.scatter(h["input_eff_cond"], h["ggn_eff_cond"], s=14, label=arm_label(name), color=PALETTE.get(name))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("layer input E[a~a~^T]: lambda_max / mean lambda")
    ax.set_ylabel("layer's Gauss-Newton block: lambda_max / mean lambda")
    ax.legend(fontsize=7)
    return to_png(fig)


CENSORED = "beyond resolution (at least)"  # the legend's name of a censored value


def _arm_order(names) -> list[str]:
    """The arms present, in PALETTE's order (a fixed legend order across figures)."""
    present = set(names)
    return [a for a in PALETTE if a in present] + sorted(present - set(PALETTE))


def _with_arm_names(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str], dict]:
    """df (column ``arm``, input-norm) with the arm in words in ``arm`` (its key moved to ``arm_key``), the hue
    order and the palette for seaborn (the legend shows the words, in PALETTE's colours)."""
    order = _arm_order(df["arm"].unique())
    return (df.assign(arm_key=df["arm"], arm=df["arm"].map(arm_label)), [arm_label(a) for a in order],
            arm_palette(order))


def _label_facets(g, xlabel: str, ylabel: str) -> None:
    """One x label per column and one y label for the whole figure (a per-row label overlaps its neighbours)."""
    g.set_axis_labels(xlabel, "")
    g.figure.supylabel(ylabel, fontsize=9)


def _positive(df: pd.DataFrame, col: str) -> pd.DataFrame:
    v = pd.to_numeric(df[col], errors="coerce")
    return df[np.isfinite(v) & (v > 0)].assign(**{col: v})


def _legend_below(g, ncol: int = 3) -> None:
    if g.legend is not None:
        sns.move_legend(g, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, title=None, frameon=False,
                        fontsize=8)


def layer_profiles(df: pd.DataFrame, ylabel: str, note: str = "") -> bytes:
    """A per-layer quantity against layer l, one line per arm (median over seeds, band = range over seeds),
    one panel per dataset (columns) and depth (rows); log y. df: tidy rows dataset, depth, layer, arm
    (input-norm), seed, value (positive; others dropped)."""
    d = _positive(df, "value") if len(df) else df
    if not len(d):
        return no_data(f"No data for {ylabel}{note}.")
    d, order, palette = _with_arm_names(d)
    g = sns.relplot(data=d, x="layer", y="value", hue="arm", hue_order=order, palette=palette, col="dataset",
                    row="depth", kind="line", estimator="median", errorbar=("pi", 100), marker="o", markersize=3,
                    height=1.75, aspect=1.35, facet_kws={"sharex": "row", "sharey": True, "margin_titles": True})
    g.set(yscale="log")
    g.set_titles(row_template="depth {row_name}", col_template="{col_name}")
    _label_facets(g, "layer l", ylabel)
    for ax in g.axes.flat:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    _legend_below(g)
    return to_png(g.figure)


def _dodged(df: pd.DataFrame, order: list[str]) -> tuple[pd.DataFrame, list]:
    """df with ``x``: the position of its depth (0, 1, ... in depth order) shifted by its arm's place in
    ``order`` (the arms side by side at each depth), and the depths in order."""
    depths = sorted(df["depth"].unique())
    shift = {a: (k - (len(order) - 1) / 2) * min(0.18, 0.8 / max(len(order), 1)) for k, a in enumerate(order)}
    x = df["depth"].map({dp: k for k, dp in enumerate(depths)}) + df["arm"].map(shift)
    return df.assign(x=x), depths


def seed_points(df: pd.DataFrame, ylabel: str, row: str | None = None, reference: float | None = 1.0) -> bytes:
    """One point per seed of a per-case quantity, arms side by side at each depth, one panel per dataset
    (columns) and ``row`` value (rows, e.g. checkpoint); log y; a censored value (column ``censored`` True) is
    drawn at its bound as a triangle (at least that large); a dotted line at ``reference`` (1 = round / equal).
    df: tidy rows dataset, depth, arm (input-norm), seed, value."""
    d = _positive(df, "value") if len(df) else df
    if not len(d):
        return no_data(f"No data for {ylabel}.")
    d, order, palette = _with_arm_names(d)
    d, depths = _dodged(d, order)
    censored = "censored" in d and bool(d["censored"].fillna(False).astype(bool).any())
    d = d.assign(value=d["value"], kind=np.where(d["censored"].fillna(False).astype(bool), CENSORED, "measured")
                 if "censored" in d else "measured")
    g = sns.relplot(data=d, x="x", y="value", hue="arm", hue_order=order, palette=palette, col="dataset",
                    row=row, kind="scatter", style="kind" if censored else None,
                    markers={"measured": "o", CENSORED: "^"} if censored else True, s=22, alpha=0.85,
                    height=1.9, aspect=1.2, facet_kws={"sharey": True, "margin_titles": True})
    g.set(yscale="log")
    g.set_titles(row_template=f"{row} {{row_name}}" if row else "", col_template="{col_name}")
    _label_facets(g, "hidden layers (depth)", ylabel)
    for ax in g.axes.flat:
        ax.set_xticks(range(len(depths)), [str(dp) for dp in depths])
        ax.set_xlim(-0.5, len(depths) - 0.5)
        if reference is not None:
            ax.axhline(reference, color="0.4", lw=0.8, ls=":")
    _legend_below(g, ncol=4 if censored else 3)
    return to_png(g.figure)


def loss_vs_lr(runs: pd.DataFrame, marks: pd.DataFrame) -> bytes:
    """Final training loss against learning rate, one line per arm (median over seeds; a diverged run is left
    out, so a line ends where its runs diverge), one panel per dataset (columns) and depth (rows); log-log. Each
    arm's max stable learning rate is a dashed vertical line in its colour. runs: dataset, depth, arm, lr, seed,
    final_train_loss (NaN when diverged); marks: dataset, depth, arm, max_stable_lr (NaN: none)."""
    d = _positive(runs, "final_train_loss") if len(runs) else runs
    if not len(d):
        return no_data("No learning-rate sweep to plot (every run diverged, or none was run).")
    d, order, palette = _with_arm_names(d)
    g = sns.relplot(data=d, x="lr", y="final_train_loss", hue="arm", hue_order=order, palette=palette,
                    col="dataset", row="depth", kind="line", estimator="median", errorbar=None, marker="o",
                    markersize=3, height=1.8, aspect=1.35, facet_kws={"sharey": False, "margin_titles": True})
    g.set(xscale="log", yscale="log")
    g.set_titles(row_template="depth {row_name}", col_template="{col_name}")
    _label_facets(g, "learning rate", "final training loss")
    for (depth, ds), ax in g.axes_dict.items():
        m = marks[(marks["dataset"] == ds) & (marks["depth"] == depth)] if len(marks) else marks
        for r in m.itertuples():
            if np.isfinite(r.max_stable_lr) and arm_label(r.arm) in order:
                ax.axvline(r.max_stable_lr, color=PALETTE.get(r.arm, "#555555"), ls="--", lw=0.9)
    _legend_below(g)
    g.figure.text(0.5, -0.01, "dashed: each arm's max stable learning rate (every seed converges below it)",
                  ha="center", va="top", fontsize=7)
    return to_png(g.figure)

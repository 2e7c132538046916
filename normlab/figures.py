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


# ---- contour slices (the lecture's picture) ----------------------------------------------------------------------

CMAP = "viridis"
COLOR_LABEL = "log10(J \u2212 min J)"  # the colour of every contour panel (``landscape.log_excess``)
CENSORED = "beyond resolution (at least)"  # the legend's name of a censored value
SYMMETRY_NAMES = {"batchnorm": "BN scale symmetry", "layernorm": "LN symmetry"}


def fmt_num(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, exponents written short: 942, 1.05, 3.4e3, 1e6, 2.3e-4."""
    s = f"{x:.{digits}g}"
    if "e" in s:
        mantissa, exponent = s.split("e")
        s = f"{mantissa}e{int(exponent)}"
    return s


def ratio_label(panel: dict) -> str:
    """A slice's axis ratio sqrt(lambda_1/lambda_2) in words: the number; "> bound" when censored (beyond numerical
    resolution: at least that elongated); "∞" with the symmetry when the plane holds an exact flat direction of J
    (``panel["norm"]``: batchnorm -> BN scale symmetry); "no ratio" with the reason when degenerate; "not
    measured" when NaN. Never "singular"."""
    if panel.get("flat_direction"):
        return f"ratio \u221e: {SYMMETRY_NAMES.get(panel.get('norm'), 'a symmetry of J')}"
    if panel.get("degenerate"):
        return "no ratio: dead unit or < 2 live inputs"
    ratio = panel.get("ratio", np.nan)
    if ratio is None or not np.isfinite(ratio):
        return "ratio not measured"
    return f"ratio > {fmt_num(ratio, 2)}" if panel.get("censored") else f"ratio {fmt_num(ratio)}"


def slice_axes(panel: dict) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates a slice is drawn at: for a lecture slice of two weights, the weights' own values
    (origin + alphas, origin + betas); for a projected slice (``projected``: a scale-invariant unit, the plane
    orthogonal to its weight vector), the distances alphas, betas from the checkpoint along the plane's two
    orthonormal directions."""
    if panel.get("projected"):
        return np.asarray(panel["alphas"]), np.asarray(panel["betas"])
    return panel["origin"][0] + np.asarray(panel["alphas"]), panel["origin"][1] + np.asarray(panel["betas"])


def _weight_source(panel: dict, which: str) -> str | None:
    """'feature 3 (RMS 970)' / 'unit 17 (RMS 3.2)': the input (unit of A[l-1]) of largest (``which`` = 'hi') or
    smallest ('lo') RMS whose weight the slice moves, from contours.csv's input_hi/lo, rms_hi/lo; None when the
    panel does not say."""
    idx, layer = panel.get(f"input_{which}"), panel.get("layer")
    if idx is None or layer is None or not np.isfinite(idx) or idx < 0:
        return None
    rms = panel.get(f"rms_{which}")
    source = f"{'feature' if int(layer) == 1 else 'unit'} {int(idx)}"
    return source + (f" (RMS {fmt_num(rms)})" if rms is not None and np.isfinite(rms) else "")


def axis_labels(panel: dict) -> tuple[str, str]:
    """A slice's axis labels. Two weights of unit j of layer l: 'W[l] from feature 0 (RMS 970)' (layer 1) or
    'W[l] from unit 17 (RMS 3.2)', the inputs of largest and smallest RMS (``_weight_source``). A projected slice
    (scale-invariant unit): distances along u1, u2, the two weights' directions made orthogonal to the unit's
    weight vector w (layer norm: to the layer's (W[l], b[l])). Without that information in the panel, the
    generic 'w from largest-RMS input' / 'distance along u1 ⊥ w'."""
    hi, lo, layer = _weight_source(panel, "hi"), _weight_source(panel, "lo"), panel.get("layer")
    if panel.get("projected"):
        if hi is None or lo is None:
            return "distance along u1 \u22a5 w", "distance along u2 \u22a5 w"
        unit = panel.get("unit")
        w = (f"(W[{layer}], b[{layer}])" if panel.get("norm") == "layernorm"
             else f"w of unit {int(unit)}" if unit is not None and unit >= 0 else "w")
        return f"u1 \u22a5 {w}\n(from {hi})", f"u2 \u22a5 {w}\n(from {lo})"
    if hi is None or lo is None:
        return "w from largest-RMS input", "w from smallest-RMS input"
    return f"W[{layer}] from {hi}", f"W[{layer}] from {lo}"


def color_levels(losses: list) -> np.ndarray:
    """The 12 contour levels (log10(J - min J)) one colour scale spans for the panels' losses (each (n_a, n_b))."""
    from normlab import landscape

    vmin, vmax = landscape.shared_log_scale(losses)
    return np.linspace(vmin, vmax if vmax > vmin else vmin + 1, 12)


def contour_panel(ax, panel: dict, levels: np.ndarray, title: str | None = None):
    """Draw one slice on ``ax``: filled contours of log10(J - min J) at ``levels``, white contour lines, the
    checkpoint as a red +, equal aspect (elongation is visible), the weights named on the axes
    (``axis_labels``), and the axis ratio (``ratio_label``) as the title under ``title``. Returns the filled
    contour set (for a colorbar)."""
    from normlab import landscape

    x, y = slice_axes(panel)
    z = np.clip(landscape.log_excess(panel["loss"]).T, levels[0], levels[-1])
    filled = ax.contourf(x, y, z, levels=levels, cmap=CMAP)
    ax.contour(x, y, z, levels=levels[::2], colors="white", linewidths=0.3)
    centre = (0.0, 0.0) if panel.get("projected") else tuple(panel["origin"])
    ax.plot(*centre, marker="+", color="#e41a1c", ms=5, mew=1)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(False)
    ax.tick_params(labelsize=5, length=2, pad=1)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
    xlabel, ylabel = axis_labels(panel)
    ax.set_xlabel(xlabel, fontsize=6, labelpad=1)
    ax.set_ylabel(ylabel, fontsize=6, labelpad=1)
    ratio = ratio_label(panel)
    ax.set_title(f"{title}\n{ratio}" if title else ratio, fontsize=7)
    return filled


def _colorbar(fig, mappable, axes, fontsize: float = 6, cax=None) -> None:
    """A colorbar of log10(J - min J) beside ``axes`` (or in ``cax``) with a few round ticks."""
    bar = (fig.colorbar(mappable, cax=cax) if cax is not None
           else fig.colorbar(mappable, ax=axes, fraction=0.04, pad=0.02, aspect=15))
    bar.set_label(COLOR_LABEL, fontsize=fontsize)
    bar.locator = matplotlib.ticker.MaxNLocator(5)
    bar.formatter = matplotlib.ticker.FormatStrFormatter("%g")
    bar.update_ticks()
    bar.ax.tick_params(labelsize=fontsize - 1)


def contour_grid(panels: list[list[dict | None]], row_labels: list[str], col_labels: list[str], ticks: bool = True,
                 dpi: int = DPI) -> bytes:
    """A grid of contour slices: rows (e.g. variants) x columns (e.g. layers). Each panel dict holds
    alphas (n_a,), betas (n_b,), loss (n_a, n_b), origin (2,), ratio (float, NaN if not reported), the
    flags censored, flat_direction, degenerate (bool; ``ratio_label``) and projected (a scale-invariant unit's
    slice in the plane orthogonal to its weights: ``slice_axes``), and optionally what names its axes (layer,
    unit, input_hi, input_lo, rms_hi, rms_lo, norm: ``axis_labels``); None leaves the panel empty.
    Colour = log10(J - min J), one scale and colorbar per row (``landscape.shared_log_scale``); the axis ratio
    is each panel's title (``contour_panel``). ``ticks`` False: no tick labels (a large grid's bytes); ``dpi``:
    its resolution."""
    n_rows, n_cols = len(panels), max((len(r) for r in panels), default=0)
    if not n_rows or not n_cols or all(p is None for r in panels for p in r):
        return no_data("No contour slice to draw.")
    size = 2.4 if ticks else 1.75  # inches a panel: room for the tick labels and long weight names
    fig, axes = plt.subplots(n_rows, n_cols + 1, figsize=(size * n_cols + 0.5, 1.8 * n_rows + 0.3), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * n_cols + [0.06], "wspace": 0.75, "hspace": 0.6})
    for i, row in enumerate(panels):
        levels = color_levels([p["loss"] for p in row if p is not None])
        filled = None
        for j in range(n_cols):
            ax, p = axes[i][j], (row[j] if j < len(row) else None)
            if p is None:
                ax.axis("off")
                continue
            filled = contour_panel(ax, p, levels, title=col_labels[j] if i == 0 else None)
            if not ticks:
                ax.tick_params(labelbottom=False, labelleft=False, length=0)
            if j == 0 or row[j - 1] is None:
                ax.annotate(row_labels[i].replace(", ", ",\n"), xy=(0, 0.5), xycoords="axes fraction",
                            xytext=(-34 if ticks else -24, 0), textcoords="offset points", rotation=90, ha="right",
                            va="center", fontsize=7, fontweight="bold")
        if filled is None:
            axes[i][-1].axis("off")
        else:
            _colorbar(fig, filled, None, cax=axes[i][-1])
    return to_png(fig, dpi)


def contour_row(groups: list[tuple[str, list[tuple[str, dict]]]]) -> bytes:
    """One wide row of contour slices in groups (the report's headline): ``groups`` = [(heading, [(title, panel)])]
    (panel as in ``contour_grid``); the panels of a group share one colour scale and colorbar; each panel shows
    its title, its axis ratio in large type, and its weights on the axes."""
    groups = [(h, ps) for h, ps in groups if ps]
    if not groups:
        return no_data("No contour slice to draw.")
    n = sum(len(ps) for _, ps in groups)
    fig = plt.figure(figsize=(2.75 * n + 0.6 * len(groups), 3.3), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(1, len(groups), width_ratios=[len(ps) + 0.25 for _, ps in groups],
                                           wspace=0.02))
    for sub, (heading, ps) in zip(subfigs, groups, strict=True):
        axes = np.atleast_1d(sub.subplots(1, len(ps)))
        levels = color_levels([p["loss"] for _, p in ps])
        for ax, (title, p) in zip(axes, ps, strict=True):
            filled = contour_panel(ax, p, levels)
            ax.set_title(title, fontsize=9, loc="center", pad=16)
            ax.text(0.5, 1.015, ratio_label(p).replace("ratio", "axis ratio", 1), transform=ax.transAxes,
                    ha="center", va="bottom", fontsize=10, fontweight="bold")
            ax.xaxis.label.set_fontsize(8)
            ax.yaxis.label.set_fontsize(8)
            ax.tick_params(labelsize=7)
        _colorbar(sub, filled, list(axes), fontsize=8)
        sub.suptitle(heading, fontsize=10)
    return to_png(fig)


# ---- the question figures (seaborn, faceted from tidy tables) ----------------------------------------------------

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

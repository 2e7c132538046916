"""The contour slices' figures (the lecture's picture): one panel per slice of J through two weights, drawn
with its colorbar, equal aspect, axes naming the two weights and the slice's axis ratio; grids of panels
(rows x columns) and the report's wide headline row. Pure functions from panel dicts (``figure_tasks``) to PNG
bytes (``figures.to_png``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from normlab import figures

CMAP = "viridis"
COLOR_LABEL = "log10(J \u2212 min J)"  # the colour of every contour panel (``landscape.log_excess``)
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
                 dpi: int = figures.DPI) -> bytes:
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
        return figures.no_data("No contour slice to draw.")
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
    return figures.to_png(fig, dpi)


def contour_row(groups: list[tuple[str, list[tuple[str, dict]]]]) -> bytes:
    """One wide row of contour slices in groups (the report's headline): ``groups`` = [(heading, [(title, panel)])]
    (panel as in ``contour_grid``); the panels of a group share one colour scale and colorbar; each panel shows
    its title, its axis ratio in large type, and its weights on the axes."""
    groups = [(h, ps) for h, ps in groups if ps]
    if not groups:
        return figures.no_data("No contour slice to draw.")
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
    return figures.to_png(fig)


# ---- the question figures (seaborn, faceted from tidy tables) ----------------------------------------------------

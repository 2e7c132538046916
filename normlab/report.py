"""The HTML report: tables -> claims (verdict) and figures -> one self-contained file."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from normlab import figures, io, verdict

PACKAGES = ["normlab", "jax", "jaxlib", "optax", "numpy", "pandas", "scikit-learn", "matplotlib", "seaborn",
            "snakemake", "Jinja2"]


def load_tables(paths: dict) -> dict[str, pd.DataFrame]:
    return {k: pd.read_csv(v) for k, v in paths.items()}


def fmt(x, digits: int = 3) -> str:
    """A number for prose: 3 significant digits; NaN as 'n/a'; inf as '∞'."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if np.isinf(x):
        return "∞"
    return f"{x:.{digits}g}"


def dataset_figures(ds: str, t: dict[str, pd.DataFrame]) -> list[dict]:
    """The per-dataset figures with their captions and alt texts."""
    sel = lambda df: df[df["dataset"] == ds]  # noqa: E731
    li = sel(t["layer_inputs"])
    spread = li[(li["metric"] == "rms_spread") & (li["run"] == "best") & (li["checkpoint"] == "end")]
    grads = sel(t["gradients"])
    grads = grads[(grads["metric"] == "grad_norm") & (grads["run"] == "best")]
    grads = grads[grads["step"] == grads.groupby("variant")["step"].transform("max")]
    figs = [
        ("Training loss at each variant's best learning rate (median and range over seeds).",
         figures.training_curves(sel(t["training"]), sel(t["variants"]))),
        ("Largest learning rate at which every seed converged (x: no stable learning rate on the grid).",
         figures.max_stable_lr(sel(t["variants"]))),
        ("Spread of the layer inputs' scales: max/min RMS over live units of A[l-1], end of the best-LR run. "
         "1 means every input of layer l is on one scale (round contours in the W[l] directions).",
         figures.per_layer(spread, "value", "RMS spread of A[l-1]")),
        ("Gradient norm ||dJ/dW[l]|| per layer at the end of the best-LR run.",
         figures.per_layer(grads, "value", "||dJ/dW[l]||")),
    ]
    return [{"caption": c, "alt": f"{ds}: {c}", "src": figures.data_uri(png)} for c, png in figs]


def methods(config: dict, tables: dict, benchmarks_dir: Path) -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    wall = []
    for f in sorted(benchmarks_dir.rglob("*.tsv")) if benchmarks_dir.exists() else []:
        rule = f.relative_to(benchmarks_dir).parts[0].removesuffix(".tsv")
        b = pd.read_csv(f, sep="\t")
        wall.append({"rule": rule, "s": float(b["s"].iloc[-1])})
    wall = (pd.DataFrame(wall).groupby("rule")["s"].agg(["count", "sum", "max"]).reset_index()
            if wall else pd.DataFrame(columns=["rule", "count", "sum", "max"]))
    return {"versions": versions, "commit": commit, "python": platform.python_version(),
            "config": json.dumps(config, indent=2, sort_keys=True, default=str), "wall": wall.to_dict("records")}


def build_report(table_paths: dict, provenance_paths: list, config: dict, out, benchmarks_dir="benchmarks") -> None:
    """Render the report to ``out`` from the tables (paths by kind) and the datasets' provenance."""
    t = load_tables(table_paths)
    claims = verdict.all_claims(t)
    datasets = sorted(t["variants"]["dataset"].unique())
    provenance = {Path(p).stem: json.loads(Path(p).read_text()) for p in provenance_paths}
    env = jinja2.Environment(loader=jinja2.PackageLoader("normlab", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    html = env.get_template("report.html.j2").render(
        title=config.get("report", {}).get("title", "normlab report"), claims=claims, datasets=datasets,
        provenance=provenance, variants=t["variants"], figures={ds: dataset_figures(ds, t) for ds in datasets},
        methods=methods(config, t, Path(benchmarks_dir)), fmt=fmt,
    )
    io.write_text(out, html)

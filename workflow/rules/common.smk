# Shared helpers: the variant grid from the config, and wildcard constraints.
import os

from normlab.variants import variant_grid

DATASETS = sorted(config["datasets"])
VARIANTS = [
    v.name
    for v in variant_grid(
        config["variants"]["inputs"], config["variants"]["norms"], config["variants"]["depths"]
    )
]
INPUTS = sorted(set(config["variants"]["inputs"]))
CONDA_ENV = "../envs/normlab.yaml"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    variant=r"[a-z]+-[a-z]+-d[0-9]+",
    input=r"[a-z]+",


def variant_input(wildcards):
    return wildcards.variant.split("-")[0]


# The tables the report reads, and the per-variant files each one concatenates.
TABLES = ["runs", "variants", "training", "layer_inputs", "layer_units", "gradients", "curvature", "contours"]


def table_inputs(wildcards):
    per_variant = {
        "runs": "results/{dataset}/{variant}/runs.csv",
        "training": "results/{dataset}/{variant}/training.csv",
        "layer_inputs": "results/{dataset}/{variant}/analysis/layer_inputs.csv",
        "layer_units": "results/{dataset}/{variant}/analysis/layer_units.csv",
        "gradients": "results/{dataset}/{variant}/analysis/gradients.csv",
        "curvature": "results/{dataset}/{variant}/analysis/curvature.csv",
        "contours": "results/{dataset}/{variant}/analysis/contours.csv",
    }
    inputs = {k: expand(p, dataset=DATASETS, variant=VARIANTS) for k, p in per_variant.items()}
    inputs["variants"] = expand("results/{dataset}/variants.csv", dataset=DATASETS)
    return inputs


# The local source file of a dataset, if any (an input of fetch).
def source_file(wildcards):
    """A local csv/parquet source is an input of fetch (so editing the file reruns the dataset); a
    missing one is not, so that fetch itself reports it with a clear message."""
    entry = config["datasets"][wildcards.dataset]
    return [entry[k] for k in ("csv", "parquet") if k in entry and os.path.isfile(entry[k])]

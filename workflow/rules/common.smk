# Shared helpers: the variant grid from the config, and wildcard constraints.
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

"""Variant names: ``<input>-<norm>-d<depth>``, e.g. ``standardize-batchnorm-d4``. They are stable
strings used as Snakemake wildcards and as the ``variant`` column of every table."""

from __future__ import annotations

import dataclasses
import itertools
import re

from normlab.spec import NORMS, ModelSpec

# The input treatments: ``raw`` and ``standardize`` are data preparation (normlab.preprocess writes one
# processed file for each); ``batchnorm`` is the network's own batch norm on the raw inputs
# (``ModelSpec.input_norm``), so its variants read the raw file. The norms are the model spec's.
# This module imports neither numpy nor JAX at import time: the workflow imports it to name its jobs, and
# every Snakemake process (one per job on a cluster, two per SLURM job) pays for what it imports.
INPUTS = ("raw", "standardize", "batchnorm")
DATA_INPUTS = ("raw", "standardize")  # the input treatments with a processed file of their own

VARIANT_RE = re.compile(r"^(?P<input>[a-z]+)-(?P<norm>[a-z]+)-d(?P<depth>[0-9]+)$")


@dataclasses.dataclass(frozen=True, order=True)
class Variant:
    input: str
    norm: str
    depth: int

    @property
    def name(self) -> str:
        return f"{self.input}-{self.norm}-d{self.depth}"

    @property
    def data_input(self) -> str:
        """The processed data file the variant trains on: ``raw`` for the network's own input batch norm."""
        return "raw" if self.input == "batchnorm" else self.input

    @classmethod
    def parse(cls, name: str) -> Variant:
        m = VARIANT_RE.match(name)
        if not m or m["input"] not in INPUTS or m["norm"] not in NORMS:
            raise ValueError(f"bad variant name {name!r}; expected <input>-<norm>-d<depth> with input in "
                             f"{INPUTS} and norm in {NORMS}")
        return cls(m["input"], m["norm"], int(m["depth"]))


def variant_grid(inputs, norms, depths, batchnorm_input_norms=("none",)) -> list[Variant]:
    """The input x norm x depth combinations of a study, in a fixed order (inputs, then norms, then
    depths), less two kinds:

    * depth 0 has no hidden layer to normalize, so it has one variant per input treatment,
      ``<input>-none-d0``, whatever ``norms`` holds;
    * the ``batchnorm`` input treatment is combined only with the norms in ``batchnorm_input_norms``.
    """
    out = []
    for i, n, d in itertools.product(inputs, norms, depths):
        d = int(d)
        if d == 0:
            n = "none"
        if i == "batchnorm" and n not in batchnorm_input_norms:
            continue
        v = Variant(i, n, d)
        if v not in out:
            out.append(v)
    return out


def lr_grid(lr_min: float, lr_max: float, n: int) -> list[float]:
    """n log-spaced learning rates from lr_min to lr_max inclusive, rounded to 4 significant digits so
    that they print and compare exactly."""
    import numpy as np

    return [float(f"{v:.4g}") for v in np.logspace(np.log10(lr_min), np.log10(lr_max), n)]


def model_spec(variant: Variant, n_features: int, n_outputs: int, width: int, activation: str, eps: float,
               loss: str = "softmax_cross_entropy") -> ModelSpec:
    """The ModelSpec of a variant: ``depth`` hidden layers of ``width`` units."""
    return ModelSpec(
        sizes=(n_features, *[width] * variant.depth, n_outputs), activation=activation, norm=variant.norm,
        eps=eps, loss=loss, input=variant.input, input_norm="batchnorm" if variant.input == "batchnorm" else "none",
    )

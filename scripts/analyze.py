"""Rules analyze and analyze_input_bn: the common-LR and best-LR runs' checkpoints (every seed) and their
measurements, for the input treatments of one network (sm.params.variants, in the order of the rule's per-variant
inputs and outputs)."""
import sys
from pathlib import Path

from normlab import analysis, io, model, runtime

sm = snakemake  # noqa: F821


def nth(files, k: int) -> str:
    """The k-th path of a named input or output (Snakemake gives one path as a string)."""
    return files if isinstance(files, str) else files[k]


def analyze_variant(k: int, variant: str, variant_rows: list[dict]) -> None:
    """The k-th variant of the job: read its inputs, measure it, write its outputs."""
    spec = model.ModelSpec.from_json(io.read_text(nth(sm.input.model, k)))
    data = io.load_npz(nth(sm.input.data, k))
    sweep = io.load_npz(nth(sm.input.sweep, k))
    row = next(r for r in variant_rows if r["variant"] == variant)
    with io.open_npz(nth(sm.input.checkpoints, k)) as checkpoints:
        result = analysis.analyze_variant(spec, data, sweep, checkpoints, row, sm.params.analysis, sm.params.sweep,
                                          lambda msg: print(f"{variant}: {msg}", file=sys.stderr, flush=True))
    out_dir = Path(nth(sm.output.checkpoint_dirs, k))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, arrays in result.checkpoints.items():
        io.write_npz(out_dir / f"{name}.npz", arrays)
    for kind, table in result.tables.items():
        io.write_csv(nth(sm.output[kind], k), table)
    io.write_npz(nth(sm.output.spectra, k), result.spectra)
    io.write_npz(nth(sm.output.contour_grids, k), result.contour_grids)


with runtime.job(sm.log[0], sm.threads, f"analyze {sm.wildcards.dataset}/{sm.wildcards.arch}", uses_jax=True,
                 optimization_level=sm.params.xla_level):
    variant_rows = io.read_csv_rows(sm.input.variants)
    for k, variant in enumerate(sm.params.variants):
        analyze_variant(k, variant, variant_rows)

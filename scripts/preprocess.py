"""Rule preprocess: split once, write data/processed/<dataset>/<input>.npz for every input treatment."""
import pandas as pd

from normlab import io, preprocess, runtime

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, f"preprocess {sm.wildcards.dataset}"):
    df = pd.read_csv(sm.input.csv)
    prepared = preprocess.prepare(
        df, sm.params.entry.get("target", "target"), sm.params.split["test_fraction"], sm.params.split["seed"],
        sm.params.inputs,
    )
    for treatment, path in zip(sm.params.inputs, sm.output, strict=True):
        io.write_npz(path, prepared[treatment])

"""Rule preprocess: check the table, split once, write data/processed/<dataset>/<input>.npz for every input
treatment. A bad table stops here with one line naming the dataset, the columns and the fix."""
import json

from normlab import io, preprocess, runtime

sm = snakemake  # noqa: F821
name = sm.wildcards.dataset
with runtime.job(sm.log[0], sm.threads, f"preprocess {name}"):
    target = json.loads(io.read_text(sm.input.provenance))["target"]
    prepared = preprocess.prepare_dataset(io.read_csv(sm.input.csv), sm.params.entry, target, sm.params.split,
                                          sm.params.inputs, sm.params.batch_size, name, sm.params.dtype)
    for treatment, path in zip(sm.params.inputs, sm.output, strict=True):
        io.write_npz(path, prepared[treatment])

# Snakemake's own report (`snakemake --report report.html`, or report.zip for a full study, whose tables are
# hundreds of MB): the labels and groups of the items that rules/report.smk marks with report(): each table, the
# report, its bottom line, and every figure of the report, each with its caption (workflow/report/).
import json
import re
from pathlib import Path

# What one row of each table is (its label in Snakemake's report; the columns: workflow/report/tables/).
TABLE_ROWS = {
    "runs": "one training run (variant, learning rate, seed)",
    "variants": "one variant: its learning rates and outcome over seeds",
    "variant_seeds": "one variant and seed",
    "training": "one step of one grid run",
    "checkpoints": "one analysed checkpoint of one run",
    "layer_inputs": "one layer-input scale of a layer at a checkpoint",
    "layer_units": "one unit of a layer's input at a checkpoint",
    "gradients": "one gradient metric of a layer at a step",
    "curvature": "one curvature metric of a scope at a checkpoint",
    "contours": "one contour slice at a checkpoint",
    "smoothness": "one smoothness metric along the gradient at a checkpoint",
}


def figure_group(wildcards):
    """A figure's subcategory in Snakemake's report, from its file name (normlab.report.write_figure_files):
    ``headline``, ``q<N>-<k>`` (a question's figure) or ``<dataset>-<k>``."""
    name = wildcards.name
    if name == "headline":
        return "Headline"
    question = re.fullmatch(r"q(\d+)(-\d+)?", name)
    if question:
        return f"Question {question[1]}"
    return f"Dataset {name.rsplit('-', 1)[0]}"


def figure_labels(wildcards, output):
    """A figure's labels in Snakemake's report: its file name and its caption in the report (captions.json
    beside the PNG files). Snakemake fills ``{name}`` wildcards into label text: a caption's braces become
    parentheses."""
    path = Path(output.figures, "captions.json")
    captions = json.loads(path.read_text()) if path.is_file() else {}
    caption = captions.get(f"{wildcards.name}.png", "")
    return {"figure": wildcards.name, "caption": caption.replace("{", "(").replace("}", ")")}

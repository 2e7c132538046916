# Shared helpers: the study's folders, the variant grid from the config, wildcard constraints, and each job's
# resources.
import math
import os

from normlab.runtime import xla_optimization_level
from normlab.variants import Variant, variant_grid

# Every file a study writes lives under its own folders (config key `study`, default "default"), so studies
# with different names sit side by side and never rerun each other's jobs. Downloads are shared: they are
# cached by address and checked by checksum (rule fetch).
STUDY = config["study"]
DOWNLOAD_CACHE = "data/cache"


def data_path(path):
    return f"data/{STUDY}/{path}"


def results_path(path):
    return f"results/{STUDY}/{path}"


def report_path(path):
    return f"reports/{STUDY}/{path}"


def log_path(path):
    return f"logs/{STUDY}/{path}"


def benchmark_path(path):
    return f"benchmarks/{STUDY}/{path}"


DATASETS = sorted(config["datasets"])
VARIANT_GRID = variant_grid(
    config["variants"]["inputs"],
    config["variants"]["norms"],
    config["variants"]["depths"],
    config["variants"].get("batchnorm_input_norms", ["none"]),
)
VARIANTS = [v.name for v in VARIANT_GRID]
# The processed data files the variants read (the batchnorm input treatment reads the raw one).
DATA_INPUTS = sorted({v.data_input for v in VARIANT_GRID})
# The input treatments that data preparation makes (one analyze job serves them all per network) and the
# network's own input batch norm (another program: its own analyze job per network, rule analyze_input_bn).
PREPARED_INPUTS = sorted(set(config["variants"]["inputs"]) - {"batchnorm"})
INPUT_BN_VARIANTS = [v.name for v in VARIANT_GRID if v.input == "batchnorm"]
CONDA_ENV = "../envs/normlab.yaml"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    variant=r"[a-z]+-[a-z]+-d[0-9]+",
    arch=r"[a-z]+-d[0-9]+",
    input=r"[a-z]+",


def variant_input(wildcards):
    """The processed data file (input treatment) a variant trains on."""
    return Variant.parse(wildcards.variant).data_input


# The tables the report reads, and the per-variant files each one concatenates.
TABLES = ["runs", "variants", "variant_seeds", "training", "checkpoints", "layer_inputs", "layer_units", "gradients",
          "curvature", "contours", "smoothness"]


# The analyze job's per-variant files (besides its checkpoints folder), by output name.
ANALYSIS_FILES = {
    "checkpoints": "checkpoints.csv",
    "layer_inputs": "layer_inputs.csv",
    "layer_units": "layer_units.csv",
    "gradients": "gradients.csv",
    "curvature": "curvature.csv",
    "spectra": "spectra.npz",
    "contours": "contours.csv",
    "contour_grids": "contours.npz",
    "smoothness": "smoothness.csv",
}


def table_inputs(wildcards):
    per_variant = {
        "runs": "{dataset}/{variant}/runs.csv",
        "training": "{dataset}/{variant}/training.csv",
        "checkpoints": "{dataset}/{variant}/analysis/checkpoints.csv",
        "layer_inputs": "{dataset}/{variant}/analysis/layer_inputs.csv",
        "layer_units": "{dataset}/{variant}/analysis/layer_units.csv",
        "gradients": "{dataset}/{variant}/analysis/gradients.csv",
        "curvature": "{dataset}/{variant}/analysis/curvature.csv",
        "contours": "{dataset}/{variant}/analysis/contours.csv",
        "smoothness": "{dataset}/{variant}/analysis/smoothness.csv",
    }
    inputs = {k: expand(results_path(p), dataset=DATASETS, variant=VARIANTS) for k, p in per_variant.items()}
    for per_dataset in ("variants", "variant_seeds"):
        inputs[per_dataset] = expand(results_path(f"{{dataset}}/{per_dataset}.csv"), dataset=DATASETS)
    return inputs


# What a job reads of the config is its params, and nothing more: Snakemake reruns a job whose params changed,
# so a job must not rerun for a setting it never reads (another rule's, or the list of depths). Snakemake compares
# a param by its repr, so mappings are passed with their keys sorted (``settings``): the order of the keys in a
# config file is not a setting.
def settings(value):
    """``value`` with the keys of every mapping in it sorted (lists keep their order)."""
    if isinstance(value, dict):
        return {k: settings(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [settings(v) for v in value]
    return value


def subset(mapping, keys):
    """The entries of ``mapping`` named in ``keys`` (those present), keys sorted (``settings``)."""
    return settings({k: mapping[k] for k in keys if k in mapping})


# the network's shape besides its norm and depth (which the variant's name gives): normlab.train.train_variant
TRAIN_VARIANT_KEYS = ("width", "activation", "eps")
# the dataset entry's keys normlab.preprocess.prepare_dataset reads (sklearn: a bundled dataset's own task)
PREPROCESS_ENTRY_KEYS = ("sklearn", "task", "categorical", "impute", "drop")


# The local source file of a dataset, if any (an input of fetch).
def source_file(wildcards):
    """A local csv/parquet source is an input of fetch (so editing the file reruns the dataset); a
    missing one is not, so that fetch itself reports it with a clear message."""
    entry = config["datasets"][wildcards.dataset]
    return [entry[k] for k in ("csv", "parquet") if k in entry and os.path.isfile(entry[k])]


# ----------------------------------------------------------------------------------------------------
# Resources. Each rule's requests start from the largest wall time (seconds) and memory peak (MB) of its
# jobs in the benchmark files (benchmarks/<study>/<rule>/...tsv, on 2 cores) of the default study (fetch,
# preprocess, select, train, analyze) or of the quick study (tables, report; see study_scale), given at the
# rule (runtime_minutes(<s>, ...), mem_mb(<MB>, ...)). Requests add head room (x3 runtime, at least 10
# minutes, +1 GB memory), scale with the study for train, analyze, tables and report, grow with each retry
# (attempt), and are multiplied by config["resources"]'s factors. runtime in minutes, mem_mb in MB.
# ----------------------------------------------------------------------------------------------------
RESOURCES = config.get("resources", {})
TRAIN_THREADS = RESOURCES.get("train_threads", 1)
ANALYZE_THREADS = RESOURCES.get("analyze_threads", 1)
# The SLURM partition of every job ("" = the cluster's default partition); ignored by a local run.
SLURM_PARTITION = os.environ.get("NORMLAB_SLURM_PARTITION", RESOURCES.get("slurm_partition", ""))


def train_scale(wildcards):
    """Training cost of a variant relative to the default study's deepest one: steps x runs x layers x
    width^2 (600 steps, 13 LRs x 3 seeds, 9 layers, width 64)."""
    s, v = config["sweep"], config["variants"]
    runs = s["n_lr"] * len(s["seeds"])
    layers = Variant.parse(wildcards.variant).depth + 1
    return s["steps"] * runs * layers * v["width"] ** 2 / (600 * 39 * 9 * 64**2)


def arch_variants(arch, inputs):
    """The variants ``<input>-<arch>`` of a network ``<norm>-d<depth>`` for the input treatments ``inputs``."""
    return [f"{i}-{arch}" for i in inputs]


def variant_paths(path, dataset, arch, inputs):
    """``path`` (with {dataset} and {variant}) for every variant of the network ``arch`` with the input
    treatments ``inputs``, in their order; dataset and arch may be wildcards themselves ("{dataset}", "{arch}")."""
    return [path.format(dataset=dataset, variant=v) for v in arch_variants(arch, inputs)]


def per_variant(path, inputs):
    """An input function: ``variant_paths`` of the job's dataset and network."""
    return lambda wc: variant_paths(path, wc.dataset, wc.arch, inputs)


def analyze_outputs(path, inputs):
    """Output patterns: ``variant_paths`` with the dataset and network left as wildcards."""
    return variant_paths(path, "{dataset}", "{arch}", inputs)


def analyze_scale(wildcards):
    """Analysis cost of one variant of the job's network relative to the default study's deepest variant:
    examples x layers^2 (each of the L + 1 curvature scopes and per-layer slices runs the whole network) x
    width^2 x Lanczos steps."""
    a, v = config["analysis"], config["variants"]
    layers = int(wildcards.arch.rsplit("-d", 1)[1]) + 1
    steps = a["curvature"]["lanczos_steps"]
    return a["max_examples"] * layers**2 * v["width"] ** 2 * steps / (512 * 81 * 64**2 * 30)


def analyze_job_scale(wildcards):
    """Cost of an analyze job (every prepared input treatment of the network) relative to the default study's
    deepest variant: what its runtime request scales with (its memory holds one variant at a time)."""
    return max(1, len(PREPARED_INPUTS)) * analyze_scale(wildcards)


def xla_level(scale):
    """A params function: XLA's optimization level of a job of cost ``scale`` (level 0 for compile-bound
    jobs, such as the quick study's; see normlab.runtime.SMALL_JOB_SCALE)."""
    return lambda wildcards: xla_optimization_level(scale(wildcards))


def study_scale(wildcards):
    """Size of the whole study relative to the quick one (1 dataset x 10 variants), for the rules that read
    every variant (tables, report: their base requests are the quick study's)."""
    return len(DATASETS) * len(VARIANTS) / 10


def _request(base, factor_key):
    return int(math.ceil(base * RESOURCES.get(factor_key, 1.0)))


def runtime_minutes(measured_s, scale=lambda wc: 1.0, floor=10):
    """A runtime request: 3x the measured seconds at the default scale, times the variant's scale, at
    least ``floor`` minutes, times the attempt (a retried job gets more time)."""
    return lambda wc, attempt: _request(max(floor, 3 * measured_s * scale(wc) / 60) * attempt, "runtime_factor")


def mem_mb(measured_mb, scale=lambda wc: 1.0):
    """A memory request: 1 GB above the measured peak at the default scale (scaled beyond it)."""
    return lambda wc: _request(1000 + measured_mb * max(1.0, scale(wc)), "mem_factor")

"""Config mistakes stop the study before any job, in words (normlab.config_check, called by the Snakefile).

Each kind of schema error is asserted by its message's first line: the key path, the bad value, what is allowed
and an example (an unknown key: where it is, the keys allowed there and the closest one); then each check across
keys (lr_min < lr_max, steps a multiple of log_every, the batchnorm input's variants, a dataset entry's target,
drop and categorical, the synthetic-only keys). The valid configs get exactly the defaults that
snakemake.utils.validate fills in. The workflow tests run ``snakemake -n`` on refused configs in a copy of the
repository: the message's first line follows Snakemake's own "in file" line, the whole output stays short, and
no file of the study is written."""

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from snakemake.common.configfile import _load_configfile
from snakemake.utils import validate
from snakemake_cli import snakemake_exe, subprocess_env

from normlab import config_check as C
from normlab import variants as V

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = C.load_schema(SCHEMA_PATH)
BASE = {"datasets": {"d": {"sklearn": "iris"}}}
HINT = ("(every key is described in workflow/schemas/config.schema.yaml; NORMLAB_CONFIG_DETAIL=1 adds jsonschema's "
        "report)")
MAX_OUTPUT_LINES = 40  # the whole output of `snakemake -n` on a refused config


def refusal(config: dict, **kw) -> str:
    """The message of the ConfigError that ``config`` raises."""
    with pytest.raises(C.ConfigError) as err:
        C.check_config(copy.deepcopy(config), SCHEMA, **kw)
    return str(err.value)


def first_line(config: dict) -> str:
    return refusal(config).splitlines()[0]


def keys_of(*path) -> str:
    return ", ".join(C.schema_at(SCHEMA, path)["properties"])


def with_sweep(**sweep) -> dict:
    return {**BASE, "sweep": sweep}


def with_variants(**variants) -> dict:
    return {**BASE, "variants": variants}


def entry(**keys) -> dict:
    return {"datasets": {"d": keys}}


# --- valid configs and their defaults -------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
    yaml.safe_load((REPO / "config" / "quick.yaml").read_text()),
    BASE,
], ids=["config.yaml", "quick.yaml", "minimal"])
def test_valid_configs_pass_with_the_defaults_snakemake_validate_fills(config):
    ours, theirs = copy.deepcopy(config), copy.deepcopy(config)
    assert C.check_config(ours, SCHEMA) is ours
    validate(theirs, str(SCHEMA_PATH))
    assert ours == theirs


def test_defaults_are_filled_in_place_and_the_schema_is_not_changed():
    schema = copy.deepcopy(SCHEMA)
    config = copy.deepcopy(BASE)
    C.check_config(config, schema)
    assert config["study"] == "default" and config["sweep"]["steps"] == 600 and config["split"]["min_test_rows"] == 10
    assert config["analysis"]["curvature"]["lanczos_steps"] == 30  # a default inside a defaulted section
    assert schema == SCHEMA  # each config gets its own copy of a default mapping
    second = copy.deepcopy(BASE)
    C.check_config(second, schema)
    assert second["sweep"] is not config["sweep"]


def test_the_schema_reads_as_snakemake_reads_it():
    assert C.load_schema(SCHEMA_PATH) == _load_configfile(str(SCHEMA_PATH), filetype="Schema")


def schema_leaves(s, path=()):
    """(path, schema) of every key the schema describes (a dataset entry's keys under the name "d")."""
    for name, sub in s.get("properties", {}).items():
        yield (*path, name), sub
        yield from schema_leaves(sub, (*path, name))
    if isinstance(s.get("additionalProperties"), dict):
        yield (*path, "d"), s["additionalProperties"]
        yield from schema_leaves(s["additionalProperties"], (*path, "d"))


@pytest.mark.parametrize("path", [p for p, _ in schema_leaves(SCHEMA)], ids=".".join)
def test_every_key_has_an_example_and_a_description_in_words(path):
    assert C.example(SCHEMA, list(path)).startswith(f"{path[-1]}: ")
    assert "schema allows" not in C.describe(C.schema_at(SCHEMA, list(path)))


# --- schema errors, in words ----------------------------------------------------------------------------------

def test_a_value_below_its_minimum():
    assert refusal(with_sweep(steps=0)).splitlines() == [
        "sweep.steps is 0; it must be an integer >= 1 (e.g. steps: 600, the default)",
        "  sweep.steps: SGD steps; a multiple of log_every.",
        HINT,
    ]
    assert first_line({**BASE, "split": {"test_fraction": 1.5}}) == (
        "split.test_fraction is 1.5; it must be a number > 0 and < 1 (e.g. test_fraction: 0.25, the default)")
    assert first_line(with_variants(depths=[0, 99])) == (
        "variants.depths[1] is 99; each item must be an integer from 0 to 64 (e.g. depths: [0, 2, 4, 8], the default)")


def test_a_wrong_type_names_the_type():
    assert first_line(with_sweep(steps="many")) == (
        "sweep.steps is 'many' (text); it must be an integer >= 1 (e.g. steps: 600, the default)")
    assert first_line(with_sweep(steps=600.5)) == (
        "sweep.steps is 600.5 (a number with a fraction); it must be an integer >= 1 (e.g. steps: 600, the default)")
    assert first_line(with_sweep(seeds=0)) == (
        "sweep.seeds is 0 (an integer); it must be a list of integers >= 0, at least one, no repeats "
        "(e.g. seeds: [0, 1, 2], the default)")
    assert first_line(entry(sklearn="iris", target=3)) == (
        "datasets.d.target is 3 (an integer); it must be a non-empty string (e.g. target: label)")
    assert first_line({**BASE, "sweep": None}) == (
        f"sweep is null (empty); it must be a mapping with the keys {keys_of('sweep')} (e.g. sweep: {{}}, the default)")


def test_repeats_in_a_list_are_named():
    assert first_line(with_sweep(seeds=[1, 1, 2, 2, 3])) == (
        "sweep.seeds is [1, 1, 2, 2, 3], which repeats 1, 2; it must be a list of integers >= 0, at least one, no "
        "repeats (e.g. seeds: [0, 1, 2], the default)")


def test_an_unknown_key_names_where_it_is_the_keys_allowed_and_the_closest():
    assert refusal({**BASE, "sweeps": {}}).splitlines() == [
        f"unknown key sweeps (did you mean sweep?); the top-level keys are {keys_of()}", HINT]
    assert first_line(with_sweep(stpes=10)) == (
        f"unknown key sweep.stpes (did you mean sweep.steps?); the keys of sweep are {keys_of('sweep')}")
    assert first_line({**BASE, "analysis": {"curvature": {"top_kk": 3}}}) == (
        "unknown key analysis.curvature.top_kk (did you mean analysis.curvature.top_k?); the keys of "
        f"analysis.curvature are {keys_of('analysis', 'curvature')}")
    assert first_line(entry(sklearn="iris", tagret="y")) == (
        "unknown key datasets.d.tagret (did you mean datasets.d.target?); the keys of a dataset entry are "
        f"{keys_of('datasets', 'd')}")
    assert first_line(with_sweep(zzzz=1, qqqq=2)) == (  # nothing close
        f"unknown keys sweep.zzzz, sweep.qqqq; the keys of sweep are {keys_of('sweep')}")


def test_an_enum_value_lists_the_choices_and_the_closest():
    assert first_line(with_variants(activation="gelu")) == (
        "variants.activation is 'gelu' (did you mean relu?); it must be one of relu, tanh (e.g. activation: relu, "
        "the default)")
    assert first_line(with_variants(inputs=["raw", "batchnrom"])) == (
        "variants.inputs[1] is 'batchnrom' (did you mean batchnorm?); each item must be one of raw, standardize, "
        "batchnorm (e.g. inputs: [raw, standardize, batchnorm], the default)")
    assert first_line(entry(sklearn="irs")) == (
        "datasets.d.sklearn is 'irs' (did you mean iris?); it must be one of breast_cancer, digits, wine, iris, "
        "diabetes (e.g. sklearn: breast_cancer)")


DATASET_NAME_RULE = ("a dataset name must be ASCII letters, digits, _ and - only, at most 64 characters (it becomes a "
                     "file name and a Snakemake wildcard)")


@pytest.mark.parametrize(("name", "reason", "suggestion"), [
    ("données", "'é' is not an ASCII letter", "donnees"),
    ("Ünïcödé", "'Ü', 'ï', 'ö', 'é' are not ASCII letters", "Unicode"),
    ("数据", "'数', '据' are not ASCII letters", "mydata"),
    ("a;rm -rf x", "';', ' ' are not allowed", "a_rm_-rf_x"),
    ("../etc", "'.', '/' are not allowed", "etc"),
    ("d\n", "it holds a line break", "d"),
    ("", "it is empty", "mydata"),
    ("x" * 65, "it has 65 characters, more than 64", "x" * 64),
])
def test_a_bad_dataset_name_is_refused_with_the_reason_in_words(name, reason, suggestion):
    assert refusal({"datasets": {name: {"sklearn": "iris"}}}).splitlines() == [
        f"datasets: the dataset name {name!r} ({reason}); {DATASET_NAME_RULE} (e.g. rename it {suggestion})", HINT]


def test_unicode_names_are_refused_because_the_workflow_s_wildcard_is_ascii():
    """The schema's names and the dataset wildcard of workflow/rules/common.smk are both ASCII: a name the schema
    let through would match no rule (and one name has two Unicode spellings, é or e + accent, which file systems
    do not treat alike)."""
    constraint = re.search(r'dataset=r"([^"]+)"', (REPO / "workflow" / "rules" / "common.smk").read_text())[1]
    assert re.fullmatch(constraint, "donnees") and not re.fullmatch(constraint, "données")
    assert SCHEMA["properties"]["datasets"]["propertyNames"]["pattern"] == C.NAME_PATTERN == f"^{constraint}$"


def test_bad_study_names_name_the_key():
    rule = ("it must be ASCII letters, digits, _ and - only, at most 64 characters, not cache (it becomes a folder "
            "name, and data/cache/ holds the downloads every study shares)")
    assert first_line({**BASE, "study": "cache"}) == (
        f"study is 'cache' ('cache' is reserved); {rule} (e.g. study: cache_study)")
    assert first_line({**BASE, "study": "../elsewhere"}) == (
        f"study is '../elsewhere' ('.', '/' are not allowed); {rule} (e.g. study: elsewhere)")
    assert refusal({**BASE, "study": 3}).splitlines() == [  # one problem, though two keywords fail
        "study is 3 (an integer); it must be a name of ASCII letters, digits, _ and -, at most 64 characters, not "
        "cache (e.g. study: default, the default)", "  study: The study's name.", HINT]


def test_missing_or_empty_datasets():
    assert first_line({}) == (
        "datasets is missing; it must be a mapping of names to entries, at least one (e.g. datasets: "
        "{iris: {sklearn: iris}})")
    assert first_line({"datasets": {}}) == (
        "datasets is {}; it must be a mapping of names to entries, at least one (e.g. datasets: "
        "{iris: {sklearn: iris}})")


def test_a_dataset_entry_needs_exactly_one_source():
    sources = "sklearn, synthetic, csv, parquet, url, openml"
    assert first_line(entry(csv="x.csv", sklearn="iris")) == (
        f"datasets.d has 2 source keys (sklearn, csv); a dataset entry needs exactly one of {sources} "
        "(e.g. d: {sklearn: iris})")
    assert refusal(entry(cvs="x.csv")).splitlines()[:2] == [
        f"unknown key datasets.d.cvs (did you mean datasets.d.csv?); the keys of a dataset entry are "
        f"{keys_of('datasets', 'd')}",
        f"also: datasets.d has no source key; a dataset entry needs exactly one of {sources} "
        "(e.g. d: {sklearn: iris})"]
    assert first_line({"datasets": {"d": "iris"}}) == (
        f"datasets.d is 'iris' (text); it must be a mapping with the keys {keys_of('datasets', 'd')} "
        "(e.g. d: {sklearn: iris})")


def test_keys_that_need_another_key():
    assert first_line(entry(url="https://example.org/d.csv")) == (
        "datasets.d has url but no sha256; with url, datasets.d.sha256 must be set to 64 hexadecimal digits (the "
        "checksum sha256sum FILE prints) (e.g. sha256: <the 64 hexadecimal digits sha256sum FILE prints>)")
    assert first_line(entry(csv="x.csv", format="csv")) == (
        "datasets.d has format but no url; with format, datasets.d.url must be set to an http:// or https:// "
        "address without spaces (e.g. url: https://example.org/mydata.csv)")


def test_one_of_several_shapes():
    allowed = ("it must be a number > 0, or a mapping with the keys lecture, eig, random (each a number > 0) (e.g. "
               "extent: {lecture: 1.0, eig: 1.0, random: 0.5}, the default)")
    contours = {**BASE, "analysis": {"contours": {"extent": -1}}}
    assert first_line(contours) == f"analysis.contours.extent is -1; {allowed}"
    contours["analysis"]["contours"]["extent"] = {"lectur": 1, "eig": 1, "random": 1}
    assert first_line(contours) == (
        "analysis.contours.extent is {lectur: 1, eig: 1, random: 1} (unknown key 'lectur' (did you mean lecture?); "
        f"missing lecture); {allowed}")


def test_problems_are_told_in_the_config_s_order_the_first_in_full():
    config = {"sweep": {"steps": 0}, "split": {"test_fraction": 2}, **BASE}
    assert first_line(config).startswith("sweep.steps is 0;")
    config = {"split": {"test_fraction": 2}, "sweep": {"steps": 0}, **BASE}
    assert first_line(config).startswith("split.test_fraction is 2;")
    many = {**BASE, "sweep": {k: -1 for k in ("n_lr", "steps", "batch_size", "log_every", "eval_examples",
                                              "early_fraction", "momentum")}}
    lines = refusal(many).splitlines()
    assert lines[0].startswith("sweep.n_lr is -1; it must be an integer >= 1")
    assert lines[1].startswith("  sweep.n_lr: Number of log-spaced learning rates.")
    assert [ln.split(" is ")[0] for ln in lines[2:6]] == [
        "also: sweep.steps", "also: sweep.batch_size", "also: sweep.log_every", "also: sweep.eval_examples"]
    assert lines[6:] == ["... and 2 more problems", HINT]


def test_jsonschema_s_report_only_on_request():
    assert "Failed validating" not in refusal(with_sweep(stpes=1))
    detailed = refusal(with_sweep(stpes=1), detail=True)
    assert detailed.splitlines()[0].startswith("unknown key sweep.stpes")
    assert "jsonschema's report:" in detailed and "Failed validating 'additionalProperties'" in detailed


# --- checks across keys ---------------------------------------------------------------------------------------

def test_lr_min_must_be_below_lr_max():
    assert refusal(with_sweep(lr_min=1.0, lr_max=0.01)).splitlines() == [
        "sweep.lr_min (1.0) is not below sweep.lr_max (0.01) with sweep.n_lr 13: the learning-rate grid runs from "
        "lr_min up to lr_max in 13 log-spaced steps, so lr_min must be the smaller; swap them (lr_min: 0.01, "
        "lr_max: 1.0), or set n_lr: 1 for the single learning rate lr_min"]
    assert first_line(with_sweep(lr_min=0.1, lr_max=0.1, n_lr=4)) == (
        "sweep.lr_min (0.1) is not below sweep.lr_max (0.1) with sweep.n_lr 4: the learning-rate grid runs from "
        "lr_min up to lr_max in 4 log-spaced steps, so lr_min must be the smaller; raise lr_max (e.g. lr_max: 100.0, "
        "three decades up), or set n_lr: 1 for the single learning rate lr_min")
    C.check_config(with_sweep(lr_min=1.0, lr_max=0.01, n_lr=1), SCHEMA)  # one learning rate: lr_min


def test_the_learning_rates_must_stay_distinct_once_rounded():
    assert first_line(with_sweep(lr_min=0.1, lr_max=0.1001, n_lr=13)) == (
        "sweep.n_lr 13 learning rates from sweep.lr_min 0.1 to sweep.lr_max 0.1001 repeat once rounded to 4 "
        "significant digits: 0.1 (7 times), 0.1001 (6 times); lower n_lr to 2 or less, or widen the range")
    C.check_config(with_sweep(lr_min=0.1, lr_max=0.1001, n_lr=2), SCHEMA)


@pytest.mark.parametrize(("lo", "hi", "n"), [(1e-4, 10.0, 13), (1e-3, 1.0, 4), (0.01, 0.1, 2), (0.1, 0.1001, 13),
                                              (3e-5, 7.3, 29), (0.5, 0.25, 1), (1e-6, 1e3, 61)])
def test_the_check_s_learning_rate_grid_is_the_study_s(lo, hi, n):
    assert C._lr_grid(lo, hi, n) == V.lr_grid(lo, hi, n)


def test_steps_must_be_a_multiple_of_log_every():
    assert refusal(with_sweep(steps=100, log_every=30)).splitlines() == [
        "sweep.steps (100) is not a multiple of sweep.log_every (30): training runs in chunks of log_every steps, and "
        "the logged evaluations and the early checkpoint fall on their ends; set steps to 90 or 120, or log_every to "
        "a divisor of 100 such as 20 or 25"]
    assert first_line(with_sweep(steps=20, log_every=30)) == (
        "sweep.steps (20) is not a multiple of sweep.log_every (30): training runs in chunks of log_every steps, and "
        "the logged evaluations and the early checkpoint fall on their ends; set steps to 30, or log_every to a "
        "divisor of 20 such as 10 or 20")
    C.check_config(with_sweep(steps=90, log_every=30), SCHEMA)


def test_the_batchnorm_input_treatment_must_make_a_variant():
    rule = ("the batchnorm input treatment is combined only with the norms of variants.batchnorm_input_norms ([none]) "
            "that are also in variants.norms ([batchnorm]), and at depth 0 with none (variants.depths: [2])")
    assert first_line(with_variants(norms=["batchnorm"], depths=[2])) == (
        f"variants.inputs lists batchnorm, but it makes no variant: {rule}; add none to variants.norms, or add "
        "batchnorm to variants.batchnorm_input_norms, or add 0 to variants.depths, or remove batchnorm from "
        "variants.inputs")
    # only batchnorm: a study without a single variant (its tables job would fail)
    assert first_line(with_variants(inputs=["batchnorm"], norms=["batchnorm"], depths=[2])).startswith(
        f"variants.inputs lists batchnorm, but it makes no variant: {rule};")
    C.check_config(with_variants(norms=["batchnorm"], depths=[0, 2]), SCHEMA)  # batchnorm-none-d0
    C.check_config(with_variants(inputs=["raw"], norms=["batchnorm"], depths=[2]), SCHEMA)


def test_every_batchnorm_input_norm_must_make_a_variant():
    assert first_line(with_variants(norms=["none", "batchnorm"], batchnorm_input_norms=["none", "layernorm"])) == (
        "variants.batchnorm_input_norms lists layernorm, which makes no variant: the batchnorm input treatment is "
        "combined only with the norms of variants.batchnorm_input_norms ([none, layernorm]) that are also in "
        "variants.norms ([none, batchnorm]), and at depth 0 with none (variants.depths: [0, 2, 4, 8]); add it to "
        "variants.norms, or remove it from variants.batchnorm_input_norms")
    C.check_config(with_variants(norms=["batchnorm"], depths=[0, 2], batchnorm_input_norms=["none", "batchnorm"]),
                   SCHEMA)


def test_the_target_is_neither_categorical_nor_dropped():
    assert first_line(entry(csv="d.csv", target="y", categorical=["c", "y"])) == (
        "datasets.d.categorical lists the target column 'y': the target's encoding follows task (classification: "
        "one class per value; regression: a number); remove 'y' from categorical, or set datasets.d.target to the "
        "label column")
    assert first_line(entry(csv="d.csv", categorical=["target"])).startswith(
        "datasets.d.categorical lists the target column 'target' (the default target):")
    assert first_line(entry(csv="d.csv", target="y", drop=["id", "y"])) == (
        "datasets.d.drop lists the target column 'y': the network learns to predict it; remove 'y' from drop, or set "
        "datasets.d.target to the label column")
    C.check_config(entry(openml=61, categorical=["target"]), SCHEMA)  # OpenML's default target: the job knows it


def test_a_column_is_not_both_dropped_and_categorical():
    assert first_line(entry(csv="d.csv", target="y", drop=["id", "c"], categorical=["c"])) == (
        "datasets.d lists 'c' under both drop and categorical: a dropped column is not used at all; remove it from "
        "one of the two")


def test_synthetic_only_keys_with_another_source():
    assert first_line(entry(sklearn="iris", rows=30, seed=1)) == (
        "datasets.d has rows, seed, which only a synthetic dataset reads (this one reads sklearn: iris); remove them")
    C.check_config(entry(synthetic="lecture", rows=400, seed=1, scale_ratio=10.0), SCHEMA)


def test_the_checks_across_keys_wait_for_a_valid_schema():
    lines = refusal(with_sweep(steps=100, log_every=30, stpes=1)).splitlines()
    assert lines[0].startswith("unknown key sweep.stpes") and not any("multiple" in ln for ln in lines)


# --- through Snakemake ----------------------------------------------------------------------------------------

def dry_run(tmp_path: Path, config: dict, **env) -> tuple[subprocess.CompletedProcess, Path]:
    """``snakemake -n`` on ``config`` in a copy of the repository's workflow/, scripts/ and config/."""
    root = tmp_path / "run"
    for d in ("workflow", "scripts", "config"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
    (root / "config" / "bad.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                                              encoding="utf-8")
    proc = subprocess.run([snakemake_exe(), "-n", "--cores", "1", "--configfile", "config/bad.yaml"], cwd=root,
                          env={**subprocess_env(tmp_path / "jax"), **env}, capture_output=True, text=True,
                          timeout=300, check=False)
    return proc, root


REFUSED = {
    "unknown nested key": (with_sweep(stpes=10), "unknown key sweep.stpes (did you mean sweep.steps?); the keys of "
                                                 f"sweep are {keys_of('sweep')}"),
    "unicode name": ({"datasets": {"données": {"synthetic": "lecture"}}},
                     f"datasets: the dataset name 'données' ('é' is not an ASCII letter); {DATASET_NAME_RULE} (e.g. "
                     "rename it donnees)"),
    "steps and log_every": ({"datasets": {"lecture": {"synthetic": "lecture"}}, "sweep": {"steps": 100}},
                            "sweep.steps (100) is not a multiple of sweep.log_every (30): training runs in chunks of "
                            "log_every steps, and the logged evaluations and the early checkpoint fall on their ends; "
                            "set steps to 90 or 120, or log_every to a divisor of 100 such as 20 or 25"),
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", list(REFUSED))
def test_snakemake_stops_a_refused_config_before_any_job(tmp_path, case):
    config, message = REFUSED[case]
    proc, root = dry_run(tmp_path, config)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert proc.returncode != 0
    at = next(i for i, ln in enumerate(lines) if re.match(r'ConfigError in file ".*Snakefile", line \d+:$', ln))
    assert lines[at + 1] == message, "\n".join(lines)
    assert len(lines) <= MAX_OUTPUT_LINES, "\n".join(lines)
    assert not any((root / top).exists() for top in ("data", "results", "reports", "logs", "benchmarks"))


@pytest.mark.workflow
def test_snakemake_adds_jsonschema_s_report_on_request_and_runs_a_valid_config(tmp_path):
    proc, _ = dry_run(tmp_path / "detail", with_sweep(stpes=10), NORMLAB_CONFIG_DETAIL="1")
    assert proc.returncode != 0 and "Failed validating 'additionalProperties'" in proc.stdout + proc.stderr
    proc, _ = dry_run(tmp_path / "valid", yaml.safe_load((REPO / "config" / "quick.yaml").read_text()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ConfigError" not in proc.stdout + proc.stderr


# --- a synthetic dataset's size is a setting: its split is checked before any job ----------------------------


def test_a_synthetic_dataset_too_small_for_the_test_split_is_refused_at_config_time():
    # 20 rows at test_fraction 0.25: 5 test rows < split.min_test_rows 10
    line = first_line({"datasets": {"tiny": {"synthetic": "lecture", "rows": 20}}, "sweep": {"batch_size": 8}})
    assert line.startswith("datasets.tiny (synthetic, rows: 20): the test split has 5 rows (20 rows, test_fraction "
                           "0.25), fewer than split.min_test_rows 10"), line
    assert "use more rows (at least 37 at test_fraction 0.25 and sweep.batch_size 8)" in line, line
    # the same rows pass with a larger test fraction, or a lower minimum; a non-synthetic entry is left to its job
    C.check_config({"datasets": {"tiny": {"synthetic": "lecture", "rows": 20}}, "sweep": {"batch_size": 8},
                    "split": {"test_fraction": 0.5}}, copy.deepcopy(SCHEMA))
    C.check_config({"datasets": {"tiny": {"synthetic": "lecture", "rows": 20}}, "sweep": {"batch_size": 8},
                    "split": {"min_test_rows": 5}}, copy.deepcopy(SCHEMA))
    C.check_config({"datasets": {"d": {"sklearn": "iris"}}, "split": {"min_test_rows": 1000}}, copy.deepcopy(SCHEMA))


def test_a_synthetic_dataset_smaller_than_a_batch_is_refused_and_the_default_size_passes():
    # 40 rows: 10 test rows (enough), 30 training rows < the default batch_size 64
    line = first_line({"datasets": {"tiny": {"synthetic": "lecture", "rows": 40}}})
    assert line.startswith("datasets.tiny (synthetic, rows: 40): the training split has 30 rows (40 rows, "
                           "test_fraction 0.25), fewer than sweep.batch_size 64"), line
    C.check_config({"datasets": {"tiny": {"synthetic": "lecture", "rows": 40}}, "sweep": {"batch_size": 30}},
                   copy.deepcopy(SCHEMA))
    # without rows, the default size (1000 rows) is checked: refused only by a minimum above its 250 test rows
    C.check_config({"datasets": {"lec": {"synthetic": "lecture"}}, "split": {"min_test_rows": 250}},
                   copy.deepcopy(SCHEMA))
    assert "the test split has 250 rows (1000 rows" in first_line(
        {"datasets": {"lec": {"synthetic": "lecture"}}, "split": {"min_test_rows": 251}})

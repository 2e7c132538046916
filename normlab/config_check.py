"""The study's config, checked before any job runs, every mistake told in words.

``check_config`` does what ``snakemake.utils.validate`` did in the Snakefile (the same JSON Schema draft,
2020-12, and the schema's defaults filled into the config in place, so the workflow reads every defaulted key),
then checks what no schema keyword can say: constraints between keys that a job would otherwise find only
after fetch and preprocess ran (``CROSS_FIELD_CHECKS``). A refused config raises one ``ConfigError`` whose
first line names the key path (``sweep.steps``), the bad value, what is allowed in words and an example (the
schema's default where it has one); an unknown key is named with where it is, the keys allowed there and the
closest of them. jsonschema's own report (with its dump of the schema) is added only on request
(``NORMLAB_CONFIG_DETAIL=1``, ``check_config(..., detail=True)``).

Names (``study`` and the dataset names) are ASCII letters, digits, ``_`` and ``-``: a dataset name becomes a
file name (data/<study>/raw/<name>.csv, ...) and a Snakemake wildcard (constrained to ``[A-Za-z0-9_-]+`` in
workflow/rules/common.smk). Other letters are refused, with an ASCII spelling offered: one name can be spelled
in Unicode in two ways (``é`` as one code point or as ``e`` + an accent; macOS file systems store the second),
so the name in the config and the name a file system lists back need not compare equal, and a cluster job
under a C locale may not print or pass it at all.

Pure functions of the config and the loaded schema; nothing here imports Snakemake (the Snakefile calls
``check_config``)."""

from __future__ import annotations

import copy
import difflib
import math
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml

from normlab.errors import DatasetError
from normlab.splits import MIN_TEST_ROWS, SYNTHETIC_ROWS, check_split, n_test_rows

DETAIL_VARIABLE = "NORMLAB_CONFIG_DETAIL"  # set to 1: a refused config's message adds jsonschema's report
SCHEMA_FILE = "workflow/schemas/config.schema.yaml"  # where the message sends the reader
MAX_LISTED = 5  # problems listed in one message (the first in full, the others by their first line)

NAME_PATTERN = "^[A-Za-z0-9_-]+$"
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# a schema pattern in words
PATTERN_WORDS = {
    NAME_PATTERN: "a name of ASCII letters, digits, _ and -",
    "^https?://[^\\s]+$": "an http:// or https:// address without spaces",
    "^[0-9a-fA-F]{64}$": "64 hexadecimal digits (the checksum sha256sum FILE prints)",
}
# why a name is restricted, by its key path (the dataset names: the key path of datasets)
NAME_REASONS = {
    ("study",): "it becomes a folder name, and data/cache/ holds the downloads every study shares",
    ("datasets",): "it becomes a file name and a Snakemake wildcard",
}
# examples of the keys without a default in the schema, by key path ("*": any dataset name)
EXAMPLES = {
    ("datasets",): {"iris": {"sklearn": "iris"}},
    ("datasets", "*"): {"sklearn": "iris"},
    ("datasets", "*", "csv"): "data/mydata.csv",
    ("datasets", "*", "parquet"): "data/mydata.parquet",
    ("datasets", "*", "url"): "https://example.org/mydata.csv",
    ("datasets", "*", "sha256"): "<the 64 hexadecimal digits sha256sum FILE prints>",
    ("datasets", "*", "openml"): 61,
    ("datasets", "*", "target"): "label",
    ("datasets", "*", "categorical"): ["colour"],
    ("datasets", "*", "drop"): ["id"],
    ("datasets", "*", "rows"): 1000,
    ("datasets", "*", "scale_ratio"): 1000.0,
    ("datasets", "*", "seed"): 0,
}
# the dataset entry keys that only a synthetic dataset reads (normlab.datasets ignores them for the others)
SYNTHETIC_ONLY = ("rows", "scale_ratio", "seed")
LR_DIGITS = 4  # normlab.variants.lr_grid rounds the learning rates to 4 significant digits


class ConfigError(ValueError):
    """The config cannot run; ``problems`` holds one message per problem (the first is the error's first line)."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


def load_schema(path) -> dict:
    """The config schema (YAML) at ``path``."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def check_config(config: dict, schema: dict, detail: bool = False) -> dict:
    """``config`` checked against ``schema`` and across keys, with the schema's defaults filled in (in place,
    as ``snakemake.utils.validate`` fills them); returns it. A problem raises ``ConfigError``: the message
    (``config_message``) lists the problems, the first in full; ``detail`` adds jsonschema's own report."""
    errors = schema_errors(config, schema)
    first = {}
    for e in errors:
        first.setdefault(_subject(e), e)
    problems = list(dict.fromkeys(explain(e, schema) for e in first.values()))
    if not problems:
        problems = cross_field_problems(config)
    if problems:
        report = "\n\n".join(str(e) for e in errors) if detail else ""
        raise ConfigError(config_message(problems, schema_problem=bool(errors), report=report), problems)
    return config


def config_message(problems: list[str], schema_problem: bool = True, report: str = "") -> str:
    """The message of a refused config: the first problem, the first lines of up to ``MAX_LISTED`` - 1 more and
    their count, and (for schema problems) where every key is documented, or jsonschema's ``report``."""
    lines = [problems[0]]
    lines += [f"also: {p.splitlines()[0]}" for p in problems[1:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"... and {len(problems) - MAX_LISTED} more problems")
    if report:
        lines += ["", "jsonschema's report:", report]
    elif schema_problem:
        lines.append(f"(every key is described in {SCHEMA_FILE}; {DETAIL_VARIABLE}=1 adds jsonschema's report)")
    return "\n".join(lines)


# --- the schema ---------------------------------------------------------------------------------------------

def _properties_filling_defaults(validator, properties, instance, schema):
    """jsonschema's ``properties`` keyword that first sets every absent property that has a default (a copy of
    it), as Snakemake's validate does (https://python-jsonschema.readthedocs.io/en/latest/faq/)."""
    if validator.is_type(instance, "object"):
        for name, sub in properties.items():
            if "default" in sub:
                instance.setdefault(name, copy.deepcopy(sub["default"]))
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


DefaultFillingValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                                       {"properties": _properties_filling_defaults})


def schema_errors(config: dict, schema: dict) -> list[jsonschema.ValidationError]:
    """Every schema error of ``config`` (filling in the schema's defaults on the way), in the config's order:
    an error at a key that comes earlier in the file first."""
    errors = list(DefaultFillingValidator(schema).iter_errors(config))
    return sorted(errors, key=lambda e: _position(config, list(e.absolute_path)))


def _subject(error: jsonschema.ValidationError) -> tuple:
    """What an error is about: its key path (a dataset name too, for an error about the name). One problem is
    told per subject (the first error's): e.g. a study name 3 breaks both its type and its 'no line break'."""
    if error.validator == "additionalProperties":  # unknown keys: told besides any other problem of the mapping
        return (*error.absolute_path, "<unknown keys>")
    names = "propertyNames" in error.absolute_schema_path
    return (*error.absolute_path, *((error.instance,) if names else ()))


def _position(config, path) -> tuple:
    """Where ``path`` is in the config: the index of each step among its parent's keys (or list items)."""
    where, node = [], config
    for step in path:
        if isinstance(node, Mapping):
            keys = list(node)
            where.append(keys.index(step) if step in keys else len(keys))
            node = node.get(step)
        elif isinstance(node, list) and isinstance(step, int):
            where.append(step)
            node = node[step] if step < len(node) else None
        else:
            break
    return tuple(where)


def schema_at(schema: dict, path) -> dict:
    """The subschema of the value at ``path`` (a key: its property's schema, or the schema of every entry of
    a mapping with named entries; a list index: the items' schema); {} when the schema says nothing."""
    s = schema
    for step in path:
        if isinstance(step, int):
            s = s.get("items", {})
            continue
        branches = [s] + [b for b in s.get("oneOf", []) if isinstance(b, dict)]
        found = {}
        for b in branches:
            if step in b.get("properties", {}):
                found = b["properties"][step]
                break
            if isinstance(b.get("additionalProperties"), dict):
                found = b["additionalProperties"]
                break
        s = found
    return s


# --- in words -----------------------------------------------------------------------------------------------

def key_path(path) -> str:
    """``sweep.steps``, ``variants.depths[2]``, ``datasets.'my data'.csv``: a key that is not a plain name is
    quoted."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            text = str(step) if step and set(str(step)) <= NAME_CHARS else repr(step)
            out += f".{text}" if out else text
    return out


def show(value, limit: int = 80) -> str:
    """A config value as YAML writes it inline (strings quoted), cut to ``limit`` characters."""
    text = repr(value) if isinstance(value, str) else inline_yaml(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def inline_yaml(value) -> str:
    """``value`` in YAML's flow style: [a, b], {k: v}, true, 1.0e-05; strings plain where that reads back the same."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{inline_yaml(k)}: {inline_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(inline_yaml(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        try:  # plain where YAML reads it back as the same string inside a flow list
            plain = bool(value) and "\n" not in value and yaml.safe_load(f"[{value}]") == [value]
        except yaml.YAMLError:
            plain = False
        return value if plain else repr(value)
    return repr(value)


def kind(value) -> str:
    """The YAML type of a value in words."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction" if math.isfinite(value) and value != int(value) else "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _bounds(s: dict) -> str:
    lo = (">=", s["minimum"]) if "minimum" in s else (">", s["exclusiveMinimum"]) if "exclusiveMinimum" in s else None
    hi = ("<=", s["maximum"]) if "maximum" in s else ("<", s["exclusiveMaximum"]) if "exclusiveMaximum" in s else None
    if lo and hi and lo[0] == ">=" and hi[0] == "<=":
        return f" from {inline_yaml(lo[1])} to {inline_yaml(hi[1])}"
    return " and".join(f" {op} {inline_yaml(v)}" for op, v in (b for b in (lo, hi) if b))


def describe(s: dict, plural: bool = False) -> str:
    """What the schema ``s`` allows, in words: "an integer >= 1", "one of raw, standardize, batchnorm", "a list of
    integers from 0 to 64, at least 1, no repeats"."""
    if "enum" in s:
        return ("any of " if plural else "one of ") + ", ".join(inline_yaml(v) for v in s["enum"])
    if "const" in s:
        return inline_yaml(s["const"])
    branches = [b for b in s.get("oneOf", s.get("anyOf", [])) if {"type", "enum", "const"} & set(b)]
    if branches:  # alternatives of value (not the dataset entry's oneOf of required source keys)
        return ", or ".join(describe(b, plural) for b in branches)
    t = s.get("type")
    if t in ("integer", "number"):
        noun = {"integer": ("an integer", "integers"), "number": ("a number", "numbers")}[t][plural]
        return noun + _bounds(s)
    if t == "boolean":
        return "true or false"
    if t == "string":
        p = s.get("pattern")
        text = PATTERN_WORDS.get(p, f"text matching the regular expression {p}") if p else (
            ("non-empty strings" if plural else "a non-empty string") if s.get("minLength") else
            ("strings" if plural else "a string"))
        if "maxLength" in s:
            text += f", at most {s['maxLength']} characters"
        forbidden = [b["not"]["const"] for b in s.get("allOf", []) if "const" in b.get("not", {})]
        if forbidden:
            text += ", not " + ", ".join(map(inline_yaml, forbidden))
        return text
    if t == "array":
        items = s.get("items", {})
        text = "a list of " + describe(items, plural=True)
        extra = [f"at least {_count(s['minItems'])}"] if s.get("minItems") else []
        extra += ["no repeats"] if s.get("uniqueItems") else []
        return text + "".join(f", {e}" for e in extra)
    if t == "object":
        if s.get("properties") and s.get("additionalProperties") is False:
            text = f"a mapping with the keys {', '.join(s['properties'])}"
            kinds = {describe(p) for p in s["properties"].values()}
            return text + (f" (each {kinds.pop()})" if len(kinds) == 1 and len(s["properties"]) > 1 else "")
        if isinstance(s.get("additionalProperties"), dict):
            return "a mapping of names to entries" + (f", at least {_count(s['minProperties'])}"
                                                      if s.get("minProperties") else "")
        return "a mapping"
    return "what the schema allows"


def _example_key(path) -> tuple:
    """``path``'s key names (list indices left out), a dataset name as "*"."""
    names = [p for p in path if not isinstance(p, int)]
    return tuple("*" if i == 1 and names[0] == "datasets" else p for i, p in enumerate(names))


def example(schema: dict, path) -> str:
    """An example of the key at ``path`` (list indices: their list's key): ``steps: 600 (the default)``, or one
    from ``EXAMPLES``, or one made from what its schema allows; "" for the whole config."""
    names = [p for p in path if not isinstance(p, int)]
    if not names:
        return ""
    s = schema_at(schema, names)
    key = names[-1]
    if "default" in s:
        return f"{key}: {inline_yaml(s['default'])}, the default"
    if _example_key(names) in EXAMPLES:
        return f"{key}: {inline_yaml(EXAMPLES[_example_key(names)])}"
    value = _made_up(s)
    return f"{key}: {inline_yaml(value)}" if value is not None else ""


def _made_up(s: dict):
    """A value that ``s`` allows (None when none is obvious)."""
    if "enum" in s:
        return s["enum"][0]
    t = s.get("type")
    if t in ("integer", "number"):
        lo = s.get("minimum", s.get("exclusiveMinimum", 0))
        v = lo + (1 if "exclusiveMinimum" in s or lo < 1 else 0)
        hi = s.get("maximum", s.get("exclusiveMaximum"))
        if hi is not None and (v > hi or (v == hi and "exclusiveMaximum" in s)):
            v = (lo + hi) / 2
        return int(v) if t == "integer" else float(v)
    if t == "boolean":
        return True
    if t == "string":
        return "name" if s.get("pattern") in (None, NAME_PATTERN) else None
    if t == "array":
        item = _made_up(s.get("items", {}))
        return [item] if item is not None else None
    return None


def _count(n: int) -> str:
    return "one" if n == 1 else str(n)


def _eg(schema, path) -> str:
    text = example(schema, path)
    return f" (e.g. {text})" if text else ""


def _about(schema, path) -> str:
    """The key's description (its first sentence), as a second line; "" without one."""
    names = [p for p in path if not isinstance(p, int)]
    text = " ".join(str(schema_at(schema, names).get("description", "")).split()) if names else ""
    if not text:
        return ""
    first = text.split(". ")[0].rstrip(".") + "."
    if len(first) > 160:
        first = first[:157] + "..."
    return f"\n  {key_path(names)}: {first}"


def _close(word, choices) -> str:
    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return found[0] if found else ""


def ascii_name(name: str, limit: int = 64) -> str:
    """An ASCII spelling of a name: accents dropped (é -> e), every other character outside letters, digits,
    _ and - replaced by _ (runs of them by one), cut to ``limit`` characters; "mydata" when nothing is left."""
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    out = "".join(c if c in NAME_CHARS else "_" for c in text)
    while "__" in out:
        out = out.replace("__", "_")
    out = out.strip("_")[:limit]
    return out or "mydata"


def name_problems(name, s: dict) -> list[str]:
    """What is wrong with ``name`` as a name the schema ``s`` restricts (pattern NAME_PATTERN, maxLength, no
    line break, forbidden constants), in words."""
    if not isinstance(name, str):
        return [f"it is {kind(name)}"]
    found = []
    if not name:
        found.append("it is empty")
    if "\n" in name or "\r" in name:
        found.append("it holds a line break")
    bad = [c for c in dict.fromkeys(name) if c not in NAME_CHARS and c not in "\r\n"]
    letters = [c for c in bad if c.isalpha()]
    others = [c for c in bad if not c.isalpha()]
    if letters:
        found.append(f"{', '.join(map(repr, letters))} "
                     f"{'is not an ASCII letter' if len(letters) == 1 else 'are not ASCII letters'}")
    if others:
        found.append(f"{', '.join(map(repr, others))} {'is' if len(others) == 1 else 'are'} not allowed")
    if "maxLength" in s and len(name) > s["maxLength"]:
        found.append(f"it has {len(name)} characters, more than {s['maxLength']}")
    for b in s.get("allOf", []):
        if b.get("not", {}).get("const") == name:
            found.append(f"{name!r} is reserved")
    return found


def _name_message(path, name, names_schema) -> str:
    """A refused name: the study's (path ["study"]) or a dataset's (path ["datasets"], the name a key)."""
    dataset = path == ["datasets"]
    what = f"{key_path(path)}: the dataset name {show(name)}" if dataset else f"{key_path(path)} is {show(name)}"
    reasons = name_problems(name, names_schema) or ["it does not match " + str(names_schema.get("pattern"))]
    allowed = "ASCII letters, digits, _ and - only" + (
        f", at most {names_schema['maxLength']} characters" if "maxLength" in names_schema else "") + "".join(
        f", not {b['not']['const']}" for b in names_schema.get("allOf", []) if "const" in b.get("not", {}))
    suggestion = ascii_name(name, names_schema.get("maxLength", 64))
    forbidden = [b["not"]["const"] for b in names_schema.get("allOf", []) if "const" in b.get("not", {})]
    if suggestion in forbidden:
        suggestion += "_study"
    why = NAME_REASONS.get(tuple(path), "")
    eg = f"rename it {suggestion}" if dataset else f"{path[-1]}: {suggestion}"
    return (f"{what} ({'; '.join(reasons)}); {'a dataset name' if dataset else 'it'} must be {allowed}"
            f"{f' ({why})' if why else ''} (e.g. {eg})")


def explain(error: jsonschema.ValidationError, schema: dict) -> str:
    """One schema error in words: its first line names the key path, the value, what is allowed and an example;
    an unknown key, where it is, the keys allowed there and the closest of them."""
    path, value, v = list(error.absolute_path), error.instance, error.validator
    where = key_path(path) or "the config"
    key_schema = schema_at(schema, path)
    if "propertyNames" in error.absolute_schema_path:
        return _name_message(path, value, key_schema.get("propertyNames", {}))
    if key_schema.get("pattern") == NAME_PATTERN and v in ("pattern", "maxLength", "not") and isinstance(value, str):
        return _name_message(path, value, key_schema)
    if v == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = [k for k in value if k not in allowed]
        named = []
        for k in unknown:
            close = _close(k, allowed)
            named.append(key_path([*path, k]) + (f" (did you mean {key_path([*path, close])}?)" if close else ""))
        place = "the top-level keys" if not path else "the keys of a dataset entry" if _example_key(path) == (
            "datasets", "*") else f"the keys of {where}"
        return f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(named)}; {place} are {', '.join(allowed)}"
    if v == "required":
        missing = [k for k in error.validator_value if k not in value]
        name = missing[0] if missing else str(error.validator_value)
        s = schema_at(schema, [*path, name])
        return f"{key_path([*path, name])} is missing; it must be {describe(s)}{_eg(schema, [*path, name])}"
    if v == "dependentRequired":
        for k, needs in error.validator_value.items():
            lacking = [n for n in needs if k in value and n not in value]
            if lacking:
                n = lacking[0]
                return (f"{where} has {k} but no {n}; with {k}, {key_path([*path, n])} must be set to "
                        f"{describe(schema_at(schema, [*path, n]))}{_eg(schema, [*path, n])}")
    if v == "oneOf" and all(set(b) == {"required"} and len(b["required"]) == 1 for b in error.validator_value):
        sources = [b["required"][0] for b in error.validator_value]
        present = [k for k in sources if isinstance(value, Mapping) and k in value]
        has = "no source key" if not present else f"{len(present)} source keys ({', '.join(present)})"
        return (f"{where} has {has}; a dataset entry needs exactly one of {', '.join(sources)} "
                f"(e.g. {path[-1]}: {inline_yaml(EXAMPLES[('datasets', '*')])})")
    allowed = describe(key_schema)
    items = bool(path) and isinstance(path[-1], int)
    must = f"{'each item' if items else 'it'} must be {allowed}"
    if v == "type":
        return f"{where} is {show(value)} ({kind(value)}); {must}{_eg(schema, path)}{_about(schema, path)}"
    if v == "enum":
        close = _close(value, key_schema["enum"]) if isinstance(value, str) else ""
        hint = f" (did you mean {close}?)" if close else ""
        return f"{where} is {show(value)}{hint}; {must}{_eg(schema, path)}{_about(schema, path)}"
    if v == "uniqueItems":
        repeats = [inline_yaml(x) for i, x in enumerate(value) if x in value[:i]]
        return (f"{where} is {show(value)}, which repeats {', '.join(dict.fromkeys(repeats))}; {must}"
                f"{_eg(schema, path)}{_about(schema, path)}")
    if v == "oneOf" and isinstance(value, Mapping):
        branch = next((b for b in key_schema.get("oneOf", []) if b.get("type") == "object"), None)
        if branch is not None:
            keys = list(branch.get("properties", {}))
            unknown = [f"{k!r}" + (f" (did you mean {_close(k, keys)}?)" if _close(k, keys) else "")
                       for k in value if k not in keys]
            missing = [k for k in branch.get("required", []) if k not in value]
            notes = ([f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"] if unknown else []) + (
                [f"missing {', '.join(missing)}"] if missing else [])
            hint = f" ({'; '.join(notes)})" if notes else ""
            return f"{where} is {show(value)}{hint}; {must}{_eg(schema, path)}{_about(schema, path)}"
    return f"{where} is {show(value)}; {must}{_eg(schema, path)}{_about(schema, path)}"


# --- across keys --------------------------------------------------------------------------------------------

def _rounded(x: float) -> float:
    return float(f"{x:.{LR_DIGITS}g}")


def _lr_grid(lr_min: float, lr_max: float, n: int) -> list[float]:
    """normlab.variants.lr_grid without numpy: n log-spaced learning rates, rounded to 4 significant digits."""
    if n == 1:
        return [_rounded(lr_min)]
    a, b = math.log10(lr_min), math.log10(lr_max)
    return [_rounded(10 ** (a + (b - a) * i / (n - 1))) for i in range(n)]


def check_learning_rates(config: dict) -> list[str]:
    """sweep.lr_min below sweep.lr_max when sweep.n_lr > 1 (the grid runs from lr_min up to lr_max), and a grid
    whose learning rates stay distinct once rounded to 4 significant digits."""
    s = config["sweep"]
    lo, hi, n = s["lr_min"], s["lr_max"], s["n_lr"]
    if n <= 1:
        return []
    if lo >= hi:
        fix = (f"swap them (lr_min: {inline_yaml(hi)}, lr_max: {inline_yaml(lo)})" if lo > hi else
               f"raise lr_max (e.g. lr_max: {inline_yaml(_rounded(lo * 1000))}, three decades up)")
        return [f"sweep.lr_min ({inline_yaml(lo)}) is not below sweep.lr_max ({inline_yaml(hi)}) with sweep.n_lr {n}: "
                f"the learning-rate grid runs from lr_min up to lr_max in {n} log-spaced steps, so lr_min must be "
                f"the smaller; {fix}, or set n_lr: 1 for the single learning rate lr_min"]
    grid = _lr_grid(lo, hi, n)
    if len(set(grid)) < n:
        most = max(k for k in range(1, n) if len(set(_lr_grid(lo, hi, k))) == k)
        repeated = [f"{inline_yaml(x)} ({grid.count(x)} times)" for x in dict.fromkeys(grid) if grid.count(x) > 1]
        return [f"sweep.n_lr {n} learning rates from sweep.lr_min {inline_yaml(lo)} to sweep.lr_max {inline_yaml(hi)} "
                f"repeat once rounded to {LR_DIGITS} significant digits: {', '.join(repeated[:3])}"
                f"{' ...' if len(repeated) > 3 else ''}; lower n_lr to {most} or less, or widen the range"]
    return []


def check_steps(config: dict) -> list[str]:
    """sweep.steps a multiple of sweep.log_every (training runs in chunks of log_every steps; the job checks it
    too, in normlab.train.TrainConfig)."""
    s = config["sweep"]
    steps, every = s["steps"], s["log_every"]
    if steps % every == 0:
        return []
    below, above = (steps // every) * every, (steps // every + 1) * every
    multiples = f"{below} or {above}" if below > 0 else f"{above}"
    divisors = [d for d in range(1, int(steps) + 1) if steps % d == 0]
    near = sorted(divisors, key=lambda d: (abs(d - every), -d))[:2]
    return [f"sweep.steps ({steps}) is not a multiple of sweep.log_every ({every}): training runs in chunks of "
            f"log_every steps, and the logged evaluations and the early checkpoint fall on their ends; set steps to "
            f"{multiples}, or log_every to a divisor of {steps} such as {' or '.join(map(str, sorted(near)))}"]


def _variant_grid(v: dict) -> list[tuple[str, str, int]]:
    """normlab.variants.variant_grid's (input, norm, depth) triples of the ``variants`` section."""
    from normlab.variants import variant_grid

    grid = variant_grid(v["inputs"], v["norms"], v["depths"], v.get("batchnorm_input_norms", ["none"]))
    return [(x.input, x.norm, x.depth) for x in grid]


def check_variants(config: dict) -> list[str]:
    """With the batchnorm input treatment in variants.inputs: it makes at least one variant (a study whose grid is
    empty fails only at its tables job), and every norm of variants.batchnorm_input_norms makes one (it is combined
    only with the norms that are also in variants.norms, and at depth 0 with none; another is ignored). raw and
    standardize make a variant at every norm and depth."""
    v = config["variants"]
    if "batchnorm" not in v["inputs"]:
        return []
    norms, depths = list(v["norms"]), [int(d) for d in v["depths"]]
    bn_norms = list(v.get("batchnorm_input_norms", ["none"]))
    used = {n for i, n, _ in _variant_grid(v) if i == "batchnorm"}
    rule = (f"the batchnorm input treatment is combined only with the norms of variants.batchnorm_input_norms "
            f"({inline_yaml(bn_norms)}) that are also in variants.norms ({inline_yaml(norms)}), and at depth 0 with "
            f"none (variants.depths: {inline_yaml(depths)})")
    if not used:
        fixes = []
        if any(d > 0 for d in depths):
            fixes.append(f"add {' or '.join(n for n in bn_norms if n not in norms)} to variants.norms")
            fixes.append(f"add {' or '.join(norms)} to variants.batchnorm_input_norms")
        if 0 in depths:
            fixes.append("add none to variants.batchnorm_input_norms")
        elif "none" in bn_norms:
            fixes.append("add 0 to variants.depths")
        fixes.append("remove batchnorm from variants.inputs")
        return [f"variants.inputs lists batchnorm, but it makes no variant: {rule}; {', or '.join(fixes)}"]
    unused = [n for n in bn_norms if n not in used]
    if unused:
        them = "it" if len(unused) == 1 else "them"
        return [f"variants.batchnorm_input_norms lists {', '.join(unused)}, which makes no variant: {rule}; add "
                f"{them} to variants.norms, or remove {them} from variants.batchnorm_input_norms"]
    return []


def check_dataset_entries(config: dict) -> list[str]:
    """Per dataset entry, what preprocess would refuse (normlab.preprocess) and what a job would ignore: the target
    column listed under categorical or drop (an OpenML entry without target is left to the job, which learns the
    dataset's default target); a column under both drop and categorical; the synthetic-only keys (rows,
    scale_ratio, seed) with another source."""
    out = []
    for name, entry in config["datasets"].items():
        where = key_path(["datasets", name])
        target = entry.get("target", "target")
        default = "" if "target" in entry else " (the default target)"
        known = "openml" not in entry or "target" in entry
        if known and target in entry.get("categorical", []):
            out.append(f"{where}.categorical lists the target column {target!r}{default}: the target's encoding "
                       f"follows task (classification: one class per value; regression: a number); remove {target!r} "
                       f"from categorical, or set {where}.target to the label column")
        if known and target in entry.get("drop", []):
            out.append(f"{where}.drop lists the target column {target!r}{default}: the network learns to predict it; "
                       f"remove {target!r} from drop, or set {where}.target to the label column")
        both = [c for c in entry.get("drop", []) if c in entry.get("categorical", []) and c != target]
        if both:
            out.append(f"{where} lists {', '.join(map(repr, both))} under both drop and categorical: a dropped column "
                       f"is not used at all; remove {'it' if len(both) == 1 else 'them'} from one of the two")
        extra = [k for k in SYNTHETIC_ONLY if k in entry]
        if extra and "synthetic" not in entry:
            source = next((k for k in ("sklearn", "csv", "parquet", "url", "openml") if k in entry), "")
            out.append(f"{where} has {', '.join(extra)}, which only a synthetic dataset reads (this one reads "
                       f"{source}: {inline_yaml(entry.get(source))}); remove {'it' if len(extra) == 1 else 'them'}")
    return out


def check_synthetic_splits(config: dict) -> list[str]:
    """A synthetic dataset's size is a setting (rows), so its split is checked here with preprocess's own rule
    (``normlab.splits.check_split``: at least split.min_test_rows test rows, at least sweep.batch_size training
    rows), before any job; a table read from a source is checked by its preprocess job."""
    split, batch_size = config["split"], config["sweep"]["batch_size"]
    out = []
    for name, entry in config["datasets"].items():
        if "synthetic" not in entry:
            continue
        n = int(entry.get("rows", SYNTHETIC_ROWS))
        n_test = n_test_rows(n, split["test_fraction"])
        try:
            check_split(n, n - n_test, n_test, split["test_fraction"], split.get("min_test_rows", MIN_TEST_ROWS),
                        batch_size, f"{key_path(['datasets', name])} (synthetic, rows: {n})",
                        entry.get("task", "classification"))
        except DatasetError as e:
            out.append(str(e))
    return out


# the checks between keys, run on a config that passed the schema (defaults filled in); each returns messages
CROSS_FIELD_CHECKS = (check_dataset_entries, check_variants, check_learning_rates, check_steps, check_synthetic_splits)


def cross_field_problems(config: dict) -> list[str]:
    """Every problem ``CROSS_FIELD_CHECKS`` find, in their order."""
    return [p for check in CROSS_FIELD_CHECKS for p in check(config)]

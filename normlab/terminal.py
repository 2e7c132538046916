"""Short job reports on the terminal: the workflow engine's job headers and error reports, cut to lines a person
can read.

Snakemake writes a job's reason to run ("Input files updated by another job: <every input>") and a failed job's
error report ("input: <every input>") in full: for the job that gathers every table of a study that is one line
of ~20,000 characters. ``JobReportFilter`` is a ``logging.Filter`` for Snakemake's logger that rewrites those
records before they are formatted:

* a reason's file lists keep their first file and say how many more there are;
* a reason's "Params have changed since last execution" part names the settings that changed
  (``steps: 600 -> 300``) instead of repeating both values of every changed setting in full;
* an error report's input list keeps its first files and the count, and the report's "message" line (which
  Snakemake 9 prints as "message: None" for a rule with a message) is left out.

The functions below work on the strings and lists of those records; nothing here imports Snakemake.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import yaml

# a reason part that lists files: "<label>: <file>, <file>, ..."
FILE_LIST_LABELS = ("Missing output files", "Incomplete output files", "Updated input files",
                    "Input files updated by another job")
PARAMS_LABEL = "Params have changed since last execution"
_PARAMS_TEXT = re.compile(r"before: (?P<before>.*) now: (?P<now>.*?) ?$", re.S)


def short_file_list(files: list[str], keep: int = 2) -> list[str]:
    """``files`` when it has at most ``keep`` + 1 entries, else its first ``keep`` and "... and N more"."""
    files = list(files)
    if len(files) <= keep + 1:
        return files
    return files[:keep] + [f"... and {len(files) - keep} more"]


def flatten_setting(value, prefix: str = "") -> dict[str, object]:
    """A setting as ``{dotted key: leaf value}``: nested mappings are walked (``{"a": {"b": 1}}`` ->
    ``{"a.b": 1}``); any other value is one leaf under ``prefix``."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten_setting(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _literal_list(text: str) -> list | None:
    """The values of a comma-joined list of Python literals (as Snakemake joins the params' reprs), or None."""
    if text.strip() == "<nothing exclusive>":
        return []
    try:
        value = ast.literal_eval(f"[{text}]")
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def setting_changes(before: list, now: list) -> list[str]:
    """The settings that differ between two lists of param values (each a value whose repr Snakemake stored):
    ``"key: old -> new"`` for every leaf that changed, a mapping on one side paired with the mapping on the
    other side that shares the most keys (or, for plain values, the values in order)."""
    changes = []
    before_maps = [flatten_setting(v) for v in before if isinstance(v, dict)]
    before_plain = [v for v in before if not isinstance(v, dict)]
    now_plain = [v for v in now if not isinstance(v, dict)]
    for value in (v for v in now if isinstance(v, dict)):
        new = flatten_setting(value)
        old = max(before_maps, key=lambda m: len(set(m) & set(new)), default={})
        if old in before_maps:
            before_maps.remove(old)
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new or old[key] != new[key]:
                changes.append(f"{key}: {_shown(old, key)} -> {_shown(new, key)}")
    for old in before_maps:
        changes.append(f"removed: {', '.join(sorted(old))}")
    for i in range(max(len(before_plain), len(now_plain))):
        changes.append(f"{_shown(before_plain, i)} -> {_shown(now_plain, i)}")
    return changes


def _shown(values, key) -> str:
    """``values[key]``'s repr, or "(unset)" when it has none."""
    try:
        return repr(values[key])
    except (KeyError, IndexError):
        return "(unset)"


def short_params_change(text: str, limit: int = 200) -> str:
    """Snakemake's description of a params change ("Union of exclusive params ... before: <reprs> now:
    <reprs>") as the list of changed settings; text it cannot read is cut to ``limit`` characters."""
    match = _PARAMS_TEXT.search(text)
    if match:
        before, now = _literal_list(match["before"]), _literal_list(match["now"])
        if before is not None and now is not None:
            changes = setting_changes(before, now)
            if changes:
                return ", ".join(changes)
            if before and now:
                return "the same settings, their keys in another order"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_reason(reason: str, keep: int = 1) -> str:
    """A job's reason to run with each file list cut to its first ``keep`` files and a count, and a params
    change told as the settings that changed (``short_params_change``)."""
    if PARAMS_LABEL in reason:
        head, _, tail = reason.partition(f"{PARAMS_LABEL}: ")
        params, sep, rest = tail.partition("; Software environment")
        changed = f"{PARAMS_LABEL}: {short_params_change(params)}"
        return "; ".join(p for p in (short_reason(head.rstrip("; "), keep), changed) if p) + (
            f"; Software environment{rest}" if sep else "")
    parts = []
    for part in reason.split("; "):
        label, sep, files = part.partition(": ")
        if sep and label in FILE_LIST_LABELS:
            part = f"{label}: {', '.join(short_file_list(files.split(', '), keep))}"
        parts.append(part)
    return "; ".join(parts)


class JobReportFilter(logging.Filter):
    """Rewrites Snakemake's job-info and job-error records (``record.event`` ``job_info`` / ``job_error``) as
    the module docstring says; every record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = str(getattr(getattr(record, "event", None), "value", ""))
        if event == "job_info" and isinstance(getattr(record, "reason", None), str):
            record.reason = short_reason(record.reason)
        elif event == "job_error":
            if isinstance(getattr(record, "input", None), list):
                record.input = short_file_list(record.input)
            if isinstance(getattr(record, "output", None), list):
                record.output = short_file_list(record.output)
            if getattr(record, "rule_msg", None) is None:
                record.msg = ""  # the report prints "message: <rule_msg>" whenever msg is set
        return True


def bottom_line_block(bottom_line, html) -> str | None:
    """The terminal's closing block: the bottom-line file's sentences (``bottom_line``, written by the report rule)
    under a heading naming it, then the report's path ``html`` unless the file names it already; None when the
    file is absent."""
    path = Path(bottom_line)
    if not path.is_file():
        return None
    text = path.read_text().rstrip("\n")
    return f"\nThe bottom line ({path}):\n{text}" + ("" if str(html) in text else f"\nReport: {html}")


def bottom_line_message(config_path) -> str:
    """What ``make report`` prints last: the study's ``bottom_line_block`` (``reports/<study>/``), or only the
    report's path when the study has no bottom line yet. The study's name is the config file's ``study`` (default
    ``default``)."""
    study = (yaml.safe_load(Path(config_path).read_text()) or {}).get("study") or "default"
    html = Path("reports") / study / "report.html"
    return bottom_line_block(Path("reports") / study / "bottom_line.txt", html) or f"report: {html}"

"""normlab.terminal: Snakemake's job headers and error reports cut to readable lines. The records and texts are
built with Snakemake's own classes (its params-change text, its log formatter), so a change of their format in a
Snakemake upgrade fails here."""

import logging

from snakemake.logging import DefaultFormatter
from snakemake.persistence import ParamsChange
from snakemake_interface_logger_plugins.common import LogEvent

from normlab import terminal

FILES = [f"results/default/digits/v{i}/runs.csv" for i in range(384)]


def params_text(before: dict, now: dict) -> str:
    return str(ParamsChange(only_old={repr(before)}, only_new={repr(now)}))


def test_short_file_list_keeps_the_first_files_and_counts_the_rest():
    assert terminal.short_file_list(FILES[:3], keep=2) == FILES[:3]  # one more file is not worth a count
    assert terminal.short_file_list(FILES[:4], keep=2) == FILES[:2] + ["... and 2 more"]
    assert terminal.short_file_list(FILES, keep=1) == FILES[:1] + ["... and 383 more"]


def test_a_changed_setting_is_named_with_both_values():
    before = {"curvature": {"lanczos_steps": 30, "top_k": 5}, "max_examples": 512}
    now = {"curvature": {"lanczos_steps": 20, "top_k": 5}, "max_examples": 512}
    assert terminal.short_params_change(params_text(before, now)) == "curvature.lanczos_steps: 30 -> 20"


def test_each_changed_mapping_is_paired_with_its_own_former_value():
    # two params of one job changed: each new mapping is compared with the old one sharing its keys
    sweep0, sweep1 = {"steps": 600, "lr_min": 1e-4}, {"steps": 300, "lr_min": 1e-4}
    shape0, shape1 = {"width": 64, "eps": 1e-5}, {"width": 32, "eps": 1e-5}
    text = str(ParamsChange(only_old={repr(sweep0), repr(shape0)}, only_new={repr(sweep1), repr(shape1)}))
    assert sorted(terminal.short_params_change(text).split(", ")) == ["steps: 600 -> 300", "width: 64 -> 32"]


def test_an_added_and_a_removed_key_say_unset():
    text = params_text({"target": "y", "drop": ["a"]}, {"target": "y", "impute": "mean"})
    assert terminal.short_params_change(text) == "drop: ['a'] -> (unset), impute: (unset) -> 'mean'"


def test_reordered_keys_are_said_to_be_the_same_settings():
    text = params_text({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert terminal.short_params_change(text) == "the same settings, their keys in another order"


def test_text_that_is_not_python_literals_is_cut_not_parsed():
    text = "before: <object at 0x1> now: " + "x" * 500
    out = terminal.short_params_change(text, limit=200)
    assert len(out) == 200 and out.endswith("...")


def test_a_reason_keeps_every_part_with_short_file_lists():
    reason = ("Missing output files: " + ", ".join(FILES[:8]) + "; Input files updated by another job: "
              + ", ".join(FILES) + "; Code has changed since last execution")
    short = terminal.short_reason(reason)
    assert short == (f"Missing output files: {FILES[0]}, ... and 7 more; Input files updated by another job: "
                     f"{FILES[0]}, ... and 383 more; Code has changed since last execution")
    assert terminal.short_reason("Forced execution") == "Forced execution"


def test_a_reason_with_a_params_change_names_the_setting_and_keeps_the_other_parts():
    params = params_text({"steps": 600}, {"steps": 300})
    reason = (f"Updated input files: {', '.join(FILES[:5])}; Params have changed since last execution: {params}; "
              "Software environment definition has changed since last execution")
    assert terminal.short_reason(reason) == (
        f"Updated input files: {FILES[0]}, ... and 4 more; Params have changed since last execution: "
        "steps: 600 -> 300; Software environment definition has changed since last execution")


def record(event: LogEvent, **fields) -> logging.LogRecord:
    rec = logging.LogRecord("snakemake.logging", logging.ERROR, __file__, 1, None, None, None)
    rec.__dict__.update(event=event, **fields)
    return rec


def test_a_failed_jobs_report_is_short_and_has_no_message_none():
    rec = record(LogEvent.JOB_ERROR, rule_name="tables", rule_msg=None, jobid=0, input=list(FILES),
                 output=FILES[:8], log=["logs/default/tables.log"], conda_env=None, container_img=None, aux={},
                 indent=False, shellcmd=None)
    assert terminal.JobReportFilter().filter(rec) is True
    text = DefaultFormatter().format(rec)
    assert "message: None" not in text
    assert f"input: {FILES[0]}, {FILES[1]}, ... and 382 more" in text
    assert "log: logs/default/tables.log" in text
    assert max(len(line) for line in text.splitlines()) < 300


def test_a_job_header_keeps_its_reason_short():
    reason = "Input files updated by another job: " + ", ".join(FILES)
    rec = record(LogEvent.JOB_INFO, reason=reason, rule_msg="tables", jobid=3, local=False)
    terminal.JobReportFilter().filter(rec)
    assert rec.reason == f"Input files updated by another job: {FILES[0]}, ... and 383 more"
    other = record(None, reason=reason)  # not a job record: untouched
    terminal.JobReportFilter().filter(other)
    assert other.reason == reason


def test_make_report_ends_with_the_studys_bottom_line(tmp_path, monkeypatch):
    """``make report`` prints the bottom line of the config's own study (not another study's), with the report's
    path; before the report exists, only the path."""
    from normlab.terminal import bottom_line_message

    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick.yaml").write_text("study: quick\nsweep: {steps: 10}\n")
    (tmp_path / "plain.yaml").write_text("sweep: {steps: 10}\n")
    assert bottom_line_message("quick.yaml") == "report: reports/quick/report.html"
    for study, line in (("quick", "- BN rounds the deeper layers."), ("default", "- another study's line")):
        (tmp_path / "reports" / study).mkdir(parents=True)
        (tmp_path / "reports" / study / "bottom_line.txt").write_text(line + "\n")
    assert bottom_line_message("quick.yaml") == (
        "\nThe bottom line (reports/quick/bottom_line.txt):\n- BN rounds the deeper layers.\n"
        "Report: reports/quick/report.html")
    assert "another study's line" in bottom_line_message("plain.yaml")  # no study key: the default study
    (tmp_path / "reports/quick/bottom_line.txt").write_text("- a line\nReport: reports/quick/report.html\n")
    assert bottom_line_message("quick.yaml").count("reports/quick/report.html") == 1

"""The workflow's side of the report, on the finished quick study (the session's ``quick`` fixture):

* rule report writes, beside report.html, its bottom line as plain text (reports/<study>/bottom_line.txt) and
  every figure of the report as a PNG file with its caption (reports/<study>/figures/, captions.json);
* Snakemake's own report (``snakemake --report report.html``, or ``.zip``) carries the tables, normlab's report,
  its bottom line and every figure as items with captions (workflow/rules/report.smk, workflow/report/);
* the terminal: a run that builds the report ends with its bottom line and path on stdout (the Snakefile's
  ``onsuccess``); a dry run, a run of another target, a failed run, a run with nothing to do and a run with
  ``NORMLAB_BOTTOM_LINE=0`` print none of it.

``snakemake --report`` only reads the quick study; the runs that rebuild or break the report work on copies.
"""

import base64
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import QUICK, study_folders
from snakemake_cli import snakemake_exe, subprocess_env

pytestmark = pytest.mark.workflow

TIMEOUT_S = 600
CONFIG = ["--configfile", "config/quick.yaml"]  # last: --configfile takes every argument after it
HEADER = "The bottom line ("  # the Snakefile's onsuccess: "The bottom line (<path>):", then the file


def run(root: Path, *args, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``snakemake *args`` in ``root`` as a user runs it (NORMLAB_BOTTOM_LINE unset unless ``env_extra``)."""
    env = subprocess_env(root / "jax-cache")
    env.pop("NORMLAB_BOTTOM_LINE", None)
    env.update(env_extra or {})
    return subprocess.run([snakemake_exe(), *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture
def run_copy(quick, tmp_path) -> Path:
    """A copy of the finished quick study (modification times kept: Snakemake compares them)."""
    return Path(shutil.copytree(quick[0], tmp_path / "run", symlinks=True))


def embedded(html: str, name: str):
    """The JSON that Snakemake's HTML report assigns to ``var <name>`` (one line of its template)."""
    m = re.search(rf"^\s*var {name} = (\{{.*\}});\s*$", html, flags=re.M)
    assert m, f"no `var {name} = {{...}};` line in Snakemake's report"
    return json.loads(m[1])


# ---------------------------------------------------------------- the report rule's outputs


def test_report_rule_writes_the_bottom_line_and_the_figures(quick):
    root = quick[0]
    f = study_folders(root, QUICK)
    text = (f.reports / "bottom_line.txt").read_text()
    assert text.strip() and f"reports/{QUICK}/report.html" in text, text
    figures = f.reports / "figures"
    captions = json.loads((figures / "captions.json").read_text())
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert pngs and sorted(captions) == pngs, (pngs, sorted(captions))
    assert all(c.strip() for c in captions.values()), captions
    # the folder holds the report's figures, byte for byte: every <img> of the report, and nothing else
    html = f.report.read_text()
    in_report = set(re.findall(r'<img[^>]*\bsrc="data:image/png;base64,([A-Za-z0-9+/=]+)"', html))
    in_folder = {base64.b64encode((figures / p).read_bytes()).decode() for p in pngs}
    assert in_folder == in_report, (f"{len(in_folder - in_report)} PNG files not in the report, "
                                    f"{len(in_report - in_folder)} report images not in {figures}")


# ---------------------------------------------------------------- snakemake --report


@pytest.mark.parametrize("suffix", ["html", "zip"])
def test_snakemake_report_carries_tables_and_figures_with_captions(quick, tmp_path, suffix):
    root = quick[0]
    f = study_folders(root, QUICK)
    out = tmp_path / f"snakemake-report.{suffix}"
    proc = ok(run(root, "--report", str(out), *CONFIG))
    assert HEADER not in proc.stdout + proc.stderr, "the bottom line printed by `snakemake --report`"
    if suffix == "zip":
        with zipfile.ZipFile(out) as z:
            names = z.namelist()
            html = z.read(next(n for n in names if n.endswith("/report.html") and "/data/" not in n)).decode()
        files = {Path(n).name for n in names if "/data/" in n}
    else:
        html = out.read_text()
    results, categories = embedded(html, "results"), embedded(html, "categories")
    for path, item in results.items():
        assert item["caption"].strip(), f"{path}: no caption"
    in_category = {cat: {p for sub in subs.values() for p in sub} for cat, subs in categories.items()}

    report = {str(p.relative_to(root)) for p in (f.report, f.reports / "bottom_line.txt")}
    assert report <= in_category.get("Report", set()), categories

    tables = sorted(f.tables.glob("*.csv"))
    assert len(tables) >= 10
    for p in tables:
        key = str(p.relative_to(root))
        assert key in in_category.get("Tables", set()), f"{key} is not a Tables item"
        assert results[key]["labels"]["table"] == p.name, results[key]

    figures = f.reports / "figures"
    captions = json.loads((figures / "captions.json").read_text())
    assert "headline.png" in captions, sorted(captions)
    for name, caption in captions.items():
        key = str((figures / name).relative_to(root))
        assert key in in_category.get("Figures", set()), f"{key} is not a Figures item"
        labels = results[key]["labels"]
        assert labels["figure"] == Path(name).stem
        assert labels["caption"] == caption.replace("{", "(").replace("}", ")"), (labels, caption)
        assert Path(name).stem in results[key]["caption"]
    assert [str((figures / "headline.png").relative_to(root))] == categories["Figures"]["Headline"]
    assert results[str(f.report.relative_to(root))]["mime_type"] == "text/html"
    if suffix == "zip":  # the files themselves, beside the page
        assert {p.name for p in tables} | set(captions) | {"report.html", "bottom_line.txt"} <= files


# ---------------------------------------------------------------- the terminal


def test_a_run_that_builds_the_report_ends_with_its_bottom_line(run_copy):
    proc = ok(run(run_copy, "--cores", "2", "--forcerun", "report", *CONFIG))
    text = (study_folders(run_copy, QUICK).reports / "bottom_line.txt").read_text()
    expected = f"{HEADER}reports/{QUICK}/bottom_line.txt):\n{text.rstrip()}"
    assert expected in proc.stdout, proc.stdout[-3000:]
    tail = proc.stdout[proc.stdout.index(expected):]  # the bottom line, then the report's path, last
    assert f"reports/{QUICK}/report.html" in tail.rstrip().splitlines()[-1], tail


def test_no_bottom_line_where_the_report_is_not_built(run_copy):
    """Quiet: a dry run, a run of another target, NORMLAB_BOTTOM_LINE=0 (the Makefile prints it itself), and a
    run with nothing to do."""
    dry = ok(run(run_copy, "--dry-run", "--forcerun", "report", *CONFIG))
    assert "report" in dry.stdout + dry.stderr
    tables = ok(run(run_copy, f"results/{QUICK}/tables/runs.csv", "--cores", "2", "--forcerun", "tables", *CONFIG))
    assert re.search(r"\b1 of 1 steps", tables.stdout + tables.stderr), tables.stderr[-3000:]
    # the report forced: the rewritten tables have the same content, and Snakemake (which keeps the checksums
    # of inputs under 1 MB) would not rerun it for their newer times alone
    off = ok(run(run_copy, "--cores", "2", "--forcerun", "report", *CONFIG, env_extra={"NORMLAB_BOTTOM_LINE": "0"}))
    assert re.search(r"\b2 of 2 steps", off.stdout + off.stderr), off.stderr[-3000:]  # report, all
    nothing = ok(run(run_copy, "--cores", "2", *CONFIG))
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    for name, proc in (("dry run", dry), ("other target", tables), ("NORMLAB_BOTTOM_LINE=0", off),
                       ("nothing to do", nothing)):
        assert HEADER not in proc.stdout + proc.stderr, f"{name}:\n{proc.stdout[-3000:]}"


def test_a_failed_report_prints_no_bottom_line(run_copy):
    variants = study_folders(run_copy, QUICK).tables / "variants.csv"
    variants.write_text("not,the,table\n")
    proc = run(run_copy, "--cores", "2", *CONFIG)
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert "report" in proc.stderr
    assert HEADER not in proc.stdout + proc.stderr, proc.stdout[-3000:]

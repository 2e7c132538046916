"""The dependency files agree with each other and are complete: the runtime lock (requirements.lock) holds
exactly the runtime's dependency closure, the optional locks (test, cluster, parquet) add only what their
tools need on top of it, pyproject.toml names the same pins, and the conda files use the runtime pins
without paths that break when Snakemake copies the environment file into its --conda-prefix.

The dependency closure is read from the metadata of the installed packages (the test environment has every
lock installed), with each requirement's environment markers evaluated here."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
OPTIONAL_LOCKS = {"test": "requirements-test.lock", "cluster": "requirements-cluster.lock",
                  "parquet": "requirements-parquet.lock"}
# build tools pinned in the runtime lock for `pip install --no-build-isolation -e .`; nothing requires them
BUILD_TOOLS = {"setuptools", "wheel"}


def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a lock file's ``name==version`` lines."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not pinned with =="
            found[canonicalize_name(name)] = version
    return found


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def closure(requirements: list[str]) -> set[str]:
    """The canonical names of ``requirements`` and everything they require, extras included, as installed."""
    seen, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        environments = [{"extra": e} for e in req.extras] or [{"extra": ""}]
        for text in metadata.distribution(req.name).requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate(env) for env in environments):
                todo.append(dep)
    return {name for name, _ in seen}


def test_the_runtime_lock_is_the_runtime_s_closure_and_nothing_else():
    runtime = pins(REPO / "requirements.lock")
    assert set(runtime) - BUILD_TOOLS == closure(project()["dependencies"])
    for lock in OPTIONAL_LOCKS.values():
        assert not set(pins(REPO / lock)) & set(runtime), f"{lock} repeats a pin of requirements.lock"
    for tool in ("pytest", "ruff", "selenium", "snakemake-executor-plugin-slurm", "pyarrow"):
        assert tool not in runtime


@pytest.mark.parametrize("extra", sorted(OPTIONAL_LOCKS))
def test_each_optional_lock_adds_exactly_what_its_extra_needs(extra):
    runtime = set(pins(REPO / "requirements.lock"))
    needed = closure(project()["optional-dependencies"][extra]) - runtime
    assert set(pins(REPO / OPTIONAL_LOCKS[extra])) == needed


def test_every_lock_pins_the_installed_version_and_pyproject_agrees():
    locked = {}
    for lock in ["requirements.lock", *OPTIONAL_LOCKS.values()]:
        locked.update(pins(REPO / lock))
    for name, version in locked.items():
        assert metadata.version(name) == version, f"{name}: locked {version}, installed {metadata.version(name)}"
    declared = project()["dependencies"] + [r for rs in project()["optional-dependencies"].values() for r in rs]
    for text in declared:
        req = Requirement(text)
        assert str(req.specifier) == f"=={locked[canonicalize_name(req.name)]}", text


def test_parquet_is_optional():
    assert not any(Requirement(r).name == "pyarrow" for r in project()["dependencies"])
    assert project()["optional-dependencies"]["parquet"] == ["pyarrow==26.0.1"]


def test_the_rules_conda_environment_lists_the_runtime_pins_and_no_paths():
    """Snakemake copies workflow/envs/normlab.yaml into its --conda-prefix before conda reads it, so a path in
    it (-r ../../requirements.lock, -e ../..) would resolve against the prefix, not the checkout."""
    env = yaml.safe_load((REPO / "workflow" / "envs" / "normlab.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", p) for p in pip), pip
    assert {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pip} == pins(REPO / "requirements.lock")
    assert "python=3.11" in env["dependencies"]
    deploy = REPO / "workflow" / "envs" / "normlab.post-deploy.sh"  # installs normlab itself
    assert "pip install --no-deps --no-build-isolation -e ." in deploy.read_text()


def test_environment_yml_uses_the_runtime_lock():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements.lock", "-e ."]

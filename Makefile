# normlab: `make report` runs the default study, `make test` runs the test suite.
# Both create .venv from the pinned lock (requirements.lock) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.normlab-installed$(if $(ACCEL),-$(ACCEL))
CORES ?= all
CONFIG ?= config/config.yaml
# ACCEL=cuda12: also install JAX's CUDA 12 build (requirements-cuda12.lock) for the GPU path
ACCEL ?=

.PHONY: setup report test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml $(if $(ACCEL),requirements-$(ACCEL).lock)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(if $(ACCEL),$(BIN)/python -m pip install --quiet -r requirements-$(ACCEL).lock)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --printshellcmds
	@echo "report: reports/report.html"

test: $(STAMP)
	bash tests/system_deps.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

test-fast: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not workflow and not browser and not slurm"

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check normlab scripts tests bench
	$(BIN)/snakemake --lint --configfile $(CONFIG)

clean:
	rm -rf data results reports logs benchmarks .snakemake

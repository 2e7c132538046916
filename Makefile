# normlab: `make report` runs the default study, `make test` runs the test suite.
# Both create .venv on first use: `make setup` (and report, bench) installs the runtime lock
# (requirements.lock) and the optional ones asked for; `make test` (and test-fast, lint) adds the test
# tools, the SLURM executor and Parquet support (requirements-{test,cluster,parquet}.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIG ?= config/config.yaml
# EXTRAS: optional parts, each one requirements-<name>.lock on top of the runtime: parquet (Parquet sources),
# cluster (the SLURM executor), e.g. `make setup EXTRAS="parquet cluster"`
EXTRAS ?=
# ACCEL=cuda12: also install JAX's CUDA 12 build (requirements-cuda12.lock) for the GPU path
ACCEL ?=
LOCKS := requirements.lock $(foreach x,$(EXTRAS) $(ACCEL),requirements-$(x).lock)
STAMP := $(VENV)/.normlab-installed$(foreach x,$(EXTRAS) $(ACCEL),-$(x))
TEST_LOCKS := requirements-test.lock requirements-cluster.lock requirements-parquet.lock
TEST_STAMP := $(VENV)/.normlab-test-installed

.PHONY: setup report test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): $(LOCKS) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(addprefix -r ,$(LOCKS))
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# the test tools on top of the runtime, resolved together with it in one pip call
$(TEST_STAMP): $(STAMP) $(TEST_LOCKS)
	$(BIN)/python -m pip install --quiet $(addprefix -r ,$(LOCKS) $(TEST_LOCKS))
	touch $@

# the bottom line printed here rather than by the workflow's end-of-run handler, so that a run with nothing to do
# prints it too
report: $(STAMP)
	NORMLAB_BOTTOM_LINE=0 $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	@$(BIN)/python -c 'import sys; from normlab import terminal; print(terminal.bottom_line_message(sys.argv[1]))' $(CONFIG)

test: $(TEST_STAMP)
	bash tests/system_deps.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

test-fast: $(TEST_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not workflow and not browser and not slurm"

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run_all.py

lint: $(TEST_STAMP)
	$(BIN)/ruff check normlab scripts tests bench
	$(BIN)/snakemake --lint --configfile $(CONFIG)

clean:
	rm -rf data results reports logs benchmarks .snakemake

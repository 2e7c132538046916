#!/usr/bin/env bash
# Snakemake runs this once in the new conda environment of workflow/envs/normlab.yaml (--use-conda), in the
# directory it runs in: normlab itself goes in editable, from this checkout (its dependencies are in the
# environment already; setuptools is among them, so no build isolation is needed).
set -euo pipefail
if [ ! -f pyproject.toml ] || ! grep -q '^name = "normlab"' pyproject.toml; then
    echo "normlab.post-deploy.sh: $(pwd) is not the normlab checkout; run snakemake from the repository root" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation -e .

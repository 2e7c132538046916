#!/usr/bin/env bash
# System packages that some tests need and that pip cannot provide. Installs only what is missing.
# Nothing is needed yet; later tests (browser, SLURM) add their Debian packages here.
set -euo pipefail
exit 0

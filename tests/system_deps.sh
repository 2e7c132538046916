#!/usr/bin/env bash
# System packages that some tests need and that pip cannot provide. Installs only what is missing, so a
# second run (or a machine that has them) returns at once without touching apt.
#   chromium, chromium-driver: tests/test_browser.py drives headless Chromium through Selenium.
#   slurm-wlm, munge: tests/test_slurm.py runs the quick study on a one-node SLURM cluster (the packages'
#   daemons are not started here: the test starts and stops its own).
set -euo pipefail

# command that must be on PATH -> Debian packages to install when it is not (installed without Recommends;
# fonts-liberation is the one Recommends of chromium that the report's screenshot wants)
declare -A NEEDED=(
    [chromium]="chromium fonts-liberation"
    [chromedriver]="chromium-driver"
    [slurmctld]="slurm-wlm"
    [slurmd]="slurm-wlm"
    [sbatch]="slurm-wlm"
    [munged]="munge"
    [mungekey]="munge"
)

missing=()
for cmd in "${!NEEDED[@]}"; do
    # shellcheck disable=SC2206  # the value is a space-separated package list
    command -v "$cmd" >/dev/null 2>&1 || missing+=(${NEEDED[$cmd]})
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
    echo "system_deps.sh: missing Debian packages: ${missing[*]}" >&2
    echo "system_deps.sh: run as root (or: sudo apt-get install -y ${missing[*]}), then run the tests again." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system_deps.sh: missing ${missing[*]} and there is no apt-get here; install them by hand." >&2
    exit 1
fi

echo "system_deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

for cmd in "${!NEEDED[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "system_deps.sh: '$cmd' is still not on PATH after installing ${NEEDED[$cmd]}" >&2
        exit 1
    fi
done

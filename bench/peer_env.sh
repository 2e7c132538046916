#!/usr/bin/env bash
# Create bench/.venv-peer: the separate environment of the PyHessian peer benchmark (bench_pyhessian.py).
#
# It holds a CPU build of PyTorch and PyHessian, which are NOT dependencies of normlab: the product's own
# .venv never gets torch. Idempotent: does nothing when the environment already imports the pinned
# versions. Run from anywhere: `bash bench/peer_env.sh`; PYTHON=python3.11 picks the interpreter.
#
# Pins: torch==2.13.0 (on this machine's kind a CPU wheel for Python 3.11 lies on local disk; an
# unpinned `torch` can pull a CUDA build of several GB) and pyhessian==0.1 (a 7 kB pure-Python wheel
# whose only requirements are numpy and torch). PyHessian is installed with --no-deps so that its
# unpinned `torch` requirement can never replace the CPU build; numpy is installed explicitly.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEER_VENV:-$HERE/.venv-peer}"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"
PYHESSIAN_PIN="pyhessian==0.1"
NUMPY_PIN="numpy<3"

check() {
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import pyhessian, torch  # noqa: F401
assert md.version("torch").split("+")[0] == "2.13.0", md.version("torch")
assert md.version("pyhessian") == "0.1", md.version("pyhessian")
EOF
}

start=$(date +%s)
if [ -x "$VENV/bin/python" ] && check; then
    echo "peer_env: $VENV already has $TORCH_PIN and $PYHESSIAN_PIN; nothing to do"
    exit 0
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH_PIN" "$NUMPY_PIN"
"$VENV/bin/python" -m pip install --quiet --no-deps "$PYHESSIAN_PIN"

if ! check; then
    echo "peer_env: $VENV was built but does not import $TORCH_PIN and $PYHESSIAN_PIN" >&2
    exit 1
fi
"$VENV/bin/python" -c 'import torch, pyhessian; print("peer_env: torch", torch.__version__, "| pyhessian ok |",
    "cuda available:", torch.cuda.is_available())'
echo "peer_env: $VENV ready in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"

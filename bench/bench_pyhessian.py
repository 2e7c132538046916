"""Peer benchmark: normlab's top Hessian eigenvalue and trace side by side with PyHessian (PyTorch).

Same MLPs (depth 2 and 4, width 64, 64 inputs, 10 classes, ReLU, softmax cross-entropy mean; no norm
and batch norm), same weights (``init_params`` then a few full-batch gradient steps, so the spectrum is
not that of a random init) and same data (512 rows of scikit-learn's digits, standardized; random
normal inputs if scikit-learn is missing), in float32 and float64. PyHessian and torch run in their
own environment, bench/.venv-peer (``bash bench/peer_env.sh``), never in normlab's .venv: this file
saves the weights and data to a temporary .npz and runs a torch script with that interpreter.

Both tools compute the same two numbers on the same batch, to the same tolerance: the top eigenvalue
(PyHessian: its power iteration with its defaults ``maxIter=100, tol=1e-3``; normlab: Lanczos until its
estimated error is ``--eig-tol`` (1e-3) of the value, at most ``--lanczos-steps`` products) and a Hutchinson
trace (PyHessian: ``--trace-probes`` Rademacher probes, run with ``tol=0`` so that it uses exactly that many;
normlab, by default: deflated by its Lanczos basis, probes until its relative standard error is PyHessian's in
that row, at most ``--trace-probes``; ``--trace-se probes``: plain Hutchinson with PyHessian's probes;
``--eig-tol 0``: all ``--lanczos-steps`` products). PyHessian is also run once with a
tight budget (``--tight-iters``, ``tol=1e-6``) to see where its power iteration converges; a float64
Lanczos run with ``--ref-steps`` products gives a reference eigenvalue.

Batch norm: normlab's loss uses the statistics of the batch (training mode). ``pyhessian.hessian``
calls ``model.eval()``, so a standard ``nn.BatchNorm1d`` would use its running statistics, held
constant. Row ``bn=train``: torch BN built with ``track_running_stats=False``, which uses the batch
statistics even in eval mode and keeps no running statistics (nothing to update): the same function as
normlab's. Row ``bn=eval``: a standard BN whose running mean and (biased) variance are set to this
batch's statistics (same loss value) as PyHessian measures it, against normlab's loss with those
statistics passed as fixed ``norm_stats``.

Times (seconds, medians over ``--repeats`` runs, same seeds each run), both tools on ``--threads``
CPU threads (default 1: the benchmark machine is shared, and torch's OpenMP pool slows down many-fold
when its threads compete with other work; 0 keeps each library's default; XLA can be limited only
before JAX starts in the process, so under ``make bench``, after other benchmarks, normlab keeps its
setting, which the header line reports). normlab ``nl_s`` is warm (compiled programs reused;
``normlab_top_eig_and_trace`` from bench_curvature.py), ``nl_cold_s`` is the first call in this
process, compilation included. PyHessian ``pyh_s`` = building ``hessian`` (forward + backward with
create_graph) + ``eigenvalues`` + ``trace``, after one untimed small warm-up run. ``speedup`` = pyh_s /
nl_s (goal >= 10 on CPU), ``speedup_cold`` = pyh_s / nl_cold_s, ``speedup_eig``: the eigenvalue part
alone. ``rel_diff`` = |lambda_nl - lambda_pyh| / |lambda_nl| at the same dtype (goal <= 1e-3);
``pyh_it_1e-3`` / ``nl_it_1e-3``: products each method needs before its estimate stays within 1e-3 of
the reference.

    python bench/bench_pyhessian.py [--out bench/results/pyhessian.csv] [--depths 2 4] [--repeats 5] [--threads 1]

If bench/.venv-peer is missing, it says how to create it and returns without a result (exit 0).
``main(argv)`` does the same when imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from normlab import curvature as C
from normlab import model as M
from normlab.preprocess import fit_standardizer

BENCH_DIR = Path(__file__).resolve().parent
PEER_VENV = BENCH_DIR / ".venv-peer"
DEFAULT_OUT = os.path.join("bench", "results", "pyhessian.csv")
DEPTHS = (2, 4)
WIDTH, N_FEATURES, N_CLASSES, BATCH = 64, 64, 10, 512
COLUMNS = ("model", "bn", "dtype", "n_params", "loss_nl", "loss_torch", "nl_threads", "torch_threads",
           "nl_s", "nl_cold_s", "nl_eig_s", "pyh_s", "pyh_init_s", "pyh_eig_s", "pyh_trace_s", "speedup",
           "speedup_cold", "speedup_eig", "lambda_nl", "lambda_nl_resid", "lambda_pyh", "rel_diff", "pyh_eig_iters",
           "pyh_iters_to_1e-3", "nl_steps_to_1e-3", "lambda_pyh_tight", "rel_diff_tight", "pyh_tight_iters",
           "pyh_tight_s", "lambda_ref", "rel_err_nl", "rel_err_pyh", "trace_nl", "trace_nl_se", "trace_pyh",
           "trace_pyh_se", "trace_z", "trace_probes", "lanczos_steps", "nl_eig_steps", "nl_trace_probes",
           "torch_version", "platform")
TIME_TABLE = (("model", "model"), ("bn", "bn"), ("dtype", "dtype"), ("n_params", "n"), ("nl_s", "nl_s"),
              ("nl_cold_s", "nl_cold_s"), ("pyh_s", "pyh_s"), ("speedup", "speedup"),
              ("speedup_cold", "speedup_cold"), ("nl_eig_s", "nl_eig_s"), ("pyh_eig_s", "pyh_eig_s"),
              ("speedup_eig", "speedup_eig"), ("pyh_trace_s", "pyh_trace_s"))
ACC_TABLE = (("model", "model"), ("bn", "bn"), ("dtype", "dtype"), ("lambda_nl", "lambda_nl"),
             ("lambda_pyh", "lambda_pyh"), ("rel_diff", "rel_diff"), ("pyh_eig_iters", "pyh_it"),
             ("pyh_iters_to_1e-3", "pyh_it_1e-3"), ("nl_eig_steps", "nl_it"),
             ("nl_steps_to_1e-3", "nl_it_1e-3"), ("lambda_pyh_tight", "lambda_pyh_tight"),
             ("rel_diff_tight", "rel_diff_tight"), ("pyh_tight_iters", "tight_it"), ("rel_err_nl", "nl_err_vs_ref"),
             ("trace_nl", "trace_nl"), ("trace_nl_se", "+-"), ("trace_pyh", "trace_pyh"), ("trace_pyh_se", "+-"),
             ("trace_z", "z"), ("nl_trace_probes", "nl_probes"))


def _load_bench_curvature():
    """bench_curvature.py (beside this file) as a module, whether bench/ is on sys.path or not."""
    if "bench_curvature" in sys.modules:
        return sys.modules["bench_curvature"]
    spec = importlib.util.spec_from_file_location("bench_curvature", BENCH_DIR / "bench_curvature.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------------------------------
# The PyTorch side: run by bench/.venv-peer/bin/python as `python script.py jobs.json`; prints JSON.

PEER_SCRIPT = r'''
import json, statistics, sys, time, warnings
import numpy as np
import torch
from torch import nn
import pyhessian
from pyhessian import hessian
from pyhessian.utils import group_product

# hessian() calls loss.backward(create_graph=True): torch warns of a parameter <-> grad reference cycle;
# run_once breaks it with zero_grad(set_to_none=True) after each run.
warnings.filterwarnings("ignore", message="Using backward.. with create_graph=True")
_hv_mod = sys.modules["pyhessian.hessian"]
_hvp = _hv_mod.hessian_vector_product
HVP_CALLS = [0]
RAYLEIGH = []  # v.Hv of each product while recording (the tight run): PyHessian's eigenvalue iterates
RECORD = [False]


def _counting_hvp(gradsH, params, v):
    HVP_CALLS[0] += 1
    Hv = _hvp(gradsH, params, v)
    if RECORD[0]:
        RAYLEIGH.append(float(group_product(Hv, v)))
    return Hv


_hv_mod.hessian_vector_product = _counting_hvp  # count PyHessian's products (power iterations, probes)


def build(job, arrays, dtype, bn_mode):
    """nn.Sequential [Linear, (BN), ReLU] x depth + Linear; Linear.weight = normlab's W transposed, so
    z = a W + b as in normlab; hidden layers under BN have no bias (BN's beta takes its role)."""
    sizes = job["sizes"]
    L = len(sizes) - 1
    mods = []
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    for l in range(1, L + 1):
        has_b = f"layer{l}.b" in arrays
        lin = nn.Linear(sizes[l - 1], sizes[l], bias=has_b)
        with torch.no_grad():
            lin.weight.copy_(t(arrays[f"layer{l}.W"].T))
            if has_b:
                lin.bias.copy_(t(arrays[f"layer{l}.b"]))
        mods.append(lin)
        if l == L:
            break
        if job["norm"] == "batchnorm":
            # bn=train: no running statistics, batch statistics (biased variance) in train AND eval mode.
            # bn=eval: a standard BN; pyhessian's model.eval() makes it use running stats, set here to
            # this batch's mean and biased variance (held constant).
            bn = nn.BatchNorm1d(sizes[l], eps=job["eps"], affine=True, track_running_stats=(bn_mode == "eval"))
            with torch.no_grad():
                bn.weight.copy_(t(arrays[f"layer{l}.gamma"]))
                bn.bias.copy_(t(arrays[f"layer{l}.beta"]))
                if bn_mode == "eval":
                    bn.running_mean.copy_(t(arrays[f"stats{l}.mean"]))
                    bn.running_var.copy_(t(arrays[f"stats{l}.var"]))
            mods.append(bn)
        mods.append(nn.ReLU())
    return nn.Sequential(*mods).to(dtype)


def run_once(model, criterion, X, y, seed, eig_iters, eig_tol, trace_probes):
    model.zero_grad(set_to_none=True)  # hessian() runs backward(), which adds to any existing .grad
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    h = hessian(model, criterion, data=(X, y), cuda=False)
    t1 = time.perf_counter()
    HVP_CALLS[0] = 0
    eigs, _ = h.eigenvalues(top_n=1, maxIter=eig_iters, tol=eig_tol)
    t2 = time.perf_counter()
    eig_iters_used = HVP_CALLS[0]
    samples = h.trace(maxIter=trace_probes, tol=0.0) if trace_probes > 0 else [float("nan")]
    t3 = time.perf_counter()
    s = np.asarray(samples, np.float64)
    model.zero_grad(set_to_none=True)
    return {"init_s": t1 - t0, "eig_s": t2 - t1, "trace_s": t3 - t2, "total_s": t3 - t0,
            "eigenvalue": float(eigs[0]), "eig_iters": eig_iters_used, "trace": float(s.mean()),
            "trace_se": float(s.std(ddof=1) / np.sqrt(s.size)) if s.size > 1 else float("nan"),
            "trace_probes": int(s.size)}


def main():
    cfg = json.load(open(sys.argv[1]))
    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    out = []
    for job in cfg["jobs"]:
        dtype = {"float32": torch.float32, "float64": torch.float64}[job["dtype"]]
        torch.set_default_dtype(dtype)  # PyHessian draws its random vectors in the default dtype
        arrays = dict(np.load(job["npz"]))
        X = torch.from_numpy(arrays.pop("X")).to(dtype)
        y = torch.from_numpy(arrays.pop("y")).long()
        model = build(job, arrays, dtype, job["bn"])
        criterion = nn.CrossEntropyLoss()
        model.eval()  # what pyhessian.hessian does; bn=train BN ignores it (no running statistics)
        with torch.no_grad():
            loss = float(criterion(model(X), y))
        run_once(model, criterion, X, y, job["seed"], 2, 0.0, 2)  # warm-up (autograd, thread pool)
        runs = [run_once(model, criterion, X, y, job["seed"], job["eig_iters"], job["eig_tol"],
                         job["trace_probes"]) for _ in range(job["repeats"])]
        r = dict(runs[-1])
        for k in ("init_s", "eig_s", "trace_s", "total_s"):
            r[k] = statistics.median(x[k] for x in runs)
        RAYLEIGH.clear()
        RECORD[0] = True
        tight = run_once(model, criterion, X, y, job["seed"], job["tight_iters"], job["tight_tol"], 0)
        RECORD[0] = False
        r.update(key=job["key"], loss=loss, eigenvalue_tight=tight["eigenvalue"], tight_iters=tight["eig_iters"],
                 tight_s=tight["init_s"] + tight["eig_s"], rayleigh=list(RAYLEIGH),
                 torch_threads=torch.get_num_threads(), torch_version=torch.__version__)
        print(f"  pyhessian {job['key']}: {r['total_s']:.3f} s, lambda {r['eigenvalue']:.6g}", file=sys.stderr,
              flush=True)
        out.append(r)
    json.dump(out, sys.stdout)


main()
'''


def peer_python(path: str | os.PathLike | None = None) -> Path:
    """The interpreter of the peer environment: ``path``, else $NORMLAB_PEER_PYTHON, else
    bench/.venv-peer/bin/python."""
    return Path(path or os.environ.get("NORMLAB_PEER_PYTHON") or PEER_VENV / "bin" / "python")


def run_peer(python: Path, jobs: list[dict], workdir: str, threads: int = 1) -> dict[str, dict]:
    """Run PEER_SCRIPT on ``jobs`` with ``python`` (torch limited to ``threads`` threads unless 0);
    {job key: result dict}."""
    script = os.path.join(workdir, "pyhessian_peer.py")
    cfg = os.path.join(workdir, "jobs.json")
    with open(script, "w") as f:
        f.write(PEER_SCRIPT)
    with open(cfg, "w") as f:
        json.dump({"jobs": jobs, "threads": threads}, f)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(python), script, cfg], capture_output=True, text=True, env=env)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"the PyHessian script failed (exit {proc.returncode}) under {python}")
    return {r["key"]: r for r in json.loads(proc.stdout)}


# --------------------------------------------------------------------------------------------------
# The normlab side.


def default_spec(depth: int, norm: str) -> M.ModelSpec:
    return M.ModelSpec((N_FEATURES,) + (WIDTH,) * depth + (N_CLASSES,), activation="relu", norm=norm)


def digits_batch(n: int = BATCH, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(X (n, 64) float64 standardized, y (n,) int64, source): n random rows of scikit-learn's digits,
    standardized on those rows; random normal inputs and uniform labels if scikit-learn is missing."""
    rng = np.random.default_rng(seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        X = rng.standard_normal((n, N_FEATURES))
        return X, rng.integers(0, N_CLASSES, n).astype(np.int64), "random"
    d = load_digits()
    idx = rng.permutation(len(d.target))[:n]
    X = np.asarray(d.data[idx], np.float64)
    mean, scale = fit_standardizer(X)
    return (X - mean) / scale, np.asarray(d.target[idx], np.int64), "digits"


def trained_weights(spec: M.ModelSpec, X: np.ndarray, y: np.ndarray, seed: int, steps: int,
                    lr: float) -> dict[str, np.ndarray]:
    """``init_params`` (float32) then ``steps`` full-batch gradient-descent steps on (X, y): float32
    checkpoint-style arrays, exactly representable in float64 too (the same weights in both dtypes)."""
    params = M.init_params(spec, jax.random.PRNGKey(seed), jnp.float32)
    Xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(y)

    @jax.jit
    def step(p):
        g = jax.grad(lambda q: M.loss(spec, q, Xj, yj))(p)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)

    for _ in range(steps):
        params = step(params)
    return M.flatten_params(params)


@dataclasses.dataclass(frozen=True)
class FixedStatsLoss:
    """J(params, X, y, stats) with batch norm using the given per-layer (mean, var): BN in eval mode,
    the statistics constants (what PyHessian measures after model.eval())."""

    spec: M.ModelSpec

    def __call__(self, params, X, y, stats):
        return M.loss(self.spec, params, X, y, stats)


def _operator(spec: M.ModelSpec, weights: Mapping[str, np.ndarray], X, y, dtype, fixed_stats: bool):
    """normlab's Hessian operator of the loss on (X, y) in ``dtype``; BN in training mode, or (fixed_stats)
    with this batch's statistics as constants (``M.population_stats``)."""
    params = M.unflatten_params({k: np.asarray(v, dtype) for k, v in weights.items()})
    Xj, yj = jnp.asarray(X, dtype), jnp.asarray(y)
    if not fixed_stats:
        return C.model_operator(spec, params, Xj, yj, "hessian")
    return C.hessian_operator(FixedStatsLoss(spec), params, None, (Xj, yj, M.population_stats(spec, params, Xj)))


def fixed_stats_operator(spec: M.ModelSpec, weights: Mapping[str, np.ndarray], X, y, dtype):
    """The Hessian operator with BN using this batch's statistics as constants (computed when it is built,
    inside the timing): the function PyHessian sees after ``model.eval()``."""
    return _operator(spec, weights, X, y, dtype, True)


def normlab_top_eig(spec: M.ModelSpec, weights: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray, *,
                    dtype=np.float64, seed: int = 0, num_steps: int = 40, fixed_stats: bool = False,
                    tol: float | None = None) -> dict:
    """The eigenvalue half of ``normlab_top_eig_and_trace`` alone (operator + Lanczos): its seconds and
    top_eigenvalue."""
    t0 = time.perf_counter()
    eig = C.top_eigenpairs(_operator(spec, weights, X, y, dtype, fixed_stats), 1, jax.random.PRNGKey(seed),
                           num_steps=num_steps, tol=tol)
    lam = float(eig.values[0])
    return {"top_eigenvalue": lam, "top_residual": float(eig.residuals[0]), "seconds": time.perf_counter() - t0}


def _loss_value(spec: M.ModelSpec, weights, X, y, dtype, fixed_stats: bool) -> float:
    params = M.unflatten_params({k: np.asarray(v, dtype) for k, v in weights.items()})
    Xj = jnp.asarray(X, dtype)
    stats = M.population_stats(spec, params, Xj) if fixed_stats else None
    return float(M.loss(spec, params, Xj, jnp.asarray(y), stats))


def _time_normlab(fn, repeats: int) -> tuple[float, float, dict]:
    """(cold seconds: first call, compilation included; warm: median of ``repeats`` more calls; result)."""
    first = fn()
    warm = [fn() for _ in range(repeats)]
    return first["seconds"], statistics.median(r["seconds"] for r in warm), warm[-1]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(a) if a != 0 else float("nan")


def iters_to_tol(rayleigh: Sequence[float], ref: float, tol: float = 1e-3) -> int:
    """Power iterations after which every later iterate is within ``tol`` (relative) of ``ref``; -1 if
    the last one is not."""
    ok = [abs(r - ref) <= tol * abs(ref) for r in rayleigh]
    if not ok or not ok[-1]:
        return -1
    k = len(ok)
    while k > 0 and ok[k - 1]:
        k -= 1
    return k + 1


def lanczos_steps_to_tol(spec: M.ModelSpec, weights: Mapping[str, np.ndarray], X, y, *, dtype, seed: int,
                         num_steps: int, ref: float, fixed_stats: bool = False, tol: float = 1e-3) -> int:
    """Lanczos products after which normlab's top Ritz value stays within ``tol`` of ``ref`` (from the
    tridiagonal of one ``num_steps`` run from a Gaussian start; -1 if not within ``num_steps``)."""
    op = _operator(spec, weights, X, y, dtype, fixed_stats)
    v0 = np.random.default_rng(seed).standard_normal(op.n)
    res = C.lanczos(op, jnp.asarray(v0, op.dtype), num_steps)
    alpha, beta = np.asarray(res.alpha, np.float64), np.asarray(res.beta, np.float64)
    ritz = [float(np.linalg.eigvalsh(np.diag(alpha[:k]) + np.diag(beta[:k - 1], 1) + np.diag(beta[:k - 1], -1))[-1])
            for k in range(1, alpha.size + 1)]
    return iters_to_tol(ritz, ref, tol)


def format_table(rows: Sequence[Mapping[str, object]], columns) -> str:
    def fmt(c, v):
        if isinstance(v, float):
            return f"{v:.7g}" if c.startswith(("lambda", "trace_nl", "trace_pyh")) and not c.endswith("_se") \
                else f"{v:.3g}"
        return str(v)

    cells = [[fmt(c, r[c]) for c, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, object]], path: str) -> None:
    _load_bench_curvature().write_csv(rows, path, COLUMNS, ".8g")


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="CSV path (default %(default)s)")
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    parser.add_argument("--norms", nargs="+", default=["none", "batchnorm"], choices=("none", "batchnorm"))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=("float32", "float64"))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per tool and row (median)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and XLA (0: each library's "
                        "default; XLA can only be limited before JAX starts in this process)")
    parser.add_argument("--lanczos-steps", type=int, default=40, help="normlab Lanczos products (default 40)")
    parser.add_argument("--trace-probes", type=int, default=64, help="Hutchinson probes (PyHessian; normlab's cap)")
    parser.add_argument("--eig-tol", type=float, default=1e-3, help="normlab's Lanczos stops once its top value's "
                        "estimated error is <= this x the value (default 1e-3, PyHessian's tol); 0: every step")
    parser.add_argument("--trace-se", choices=("pyhessian", "probes"), default="pyhessian",
                        help="normlab's trace: 'pyhessian' (default) deflated by the Lanczos basis, probes until its "
                        "relative standard error is PyHessian's in that row; 'probes': plain Hutchinson, "
                        "--trace-probes probes, as PyHessian")
    parser.add_argument("--pyh-max-iter", type=int, default=100, help="PyHessian eigenvalues maxIter (default 100)")
    parser.add_argument("--pyh-tol", type=float, default=1e-3, help="PyHessian eigenvalues tol (default 1e-3)")
    parser.add_argument("--tight-iters", type=int, default=1000, help="PyHessian tight run: maxIter (tol 1e-6)")
    parser.add_argument("--ref-steps", type=int, default=120, help="float64 Lanczos products of the reference")
    parser.add_argument("--train-steps", type=int, default=100, help="gradient steps from init_params")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-python", default=None, help="interpreter with torch + pyhessian "
                        "(default $NORMLAB_PEER_PYTHON or bench/.venv-peer/bin/python)")
    args = parser.parse_args(argv)

    python = peer_python(args.peer_python)
    if not python.exists():
        print(f"bench_pyhessian: skipped: the peer environment is missing ({python}).\n"
              "  Create it (CPU torch + pyhessian, kept out of normlab's .venv) with:  bash bench/peer_env.sh\n"
              "  then rerun this benchmark. No result written.")
        return []

    bc = _load_bench_curvature()
    nl_threads = bc.set_threads(args.threads, f"torch gets {args.threads}")
    X, y, source = digits_batch(BATCH, args.seed)
    models = []
    for depth in args.depths:
        for norm in args.norms:
            spec = default_spec(depth, norm)
            weights = trained_weights(spec, X, y, args.seed + depth, args.train_steps, args.lr)
            models.append((f"mlp-d{depth}-{norm}", spec, weights))
    print(f"data: {source}, {X.shape[0]} x {X.shape[1]}; weights: init_params + {args.train_steps} GD steps "
          f"(lr {args.lr})", file=sys.stderr, flush=True)

    cases = [(name, spec, weights, bn, dt) for name, spec, weights in models
             for bn in (("train", "eval") if spec.norm == "batchnorm" else ("-",)) for dt in args.dtypes]
    with tempfile.TemporaryDirectory(prefix="normlab-pyhessian-") as tmp:
        jobs = []
        for name, spec, weights, bn, dt in cases:
            npz = os.path.join(tmp, f"{name}.npz")
            if not os.path.exists(npz):
                arrays = dict(weights, X=X.astype(np.float64), y=y)
                if spec.norm == "batchnorm":  # this batch's BN statistics, for the eval-mode torch BN
                    params64 = M.unflatten_params({k: np.asarray(v, np.float64) for k, v in weights.items()})
                    for l, (mean, var) in enumerate(M.population_stats(spec, params64, jnp.asarray(X)), 1):
                        arrays[f"stats{l}.mean"], arrays[f"stats{l}.var"] = np.asarray(mean), np.asarray(var)
                np.savez(npz, **arrays)
            jobs.append({"key": f"{name}/{bn}/{dt}", "npz": npz, "sizes": list(spec.sizes), "norm": spec.norm,
                         "eps": spec.eps, "bn": bn, "dtype": dt, "seed": args.seed, "repeats": args.repeats,
                         "eig_iters": args.pyh_max_iter, "eig_tol": args.pyh_tol, "trace_probes": args.trace_probes,
                         "tight_iters": args.tight_iters, "tight_tol": 1e-6})
        print(f"running PyHessian with {python} ...", file=sys.stderr, flush=True)
        peer = run_peer(python, jobs, tmp, args.threads)

    rows = []
    refs: dict[tuple[str, str], float] = {}
    for name, spec, weights, bn, dt in cases:
        p = peer[f"{name}/{bn}/{dt}"]
        fixed = bn == "eval"
        tol = args.eig_tol if args.eig_tol > 0 else None
        kw = {"dtype": np.dtype(dt), "seed": args.seed, "num_steps": args.lanczos_steps, "tol": tol}
        trace_kw = {"trace_probes": args.trace_probes, "op": fixed_stats_operator if fixed else None}
        if args.trace_se == "pyhessian":
            trace_kw.update(deflate=True, trace_rtol=p["trace_se"] / abs(p["trace"]))
        cold, warm, res = _time_normlab(lambda spec=spec, weights=weights, kw=kw, trace_kw=trace_kw:
                                        bc.normlab_top_eig_and_trace(spec, weights, X, y, **kw, **trace_kw),
                                        args.repeats)
        _, warm_eig, _ = _time_normlab(lambda spec=spec, weights=weights, kw=kw, fixed=fixed:
                                       normlab_top_eig(spec, weights, X, y, fixed_stats=fixed, **kw), args.repeats)
        if (name, bn) not in refs:
            refs[(name, bn)] = normlab_top_eig(spec, weights, X, y, dtype=np.float64, seed=args.seed + 1,
                                               num_steps=args.ref_steps, fixed_stats=fixed)["top_eigenvalue"]
        ref = refs[(name, bn)]
        lam_nl, lam_pyh = res["top_eigenvalue"], p["eigenvalue"]
        rows.append({
            "model": name, "bn": bn, "dtype": dt, "n_params": sum(int(np.size(v)) for v in weights.values()),
            "loss_nl": _loss_value(spec, weights, X, y, np.dtype(dt), fixed), "loss_torch": p["loss"],
            "nl_threads": nl_threads, "torch_threads": p["torch_threads"],
            "nl_s": warm, "nl_cold_s": cold, "nl_eig_s": warm_eig, "pyh_s": p["total_s"], "pyh_init_s": p["init_s"],
            "pyh_eig_s": p["eig_s"], "pyh_trace_s": p["trace_s"], "speedup": p["total_s"] / warm,
            "speedup_cold": p["total_s"] / cold, "speedup_eig": (p["init_s"] + p["eig_s"]) / warm_eig,
            "lambda_nl": lam_nl, "lambda_nl_resid": res["top_residual"] / abs(lam_nl), "lambda_pyh": lam_pyh,
            "rel_diff": _rel(lam_nl, lam_pyh), "pyh_eig_iters": p["eig_iters"],
            "pyh_iters_to_1e-3": iters_to_tol(p["rayleigh"], ref, 1e-3),
            "nl_steps_to_1e-3": lanczos_steps_to_tol(spec, weights, X, y, dtype=np.dtype(dt), seed=args.seed,
                                                     num_steps=args.lanczos_steps, ref=ref, fixed_stats=fixed),
            "lambda_pyh_tight": p["eigenvalue_tight"], "rel_diff_tight": _rel(lam_nl, p["eigenvalue_tight"]),
            "pyh_tight_iters": p["tight_iters"], "pyh_tight_s": p["tight_s"], "lambda_ref": ref,
            "rel_err_nl": _rel(ref, lam_nl), "rel_err_pyh": _rel(ref, lam_pyh), "trace_nl": res["trace"],
            "trace_nl_se": res["trace_stderr"], "trace_pyh": p["trace"], "trace_pyh_se": p["trace_se"],
            "trace_z": abs(res["trace"] - p["trace"]) / float(np.hypot(res["trace_stderr"], p["trace_se"])),
            "trace_probes": args.trace_probes, "lanczos_steps": args.lanczos_steps, "nl_eig_steps": res["eig_steps"],
            "nl_trace_probes": res["trace_probes"],
            "torch_version": p["torch_version"], "platform": jax.devices()[0].platform})
        print(f"done {name} bn={bn} {dt}", file=sys.stderr, flush=True)

    print(f"Times (s; threads: normlab {nl_threads}, torch {rows[0]['torch_threads']}). nl_s: warm, nl_cold_s: "
          "first call incl. compilation; pyh_s: hessian() + eigenvalues + trace; *_eig_s: eigenvalue part only")
    print(format_table(rows, TIME_TABLE))
    print("\nEigenvalues and traces (rel_diff = |lambda_nl - lambda_pyh| / lambda_nl; pyh_it_1e-3 / nl_it_1e-3: "
          "products PyHessian's power iteration / normlab's Lanczos needs to stay within 1e-3 of the reference; "
          "z = |trace difference| / combined stderr)")
    print(format_table(rows, ACC_TABLE))
    nl_eig = (f"Lanczos until its estimated error <= {args.eig_tol:g} (at most {args.lanczos_steps} products)"
              if args.eig_tol > 0 else f"Lanczos {args.lanczos_steps} products")
    nl_trace = ("Hutchinson deflated by the Lanczos basis, probes (8 per batched product) until its relative stderr is "
                f"PyHessian's (at most {args.trace_probes})" if args.trace_se == "pyhessian" else
                f"Hutchinson {args.trace_probes} probes (8 per batched product)")
    print(f"\nnormlab: {nl_eig} + {nl_trace}; PyHessian: power iteration maxIter={args.pyh_max_iter} "
          f"tol={args.pyh_tol:g} + trace "
          f"{args.trace_probes} probes (tol=0); lambda_pyh_tight: maxIter={args.tight_iters} tol=1e-6; reference: "
          f"float64 Lanczos, {args.ref_steps} products.")
    print(f"min speedup (warm) {min(r['speedup'] for r in rows):.3g}, max {max(r['speedup'] for r in rows):.3g} "
          f"(goal >= 10); incl. compilation {min(r['speedup_cold'] for r in rows):.3g} to "
          f"{max(r['speedup_cold'] for r in rows):.3g}")
    print(f"max rel_diff {max(r['rel_diff'] for r in rows):.2g} at PyHessian's defaults, "
          f"{max(r['rel_diff_tight'] for r in rows):.2g} with the tight run (goal <= 1e-3); normlab vs reference "
          f"{max(r['rel_err_nl'] for r in rows):.2g}; max |loss_nl - loss_torch| "
          f"{max(abs(r['loss_nl'] - r['loss_torch']) for r in rows):.2g}")
    print("products to reach 1e-3 of the reference: normlab Lanczos "
          f"{min(r['nl_steps_to_1e-3'] for r in rows)}-{max(r['nl_steps_to_1e-3'] for r in rows)}, PyHessian power "
          f"iteration {min(r['pyh_iters_to_1e-3'] for r in rows)}-{max(r['pyh_iters_to_1e-3'] for r in rows)} "
          "(-1: not reached)")
    write_csv(rows, args.out)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()

"""Mini-batch training of every (learning rate, seed) run of one variant in one compiled, vmapped call.

A *run* is one (lr, seed) pair; runs are ordered lr-major, seed-minor (run r has lr index r // n_seeds
and seed index r % n_seeds). The seed fixes both the initial weights and the mini-batch order, so runs
with the same seed and different learning rates are paired.

A run *diverges* at step t when its mini-batch loss at step t is non-finite, or exceeds
``divergence_factor`` x its initial training loss, or its gradient is non-finite. From then on it is
frozen: its parameters keep their last finite values and are never updated again. Nothing crashes and
no run is dropped.

Units: steps count parameter updates; ``train_loss`` is the loss on the *evaluation set* (the first
``eval_examples`` rows of the training split, BN in training mode on that whole set), logged every
``log_every`` steps including step 0.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normlab import model, tables, variants

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters shared by all runs of a sweep.

    steps: total parameter updates (a multiple of log_every). batch_size: rows per mini-batch (the
    last incomplete batch of each epoch is dropped). log_every: steps between logged evaluations.
    early_fraction: the ``early`` checkpoint is taken at the logged step nearest to this fraction of
    ``steps`` (at least one interval in). divergence_factor: see the module docstring.
    optimizer: sgd | momentum (heavy ball, ``momentum``) | adam.
    """

    steps: int = 1000
    batch_size: int = 64
    log_every: int = 50
    early_fraction: float = 0.1
    divergence_factor: float = 1e3
    optimizer: str = "sgd"
    momentum: float = 0.9
    dtype: str = "float32"

    def __post_init__(self):
        if self.steps <= 0 or self.log_every <= 0 or self.steps % self.log_every:
            raise ValueError(f"steps ({self.steps}) must be a positive multiple of log_every ({self.log_every})")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

    @property
    def n_intervals(self) -> int:
        return self.steps // self.log_every

    @property
    def early_interval(self) -> int:
        """Index (1..n_intervals) of the logged step that is the ``early`` checkpoint."""
        return int(min(self.n_intervals, max(1, round(self.early_fraction * self.n_intervals))))


def make_optimizer(cfg: TrainConfig, lr) -> optax.GradientTransformation:
    if cfg.optimizer == "sgd":
        return optax.sgd(lr)
    if cfg.optimizer == "momentum":
        return optax.sgd(lr, momentum=cfg.momentum)
    return optax.adam(lr)


def _tree_all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def per_layer_grad_norms(params: model.Params, grads: model.Params) -> tuple[jax.Array, jax.Array]:
    """(||dJ/dW[l]||_F, ||dJ/dW[l]||_F / ||W[l]||_F), each shape (L,), over the weight matrices only."""
    names = sorted(params, key=lambda k: int(k[5:]))
    g = jnp.stack([jnp.linalg.norm(grads[k]["W"]) for k in names])
    w = jnp.stack([jnp.linalg.norm(params[k]["W"]) for k in names])
    return g, g / w


def batch_schedule(data_key: jax.Array, steps: int, n_rows: int, batch_size: int) -> np.ndarray:
    """Row indices (steps, batch_size) of every mini-batch of a run: epoch e walks a permutation of
    the rows drawn from fold_in(data_key, e); the incomplete last batch of an epoch is dropped.
    Computed once per seed, before training, so the compiled step only gathers rows."""
    per_epoch = n_rows // batch_size
    n_epochs = -(-steps // per_epoch)
    perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(data_key, e), n_rows))(
        jnp.arange(n_epochs)
    )
    batches = np.asarray(perms)[:, : per_epoch * batch_size].reshape(n_epochs * per_epoch, batch_size)
    return batches[:steps].astype(np.int32)


def run_keys(seed) -> tuple[jax.Array, jax.Array]:
    """(init_key, data_key) of a seed."""
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, data_key


class Sweep:
    """Compiled pieces of a sweep for one model and one training set; see ``train_sweep``."""

    def __init__(self, spec: model.ModelSpec, cfg: TrainConfig, X, y, X_eval, y_eval):
        self.spec, self.cfg = spec, cfg
        dtype = jnp.dtype(cfg.dtype)
        self.X, self.y = jnp.asarray(X, dtype), jnp.asarray(y)
        self.X_eval, self.y_eval = jnp.asarray(X_eval, dtype), jnp.asarray(y_eval)
        n = self.X.shape[0]
        if n < cfg.batch_size:
            raise ValueError(
                f"the training split has {n} rows, fewer than batch_size {cfg.batch_size}; "
                "lower sweep.batch_size or use more data"
            )
        loss = lambda p, X_, y_: model.loss(spec, p, X_, y_)  # noqa: E731
        grad_fn = jax.value_and_grad(loss)

        # The data are arguments of the compiled functions, not constants baked into them: XLA compiles
        # much faster, and variants of the same shapes share the compiled program (and the disk cache).
        def evaluate_one(params, X_eval, y_eval):
            eval_loss, grads = grad_fn(params, X_eval, y_eval)
            g, rel = per_layer_grad_norms(params, grads)
            return dict(train_loss=eval_loss, grad_norm=g, relative_grad_norm=rel)

        def init_one(lr, params, X_eval, y_eval):
            """The initial state and the step-0 evaluation, in one program: a separate evaluation program
            would cost every model shape another compilation."""
            log = evaluate_one(params, X_eval, y_eval)
            state = dict(params=params, opt=make_optimizer(cfg, lr).init(params), lr=jnp.asarray(lr, dtype),
                         init_loss=log["train_loss"], diverged=jnp.zeros((), bool),
                         diverged_step=jnp.full((), -1, jnp.int32))
            return state, log

        def step_one(X, y, state, step_and_idx):
            t, idx = step_and_idx
            batch_loss, grads = grad_fn(state["params"], X[idx], y[idx])
            bad = (~jnp.isfinite(batch_loss)) | (batch_loss > cfg.divergence_factor * state["init_loss"])
            bad = bad | ~_tree_all_finite(grads)
            frozen = state["diverged"] | bad
            updates, new_opt = make_optimizer(cfg, state["lr"]).update(grads, state["opt"], state["params"])
            new_params = optax.apply_updates(state["params"], updates)
            keep = lambda old, new: jnp.where(frozen, old, new)  # noqa: E731
            return dict(
                state,
                params=jax.tree.map(keep, state["params"], new_params),
                opt=jax.tree.map(keep, state["opt"], new_opt),
                diverged=frozen,
                diverged_step=jnp.where(bad & ~state["diverged"], t.astype(jnp.int32), state["diverged_step"]),
            ), None

        def interval_one(state, t0, idx_block, X, y, X_eval, y_eval):
            """log_every steps from step t0; idx_block (log_every, batch_size) holds the batches' rows."""
            steps = t0 + jnp.arange(cfg.log_every, dtype=jnp.int32)
            state, _ = jax.lax.scan(functools.partial(step_one, X, y), state, (steps, idx_block))
            return state, evaluate_one(state["params"], X_eval, y_eval)

        data = (None, None)
        init = jax.jit(jax.vmap(init_one, in_axes=(0, 0, *data)))
        init_params = jax.jit(lambda key: model.init_params(spec, key, dtype))
        interval = jax.jit(jax.vmap(interval_one, in_axes=(0, None, 0, *data, *data)))
        def init_runs(lr, seeds):
            """(initial state, step-0 log) of every run; the weights depend on the seed only, so they are
            drawn once per distinct seed (one small compiled program) and shared by that seed's runs."""
            seeds = np.asarray(seeds)
            distinct, which = np.unique(seeds, return_inverse=True)
            # stacked and indexed on the host: as device operations, one small program per leaf shape
            per_seed = jax.device_get([init_params(run_keys(int(s))[0]) for s in distinct])
            params = jax.tree.map(lambda *a: np.stack(a)[which], *per_seed)
            return init(lr, params, self.X_eval, self.y_eval)

        self.init = init_runs
        self.interval = lambda state, t0, block: interval(state, t0, block, self.X, self.y, self.X_eval, self.y_eval)


def _test_metrics(spec: model.ModelSpec, params, X_eval, X_test, y_test):
    """(test_accuracy, test_loss) of one run; BN uses fixed statistics from the evaluation set."""
    stats = model.population_stats(spec, params, X_eval) if spec.norm == "batchnorm" else None
    out = model.forward(spec, params, X_test, stats)
    test_loss = model.loss_from_outputs(spec, out, y_test)
    if spec.loss == "softmax_cross_entropy":
        acc = jnp.mean(jnp.argmax(out, axis=-1) == y_test)
    else:
        acc = jnp.nan
    return acc, test_loss


def train_sweep(spec: model.ModelSpec, cfg: TrainConfig, data: dict, lrs, seeds, eval_examples: int,
                target_loss: float = np.nan, progress: Callable[[str], None] | None = None) -> dict:
    """Train every (lr, seed) run of one variant together.

    data: X_train (m, n_features), y_train (m,), X_test, y_test. lrs (n_lr,), seeds (n_seeds,).
    Returns numpy arrays, R = n_lr * n_seeds runs, T = n_intervals + 1 logged steps:
      lr (R,), seed (R,), step (T,), train_loss (R, T), grad_norm (R, T, L), relative_grad_norm (R, T, L),
      diverged (R,) bool, diverged_step (R,) (-1 if never), final_train_loss (R,), test_accuracy (R,),
      test_loss (R,), steps_to_target (R,) (first logged step with train_loss <= target_loss and the run
      not diverged by then, NaN if never), checkpoints: {tag: params pytree with a leading (R,) axis}
      for tag in init, early, end.
    """
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    lrs, seeds = np.asarray(lrs, np.float64), np.asarray(seeds, np.int64)
    lr_runs = np.repeat(lrs, len(seeds))
    seed_runs = np.tile(seeds, len(lrs))
    X_eval, y_eval = data["X_train"][:eval_examples], data["y_train"][:eval_examples]
    sweep = Sweep(spec, cfg, data["X_train"], data["y_train"], X_eval, y_eval)

    n_rows = np.asarray(data["X_train"]).shape[0]
    schedules = np.stack([batch_schedule(run_keys(int(s))[1], cfg.steps, n_rows, cfg.batch_size) for s in seeds])
    seed_index = np.tile(np.arange(len(seeds)), len(lrs))

    start = time.perf_counter()
    state, log0 = sweep.init(jnp.asarray(lr_runs), jnp.asarray(seed_runs))
    logs = [log0]
    checkpoints = {"init": state["params"]}
    for i in range(1, cfg.n_intervals + 1):
        t0 = (i - 1) * cfg.log_every
        block = schedules[seed_index, t0 : t0 + cfg.log_every]
        state, log = sweep.interval(state, jnp.asarray(t0, jnp.int32), jnp.asarray(block))
        logs.append(log)
        if i == cfg.early_interval:
            checkpoints["early"] = state["params"]
        if i == 1 or i == cfg.n_intervals or i % max(1, cfg.n_intervals // 10) == 0:
            loss_now = np.asarray(log["train_loss"])
            n_div = int(np.asarray(state["diverged"]).sum())
            progress(f"  step {i * cfg.log_every:>6}/{cfg.steps}  median train loss "
                     f"{np.nanmedian(loss_now):.4g}  diverged {n_div}/{len(lr_runs)}  "
                     f"({time.perf_counter() - start:.1f} s)")
    checkpoints["end"] = state["params"]

    stacked = {k: np.stack([np.asarray(log[k]) for log in logs], axis=1) for k in logs[0]}
    diverged = np.asarray(state["diverged"])
    diverged_step = np.asarray(state["diverged_step"])
    steps = np.arange(cfg.n_intervals + 1) * cfg.log_every
    train_loss = stacked["train_loss"]

    test = jax.jit(jax.vmap(lambda p: _test_metrics(spec, p, sweep.X_eval, jnp.asarray(data["X_test"], sweep.X.dtype),
                                                    jnp.asarray(data["y_test"]))))
    test_acc, test_loss = (np.asarray(a) for a in test(state["params"]))
    reached = (train_loss <= target_loss) & ~(diverged[:, None] & (steps[None, :] > diverged_step[:, None]))
    steps_to_target = np.where(reached.any(axis=1), steps[np.argmax(reached, axis=1)], np.nan)
    return dict(
        lr=lr_runs, seed=seed_runs, step=steps, train_loss=train_loss,
        grad_norm=stacked["grad_norm"], relative_grad_norm=stacked["relative_grad_norm"],
        diverged=diverged, diverged_step=diverged_step, final_train_loss=train_loss[:, -1],
        test_accuracy=np.where(diverged, np.nan, test_acc), test_loss=np.where(diverged, np.nan, test_loss),
        steps_to_target=steps_to_target,
        checkpoints={k: jax.tree.map(np.asarray, v) for k, v in checkpoints.items()},
    )


LOG_ARRAYS = ("lr", "seed", "step", "train_loss", "grad_norm", "relative_grad_norm", "diverged", "diverged_step",
              "final_train_loss", "test_accuracy", "test_loss", "steps_to_target")


def sweep_arrays(result: dict) -> dict[str, np.ndarray]:
    """The logged arrays of a sweep (everything but the checkpoints), for sweep.npz."""
    return {k: np.asarray(result[k]) for k in LOG_ARRAYS}


def seed_checkpoint_arrays(result: dict, seed: int) -> dict[str, np.ndarray]:
    """Checkpoints of the runs of one seed, every LR: ``<tag>/layer<l>.<name>`` -> (n_lr, ...) arrays,
    row i being the run at the i-th LR of the grid (for sweep_checkpoints.npz)."""
    rows = np.flatnonzero(np.asarray(result["seed"]) == seed)
    out = {}
    for tag, params in result["checkpoints"].items():
        for name, arr in model.flatten_params(params).items():
            out[f"{tag}/{name}"] = arr[rows]
    return out


def checkpoint_from_arrays(arrays, tag: str, lr_index: int) -> model.Params:
    """Rebuild the params of the run at LR index ``lr_index`` at checkpoint ``tag`` from the arrays
    of ``seed_checkpoint_arrays`` (a dict or an opened .npz)."""
    prefix = f"{tag}/"
    return model.unflatten_params({k[len(prefix):]: arrays[k][lr_index] for k in arrays.keys() if k.startswith(prefix)})


def train_variant(dataset: str, variant: str, data: dict, variants_config: dict, sweep_config: dict,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Everything the train rule writes for one variant of one dataset, from its processed data (the
    arrays of ``data/processed/<dataset>/<input>.npz``) and the config's ``variants`` and ``sweep``
    sections: the network is ``variants_config``'s width, activation and eps at the variant's norm and
    depth; its output is one unit with the ``mse`` loss for a regression dataset, else one per class with
    ``softmax_cross_entropy``; every (lr, seed) of the sweep's grid is trained (``train_sweep``) and logged
    on the evaluation set, the first ``sweep_config["eval_examples"]`` training rows.

    Returns, in the order the job writes them: ``model`` (model.json text), ``sweep`` (``sweep_arrays``),
    ``checkpoints`` (``seed_checkpoint_arrays`` of the first seed), ``runs`` and ``training`` (tables)."""
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    v = variants.Variant.parse(variant)
    vc, sc = variants_config, sweep_config
    regression = str(data["task"]) == "regression" if "task" in data else len(data["classes"]) == 0
    spec = variants.model_spec(v, data["X_train"].shape[1], 1 if regression else len(data["classes"]), vc["width"],
                               vc["activation"], vc["eps"], loss="mse" if regression else "softmax_cross_entropy")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: sc[k] for k in fields if k in sc})
    lrs = variants.lr_grid(sc["lr_min"], sc["lr_max"], sc["n_lr"])
    progress(f"training {dataset}/{v.name}: {len(lrs)} LRs x {len(sc['seeds'])} seeds, {cfg.steps} steps, "
             f"sizes {list(spec.sizes)}")
    result = train_sweep(spec, cfg, data, lrs, sc["seeds"], sc["eval_examples"], sc["target_loss"], progress=progress)
    ids = {"dataset": dataset, "variant": v.name, "input": v.input, "norm": v.norm, "depth": v.depth}
    return {
        "model": spec.to_json(),
        "sweep": sweep_arrays(result),
        "checkpoints": seed_checkpoint_arrays(result, sc["seeds"][0]),
        "runs": tables.runs_table(ids, result),
        "training": tables.training_table(ids, result),
    }

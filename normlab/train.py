"""Mini-batch training of every (learning rate, seed) run of one variant in one compiled, vmapped call.

A *run* is one (lr, seed) pair. In a grid sweep (``train_sweep``) runs are ordered lr-major, seed-minor
(run r has lr index r // n_seeds and seed index r % n_seeds, seeds in the order given, i.e. the config's
``sweep.seeds`` order). The seed fixes both the initial weights and the mini-batch order, so runs with the
same seed and different learning rates are paired.

A run *diverges* at step t when its mini-batch loss at step t is non-finite, or exceeds
``divergence_factor`` x its initial evaluation loss, or its gradient is non-finite. From then on it is
frozen: its parameters keep their last finite values and are never updated again. Nothing crashes and
no run is dropped.

What is logged (units: steps count parameter updates):
* ``batch_loss`` (R, steps): column t is the loss of mini-batch t at the parameters after t updates, the
  loss whose gradient makes update t + 1 (t = 0 .. steps - 1). Recorded for every step, also after a
  run diverged (then at its frozen parameters).
* ``train_loss`` (R, T): the loss on the *evaluation set* (the first ``eval_examples`` rows of the training
  split, BN in training mode on that whole set, on the inputs too under input BN) after ``step[k]`` updates,
  k = 0 .. T - 1; ``weight_norm`` and ``effective_lr`` (R, T, L) at the same steps (``weight_log``).
  ``step`` (alias ``eval_step``) is the evaluation schedule (``eval_schedule``): about ``eval_points``
  log-spaced steps, 0 and ``steps`` included. ``train_loss`` keeps its historical name: it is the
  evaluation-set loss of the training split, not the mini-batch loss.
* ``grad_norm`` and ``relative_grad_norm`` (R, T, L): the per-layer norms of the evaluation-set loss's
  gradient, at the evaluation steps flagged by ``grad_step`` (T,) (``TrainConfig.grad_steps``: about
  ``grad_points`` of them, log-spaced among the evaluation steps, with the first, the last and the ``early``
  checkpoint's), NaN at the others: a gradient over the evaluation set costs about twice its loss.

Batch statistics: in training every mini-batch is normalized with its own statistics (hidden BN, and
the inputs under ``spec.input_norm == "batchnorm"``). A model with input BN also has *running* input
statistics (``running_input_stats``: an exponential moving average over its seed's mini-batches, which
do not depend on the parameters); its test metrics use them (test mode). ``train_mode_loss`` and
``test_mode_loss`` (``mode_losses``) compare the two modes on the evaluation set at the end of training.

Training runs in compiled chunks of ``log_every`` steps (a ``lax.scan``); the ``early`` checkpoint and
the progress lines are taken at chunk boundaries. Inside a chunk the evaluation runs only at schedule
steps: the step index is the same for every run (not batched under vmap), so its ``lax.switch`` (nothing, the
loss, or the loss and its gradient) stays a real branch and the other steps skip the evaluation.
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

from normlab import invariance, model, selection, tables, variants

OPTIMIZERS = ("sgd", "momentum", "adam")
# What a step's evaluation measures (``Sweep.interval``'s ``evaluate``): nothing; the evaluation-set loss (and
# the weight norms); also the per-layer norms of its gradient.
NO_EVAL, EVAL_LOSS, EVAL_GRADIENT = 0, 1, 2


def eval_schedule(steps: int, n_points: int = 40) -> np.ndarray:
    """The evaluation steps (int64, strictly increasing) of a run of ``steps`` updates: 0, then rounded
    log-spaced steps from 1 to ``steps`` (both included), as many distinct ones as needed to have at
    least ``min(n_points, steps + 1)`` in all (``n_points`` or one more: rounding merges the early ones,
    and the log-spaced count grows until the distinct steps reach the target)."""
    steps, target = int(steps), min(int(n_points), int(steps) + 1)
    if target >= steps + 1:
        return np.arange(steps + 1, dtype=np.int64)
    k = max(2, target - 1)
    while True:
        s = np.unique(np.concatenate([[0], np.round(np.geomspace(1, steps, k)).astype(np.int64)]))
        if len(s) >= target:
            return s
        k += 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters shared by all runs of a sweep.

    steps: total parameter updates (a multiple of log_every). batch_size: rows per mini-batch (the
    last incomplete batch of each epoch is dropped). log_every: steps per compiled chunk (the early
    checkpoint and the progress lines fall on chunk boundaries). eval_points: about how many steps of the
    evaluation schedule (``eval_schedule``). grad_points: about how many of them also measure the gradient's
    per-layer norms (``grad_steps``). early_fraction: the ``early`` checkpoint is taken at the chunk
    boundary nearest to this fraction of ``steps`` (at least one chunk in). divergence_factor: see the
    module docstring. optimizer: sgd | momentum (heavy ball, ``momentum``) | adam. running_stats_momentum:
    m of the running input statistics of an input-BN model (``running_input_stats``).
    """

    steps: int = 1000
    batch_size: int = 64
    log_every: int = 50
    eval_points: int = 40
    grad_points: int = 12
    early_fraction: float = 0.1
    divergence_factor: float = 1e3
    optimizer: str = "sgd"
    momentum: float = 0.9
    dtype: str = "float32"
    running_stats_momentum: float = 0.1

    def __post_init__(self):
        if self.steps <= 0 or self.log_every <= 0 or self.steps % self.log_every:
            raise ValueError(f"steps ({self.steps}) must be a positive multiple of log_every ({self.log_every})")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.eval_points < 2:
            raise ValueError(f"eval_points must be at least 2 (step 0 and the last), got {self.eval_points}")
        if self.grad_points < 2:
            raise ValueError(f"grad_points must be at least 2 (step 0 and the last), got {self.grad_points}")
        if not 0.0 < self.running_stats_momentum <= 1.0:
            raise ValueError(f"running_stats_momentum must be in (0, 1], got {self.running_stats_momentum}")

    @classmethod
    def from_sweep_config(cls, sweep_config: dict) -> TrainConfig:
        """The training settings of the config's ``sweep`` section (its keys that are fields here, each
        absent one at its default, e.g. running_stats_momentum 0.1; the others, e.g. lr_min or seeds, are
        not training settings of a run)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: sweep_config[k] for k in fields if k in sweep_config})

    @property
    def n_intervals(self) -> int:
        return self.steps // self.log_every

    @property
    def early_interval(self) -> int:
        """Index (1..n_intervals) of the chunk boundary that is the ``early`` checkpoint."""
        return int(min(self.n_intervals, max(1, round(self.early_fraction * self.n_intervals))))

    @property
    def early_step(self) -> int:
        """The step (updates done) of the ``early`` checkpoint."""
        return self.early_interval * self.log_every

    @property
    def eval_steps(self) -> np.ndarray:
        """The evaluation schedule (T,): ``eval_schedule(steps, eval_points)`` and the ``early`` checkpoint's step,
        so that every checkpoint's loss is in the log."""
        return np.union1d(eval_schedule(self.steps, self.eval_points), [self.early_step]).astype(np.int64)

    @property
    def grad_steps(self) -> np.ndarray:
        """The evaluation steps that also measure the gradient (int64, increasing): ``grad_points`` of
        ``eval_steps`` evenly spaced in their order (so log-spaced in steps, as they are; 0 and the last
        included), and the ``early`` checkpoint's step."""
        ev = self.eval_steps
        picked = np.round(np.linspace(0, len(ev) - 1, min(self.grad_points, len(ev)))).astype(np.int64)
        return np.union1d(ev[picked], [self.early_step]).astype(np.int64)


def make_optimizer(cfg: TrainConfig, lr) -> optax.GradientTransformation:
    if cfg.optimizer == "sgd":
        return optax.sgd(lr)
    if cfg.optimizer == "momentum":
        return optax.sgd(lr, momentum=cfg.momentum)
    return optax.adam(lr)


def _tree_all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def per_layer_grad_norms(params: model.Params, grads: model.Params) -> tuple[jax.Array, jax.Array]:
    """(||dJ/dW[l]||_F, ||dJ/dW[l]||_F / ||W[l]||_F), each shape (L,), over the weight matrices only. The
    relative norm of a zero W[l] (a depth-0 model at its zero init) is undefined: NaN."""
    names = sorted(params, key=lambda k: int(k[5:]))
    g = jnp.stack([jnp.linalg.norm(grads[k]["W"]) for k in names])
    w = jnp.stack([jnp.linalg.norm(params[k]["W"]) for k in names])
    return g, jnp.where(w > 0, g / jnp.where(w > 0, w, 1), jnp.nan)


def weight_log(spec: model.ModelSpec, params: model.Params, lr) -> tuple[jax.Array, jax.Array]:
    """(weight_norm, effective_lr), each (L,), of one run: weight_norm[l-1] = ``invariance.layer_weight_norm``
    (layer l's root-mean-square group norm over its scale-invariant groups; ||W[l]||_F for a layer without
    such groups); effective_lr[l-1] = lr / weight_norm[l-1]^2 (lr per squared weight norm) for a layer with
    invariant groups, NaN for the others. lr: a scalar (traced under vmap)."""
    norm = invariance.layer_weight_norm(spec, params)
    grouped = np.isin(np.arange(1, spec.n_layers + 1), invariance.invariant_layers(spec))
    return norm, jnp.where(grouped, lr / jnp.square(norm), jnp.nan).astype(norm.dtype)


def batch_input_stats(X_train, schedule) -> tuple[np.ndarray, np.ndarray]:
    """Per mini-batch feature (mean, biased variance), each (steps, n_features) float64: the batches are the rows
    ``schedule`` (steps, batch_size) of X_train (m, n_features)."""
    batches = np.asarray(X_train, np.float64)[np.asarray(schedule)]
    mean = batches.mean(axis=1)
    return mean, np.square(batches - mean[:, None, :]).mean(axis=1)


def running_input_stats(X_train, schedule, momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """The running input statistics (mean, biased variance) of a seed after its mini-batches, each (...,
    n_features) float64: starting from r = (0, 1), r <- (1 - m) r + m s_t for the batches t = 0 .. steps - 1
    in order, s_t the batch's per-feature (mean, biased variance) and m = ``momentum``. They do not depend
    on the parameters, so they come from the batch schedule alone, in closed form: r = (1 - m)^steps r0 +
    sum_t m (1 - m)^(steps - 1 - t) s_t.

    X_train (m_rows, n_features); schedule (..., steps, batch_size) row indices, e.g.
    ``seed_batch_schedules``' (n_seeds, steps, batch_size), or schedule[..., :t, :] for the statistics
    after t updates. The batches are gathered one seed at a time (one seed's (steps, batch_size,
    n_features) in memory)."""
    idx = np.asarray(schedule)
    lead, (steps, batch) = idx.shape[:-2], idx.shape[-2:]
    m = float(momentum)
    weights = m * (1.0 - m) ** np.arange(steps - 1, -1, -1, dtype=np.float64)  # (steps,)
    start = (1.0 - m) ** steps
    n_features = np.asarray(X_train).shape[1]
    mean, var = np.zeros((int(np.prod(lead)), n_features)), np.zeros((int(np.prod(lead)), n_features))
    for i, seed_schedule in enumerate(idx.reshape(len(mean), steps, batch)):
        batch_mean, batch_var = batch_input_stats(X_train, seed_schedule)
        mean[i], var[i] = weights @ batch_mean, weights @ batch_var
    return mean.reshape(*lead, n_features), (start + var).reshape(*lead, n_features)


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


def seed_batch_schedules(seeds, cfg: TrainConfig, n_rows: int) -> np.ndarray:
    """``batch_schedule`` of each seed's data key, stacked: (n_seeds, steps, batch_size) row indices, so that a
    run of seed seeds[i] (trained or replayed) sees the batches of row i."""
    return np.stack([batch_schedule(run_keys(int(s))[1], cfg.steps, n_rows, cfg.batch_size) for s in seeds])


def frozen_before(diverged, diverged_step, step) -> np.ndarray:
    """Whether a run's parameters after ``step`` updates are the ones it was frozen with: it diverged at an
    update before ``step`` (numpy broadcasting over runs and steps)."""
    return np.asarray(diverged, bool) & (np.asarray(diverged_step) < np.asarray(step))


class Sweep:
    """Compiled pieces of a sweep for one model and one training set; see ``train_runs``.

    ``init(lr_runs, seed_runs)`` -> (state, step-0 log); ``interval(state, t0, block, evaluate=None)`` ->
    (state, chunk log): ``log_every`` steps from step t0, block (R, log_every, batch_size) holding the
    batches' rows, evaluate (log_every,): what to evaluate after step t0 + i's update, ``NO_EVAL``,
    ``EVAL_LOSS`` (the loss and the weight norms) or ``EVAL_GRADIENT`` (also the gradient's norms); a bool
    array reads True as the most this sweep measures (default: ``evaluate_after``, from ``eval_steps`` (by
    default ``cfg.eval_steps``) and ``grad_steps``, the ones of them in ``cfg.grad_steps``; it is data, not
    part of the program). The chunk log holds ``batch_loss`` (R, log_every) and, after each step's update,
    ``train_loss`` (R, log_every), ``grad_norm``, ``relative_grad_norm``, ``weight_norm`` and ``effective_lr``
    (R, log_every, L; ``weight_log``), NaN where not evaluated. ``eval_gradients`` False: no gradient of the
    evaluation set at all (an evaluation is the loss, a forward pass, about a third of the loss and gradient);
    the updates are the same. ``log_params``: the chunk log also holds ``params``, the parameters after each
    step's update (leaves (R, log_every, ...)), so that a step inside a chunk can be taken without replaying
    it."""

    def __init__(self, spec: model.ModelSpec, cfg: TrainConfig, X, y, X_eval, y_eval, eval_steps=None,
                 eval_gradients: bool = True, log_params: bool = False):
        self.spec, self.cfg = spec, cfg
        self.eval_steps = cfg.eval_steps if eval_steps is None else np.asarray(eval_steps, np.int64)
        # the evaluation steps that measure the gradient too (none without eval_gradients)
        self.grad_steps = (np.intersect1d(self.eval_steps, cfg.grad_steps) if eval_gradients
                           else np.zeros(0, np.int64))
        most = EVAL_GRADIENT if eval_gradients else EVAL_LOSS
        dtype = jnp.dtype(cfg.dtype)
        self.X, self.y = jnp.asarray(X, dtype), jnp.asarray(y)
        self.X_eval, self.y_eval = jnp.asarray(X_eval, dtype), jnp.asarray(y_eval)
        n = self.X.shape[0]
        if n < cfg.batch_size:
            raise ValueError(
                f"the training split has {n} rows, fewer than batch_size {cfg.batch_size}; "
                "lower sweep.batch_size or use more data"
            )
        # evaluate_after[t]: what to evaluate after update t + 1 (the parameters after t + 1 updates)
        after = np.arange(1, cfg.steps + 1)
        self.evaluate_after = np.where(np.isin(after, self.grad_steps), EVAL_GRADIENT,
                                       np.where(np.isin(after, self.eval_steps), EVAL_LOSS, NO_EVAL)).astype(np.int32)
        loss = lambda p, X_, y_: model.loss(spec, p, X_, y_)  # noqa: E731
        grad_fn = jax.value_and_grad(loss)
        n_layers = spec.n_layers

        # The data are arguments of the compiled functions, not constants baked into them: XLA compiles
        # much faster, and variants of the same shapes share the compiled program (and the disk cache).
        def evaluate_one(params, lr, X_eval, y_eval, gradient: bool = True):
            if gradient:
                eval_loss, grads = grad_fn(params, X_eval, y_eval)
                g, rel = per_layer_grad_norms(params, grads)
            else:
                eval_loss = loss(params, X_eval, y_eval)
                g = rel = jnp.full((n_layers,), jnp.nan, dtype)
            norm, eff = weight_log(spec, params, lr)
            return dict(train_loss=eval_loss, grad_norm=g, relative_grad_norm=rel, weight_norm=norm, effective_lr=eff)

        def skipped(params, lr):
            nan = lambda shape: jnp.full(shape, jnp.nan, dtype)  # noqa: E731
            per_layer = ("grad_norm", "relative_grad_norm", "weight_norm", "effective_lr")
            return dict(train_loss=nan(()), **{k: nan((n_layers,)) for k in per_layer})

        def init_one(lr, params, X_eval, y_eval):
            """The initial state and the step-0 evaluation, in one program: a separate evaluation program
            would cost every model shape another compilation."""
            lr = jnp.asarray(lr, dtype)
            log = evaluate_one(params, lr, X_eval, y_eval, gradient=0 in self.grad_steps)
            state = dict(params=params, opt=make_optimizer(cfg, lr).init(params), lr=lr,
                         init_loss=log["train_loss"], diverged=jnp.zeros((), bool),
                         diverged_step=jnp.full((), -1, jnp.int32))
            return state, log

        def step_one(X, y, X_eval, y_eval, state, xs):
            t, idx, what = xs
            batch_loss, grads = grad_fn(state["params"], X[idx], y[idx])
            bad = (~jnp.isfinite(batch_loss)) | (batch_loss > cfg.divergence_factor * state["init_loss"])
            bad = bad | ~_tree_all_finite(grads)
            frozen = state["diverged"] | bad
            updates, new_opt = make_optimizer(cfg, state["lr"]).update(grads, state["opt"], state["params"])
            new_params = optax.apply_updates(state["params"], updates)
            keep = lambda old, new: jnp.where(frozen, old, new)  # noqa: E731
            state = dict(
                state,
                params=jax.tree.map(keep, state["params"], new_params),
                opt=jax.tree.map(keep, state["opt"], new_opt),
                diverged=frozen,
                diverged_step=jnp.where(bad & ~state["diverged"], t.astype(jnp.int32), state["diverged_step"]),
            )
            # ``what`` is not batched (one schedule for every run): a real branch under vmap
            branches = [skipped, lambda p, lr: evaluate_one(p, lr, X_eval, y_eval, gradient=False)]
            if eval_gradients:
                branches.append(lambda p, lr: evaluate_one(p, lr, X_eval, y_eval, gradient=True))
            log = jax.lax.switch(what, branches, state["params"], state["lr"])
            if log_params:
                log = dict(log, params=state["params"])
            return state, dict(batch_loss=batch_loss.astype(dtype), **log)

        def interval_one(state, t0, idx_block, evaluate, X, y, X_eval, y_eval):
            """log_every steps from step t0; idx_block (log_every, batch_size) holds the batches' rows."""
            steps = t0 + jnp.arange(cfg.log_every, dtype=jnp.int32)
            return jax.lax.scan(functools.partial(step_one, X, y, X_eval, y_eval), state,
                                (steps, idx_block, evaluate))

        data = (None, None)
        init = jax.jit(jax.vmap(init_one, in_axes=(0, 0, *data)))
        init_params = jax.jit(lambda key: model.init_params(spec, key, dtype))
        interval = jax.jit(jax.vmap(interval_one, in_axes=(0, None, 0, None, *data, *data), out_axes=(0, 0)))

        def init_runs(lr, seeds):
            """(initial state, step-0 log) of every run; the weights depend on the seed only, so they are
            drawn once per distinct seed (one small compiled program) and shared by that seed's runs."""
            seeds = np.asarray(seeds)
            distinct, which = np.unique(seeds, return_inverse=True)
            # stacked and indexed on the host: as device operations, one small program per leaf shape
            per_seed = jax.device_get([init_params(run_keys(int(s))[0]) for s in distinct])
            params = jax.tree.map(lambda *a: np.stack(a)[which], *per_seed)
            return init(lr, params, self.X_eval, self.y_eval)

        def interval_runs(state, t0, block, evaluate=None):
            if evaluate is None:
                evaluate = self.evaluate_after[int(t0):int(t0) + cfg.log_every]
            evaluate = np.asarray(evaluate)
            codes = np.where(evaluate, most, NO_EVAL) if evaluate.dtype == bool else np.minimum(evaluate, most)
            return interval(state, t0, block, jnp.asarray(codes, jnp.int32), self.X, self.y, self.X_eval,
                            self.y_eval)

        self.init = init_runs
        self.interval = interval_runs
        self.interval_program = interval  # (state, t0, block, evaluate, X, y, X_eval, y_eval), for inspection


def has_batch_statistics(spec: model.ModelSpec) -> bool:
    """Whether the model's outputs depend on the statistics of the batch it sees (hidden BN or input BN), so
    that its training mode and test mode differ."""
    return spec.input_norm == "batchnorm" or spec.norm == "batchnorm"


def fixed_stats(spec: model.ModelSpec, params: model.Params, X_ref, input_stats=None):
    """The fixed statistics a model is evaluated with in test mode, as (norm_stats, input_stats):
    input_stats (the running input statistics of an input-BN model, (mean, var) each (n_features,); None
    otherwise) is passed through; norm_stats is, under hidden BN, the population statistics of X_ref
    (m, n_features) with the inputs normalized by input_stats (``model.population_stats``), else None."""
    norm_stats = model.population_stats(spec, params, X_ref, input_stats) if spec.norm == "batchnorm" else None
    return norm_stats, input_stats


def mode_losses(spec: model.ModelSpec, params: model.Params, X_eval, y_eval, batch_size: int, stats):
    """(train_mode_loss, test_mode_loss) of one run on the evaluation set X_eval (n, n_features), y_eval (n,
    ...), scalars in the loss's units. Train mode: the mean over the set's consecutive chunks of
    ``batch_size`` rows (a last partial chunk dropped; one chunk of all n rows when n < batch_size) of the
    chunk's loss with its own batch statistics. Test mode: the loss on the whole set with the fixed
    statistics ``stats`` = ``fixed_stats``' (norm_stats, input_stats)."""
    n = X_eval.shape[0]
    size = min(int(batch_size), n)
    k = n // size
    chunks_X = X_eval[:k * size].reshape(k, size, *X_eval.shape[1:])
    chunks_y = y_eval[:k * size].reshape(k, size, *y_eval.shape[1:])
    train_mode = jnp.mean(jax.vmap(lambda X_, y_: model.loss(spec, params, X_, y_))(chunks_X, chunks_y))
    return train_mode, model.loss(spec, params, X_eval, y_eval, *stats)


def _test_metrics(spec: model.ModelSpec, params, X_test, y_test, stats):
    """(test_accuracy, test_loss) of one run in test mode: the fixed statistics ``stats`` =
    ``fixed_stats``' (norm_stats, input_stats). test_accuracy is NaN for the mse loss."""
    out = model.forward(spec, params, X_test, *stats)
    test_loss = model.loss_from_outputs(spec, out, y_test)
    if spec.loss == "softmax_cross_entropy":
        acc = jnp.mean(jnp.argmax(out, axis=-1) == y_test)
    else:
        acc = jnp.nan
    return acc, test_loss


def final_metrics(spec: model.ModelSpec, params: model.Params, input_stats, X_eval, y_eval, X_test, y_test,
                  batch_size: int) -> dict[str, jax.Array]:
    """The end-of-training metrics of one run, scalars: test_accuracy and test_loss (``_test_metrics``) and
    train_mode_loss and test_mode_loss (``mode_losses``; NaN for a model without batch statistics,
    ``has_batch_statistics``). input_stats: the run's running input statistics (``running_input_stats``)
    under input BN, else None; hidden BN's fixed statistics come from the evaluation set (X_eval, y_eval)."""
    stats = fixed_stats(spec, params, X_eval, input_stats)
    acc, test_loss = _test_metrics(spec, params, X_test, y_test, stats)
    if has_batch_statistics(spec):
        train_mode, test_mode = mode_losses(spec, params, X_eval, y_eval, batch_size, stats)
    else:
        train_mode = test_mode = jnp.full((), jnp.nan, test_loss.dtype)
    return dict(test_accuracy=acc, test_loss=test_loss, train_mode_loss=train_mode, test_mode_loss=test_mode)


@functools.lru_cache(maxsize=16)
def _final_metrics_program(spec: model.ModelSpec, batch_size: int):
    """``final_metrics`` vmapped over runs (params and input_stats with a leading (R,) axis; the data shared)
    and jitted; one program per (spec, batch_size), shared by a variant's grid and refinement calls."""
    return jax.jit(jax.vmap(functools.partial(final_metrics, spec, batch_size=batch_size),
                            in_axes=(0, 0, None, None, None, None)))


def train_runs(spec: model.ModelSpec, cfg: TrainConfig, data: dict, lr_runs, seed_runs, eval_examples: int,
               target_loss: float = np.nan, progress: Callable[[str], None] | None = None,
               keep_checkpoints: bool = True, eval_steps=None, eval_gradients: bool = True) -> dict:
    """Train the runs (lr_runs[r], seed_runs[r]), r = 0 .. R-1, together (one vmapped program).

    data: X_train (m, n_features), y_train (m,), X_test, y_test. eval_steps: the evaluation schedule
    (ascending, 0 and cfg.steps included; default ``cfg.eval_steps``). eval_gradients False: the gradient's norms
    nowhere (``Sweep``). Returns numpy arrays,
    T = len(eval_steps), L = spec.n_layers:
      lr (R,), seed (R,), step and eval_step (T,) (the evaluation schedule), grad_step (T,) bool (the steps
      of it where the gradient's norms were measured, ``Sweep.grad_steps``), batch_loss (R, steps),
      train_loss (R, T) (evaluation-set loss), grad_norm (R, T, L), relative_grad_norm (R, T, L) (NaN where
      not grad_step),
      weight_norm (R, T, L), effective_lr (R, T, L) (``weight_log``),
      diverged (R,) bool, diverged_step (R,) (-1 if never), final_train_loss (R,) (evaluation-set loss after
      the last step), test_accuracy (R,), test_loss (R,), train_mode_loss (R,), test_mode_loss (R,)
      (``final_metrics``: test mode normalizes an input-BN model's inputs with its seed's running statistics
      after all ``cfg.steps`` batches, ``running_input_stats``; the last two are NaN for a model without
      batch statistics; all four NaN for a diverged run), steps_to_target (R,)
      (first schedule step with train_loss <= target_loss and the run not diverged by then, NaN if never),
      batches_per_epoch () (mini-batches per pass over the training split), and with keep_checkpoints
      ``checkpoints``: {tag: params pytree with a leading (R,) axis} for tag in init, early, end.
    """
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    lr_runs, seed_runs = np.asarray(lr_runs, np.float64), np.asarray(seed_runs, np.int64)
    X_eval, y_eval = data["X_train"][:eval_examples], data["y_train"][:eval_examples]
    sweep = Sweep(spec, cfg, data["X_train"], data["y_train"], X_eval, y_eval, eval_steps, eval_gradients)
    steps = sweep.eval_steps
    if steps[0] != 0 or steps[-1] != cfg.steps or not (np.diff(steps) > 0).all():
        raise ValueError(f"the evaluation schedule must rise strictly from step 0 to step {cfg.steps}, got {steps}")

    n_rows = np.asarray(data["X_train"]).shape[0]
    distinct, seed_index = np.unique(seed_runs, return_inverse=True)
    schedules = seed_batch_schedules(distinct, cfg, n_rows)

    start = time.perf_counter()
    state, log0 = sweep.init(jnp.asarray(lr_runs), jnp.asarray(seed_runs))
    chunks = []
    checkpoints = {"init": state["params"]}
    for i in range(1, cfg.n_intervals + 1):
        t0 = (i - 1) * cfg.log_every
        block = schedules[seed_index, t0 : t0 + cfg.log_every]
        state, log = sweep.interval(state, jnp.asarray(t0, jnp.int32), jnp.asarray(block))
        chunks.append(log)
        if i == cfg.early_interval:
            checkpoints["early"] = state["params"]
        if i == 1 or i == cfg.n_intervals or i % max(1, cfg.n_intervals // 10) == 0:
            loss_now = np.asarray(log["batch_loss"][:, -1])
            n_div = int(np.asarray(state["diverged"]).sum())
            progress(f"  step {i * cfg.log_every:>6}/{cfg.steps}  median mini-batch loss "
                     f"{np.nanmedian(loss_now):.4g}  diverged {n_div}/{len(lr_runs)}  "
                     f"({time.perf_counter() - start:.1f} s)")
    checkpoints["end"] = state["params"]

    per_step = {k: np.concatenate([np.asarray(c[k]) for c in chunks], axis=1) for k in chunks[0]}
    after = np.flatnonzero(sweep.evaluate_after)  # column t: after update t + 1
    logged = {k: np.concatenate([np.asarray(log0[k])[:, None], per_step[k][:, after]], axis=1) for k in log0}
    diverged = np.asarray(state["diverged"])
    diverged_step = np.asarray(state["diverged_step"])
    train_loss = logged["train_loss"]

    input_stats = None
    if spec.input_norm == "batchnorm":
        mean, var = running_input_stats(data["X_train"], schedules, cfg.running_stats_momentum)
        input_stats = (jnp.asarray(mean[seed_index], sweep.X.dtype), jnp.asarray(var[seed_index], sweep.X.dtype))
    final = _final_metrics_program(spec, cfg.batch_size)(state["params"], input_stats, sweep.X_eval, sweep.y_eval,
                                                         jnp.asarray(data["X_test"], sweep.X.dtype),
                                                         jnp.asarray(data["y_test"]))
    final = {k: np.asarray(v) for k, v in final.items()}
    reached = (train_loss <= target_loss) & ~(diverged[:, None] & (steps[None, :] > diverged_step[:, None]))
    steps_to_target = np.where(reached.any(axis=1), steps[np.argmax(reached, axis=1)], np.nan)
    out = dict(
        lr=lr_runs, seed=seed_runs, step=steps, eval_step=steps, grad_step=np.isin(steps, sweep.grad_steps),
        batch_loss=per_step["batch_loss"],
        train_loss=train_loss, grad_norm=logged["grad_norm"], relative_grad_norm=logged["relative_grad_norm"],
        weight_norm=logged["weight_norm"], effective_lr=logged["effective_lr"],
        diverged=diverged, diverged_step=diverged_step, final_train_loss=train_loss[:, -1],
        **{k: np.where(diverged, np.nan, v) for k, v in final.items()},
        steps_to_target=steps_to_target, batches_per_epoch=np.asarray(n_rows // cfg.batch_size, np.int64),
    )
    if keep_checkpoints:
        out["checkpoints"] = {k: jax.tree.map(np.asarray, v) for k, v in checkpoints.items()}
    return out


def train_sweep(spec: model.ModelSpec, cfg: TrainConfig, data: dict, lrs, seeds, eval_examples: int,
                target_loss: float = np.nan, progress: Callable[[str], None] | None = None) -> dict:
    """Train every (lr, seed) run of the grid lrs (n_lr,) x seeds (n_seeds,) together: ``train_runs`` of
    R = n_lr * n_seeds runs ordered lr-major, seed-minor, with checkpoints."""
    lrs, seeds = np.asarray(lrs, np.float64), np.asarray(seeds, np.int64)
    return train_runs(spec, cfg, data, np.repeat(lrs, len(seeds)), np.tile(seeds, len(lrs)), eval_examples,
                      target_loss, progress)


def grid_axes(sweep) -> tuple[np.ndarray, np.ndarray]:
    """(lrs (n_lr,), seeds (n_seeds,)) of a grid sweep (``train_sweep``'s result or sweep.npz): the LRs in
    grid order and the seeds in their order (the config's ``sweep.seeds``), so that run r has LR
    lrs[r // n_seeds] and seed seeds[r % n_seeds]."""
    lr, seed = np.asarray(sweep["lr"]), np.asarray(sweep["seed"])
    n_seeds = int(np.sum(lr == lr[0]))
    return lr[::n_seeds], seed[:n_seeds]


def refinement_runs(grid: dict) -> tuple[np.ndarray, np.ndarray]:
    """(lr_runs, seed_runs) of the refinement of the max stable LR after a grid sweep: for each seed, the
    LRs ``selection.refinement_lrs`` puts inside its bracket (largest converged grid LR, next grid LR);
    none for a seed with no converged grid LR or converged at the largest one."""
    lrs, seeds = grid_axes(grid)
    conv = selection.run_converged(grid["diverged"], grid["train_loss"][:, 0], grid["final_train_loss"])
    conv = conv.reshape(len(lrs), len(seeds))
    lr_runs, seed_runs = [], []
    for j, s in enumerate(seeds):
        inside = selection.refinement_lrs(lrs, conv[:, j])
        lr_runs += inside.tolist()
        seed_runs += [int(s)] * len(inside)
    return np.asarray(lr_runs, np.float64), np.asarray(seed_runs, np.int64)


LOG_ARRAYS = ("lr", "seed", "step", "eval_step", "grad_step", "batch_loss", "train_loss", "grad_norm",
              "relative_grad_norm", "weight_norm", "effective_lr", "diverged", "diverged_step", "final_train_loss",
              "test_accuracy", "test_loss", "steps_to_target", "batches_per_epoch")


def sweep_arrays(result: dict) -> dict[str, np.ndarray]:
    """The logged arrays of a grid sweep (everything but the checkpoints), for sweep.npz: the
    ``LOG_ARRAYS`` as ``train_runs`` documents them (R = n_lr * n_seeds grid runs, lr-major)."""
    return {k: np.asarray(result[k]) for k in LOG_ARRAYS}


def sweep_checkpoint_arrays(result: dict) -> dict[str, np.ndarray]:
    """The checkpoints of every run of a grid sweep, for sweep_checkpoints.npz: ``<tag>/layer<l>.<name>``
    -> an array of shape (n_seeds, n_lr, ...) for tag early and end ([i, j]: the run of the i-th seed, in
    ``grid_axes`` order = the config's ``sweep.seeds`` order, at the j-th LR of the grid), and
    (n_seeds, ...) for tag init (the initial weights depend on the seed only)."""
    lrs, seeds = grid_axes(result)
    n_lr, n_seeds = len(lrs), len(seeds)
    out = {}
    for tag, params in result["checkpoints"].items():
        for name, arr in model.flatten_params(params).items():
            by_lr_seed = np.asarray(arr).reshape(n_lr, n_seeds, *arr.shape[1:])
            out[f"{tag}/{name}"] = by_lr_seed[0] if tag == "init" else np.swapaxes(by_lr_seed, 0, 1)
    return out


def _read_entry(arrays, key: str, index: tuple[int, ...]) -> np.ndarray:
    """``arrays[key][index]`` (index: leading integer indices). From an opened, uncompressed .npz (a
    ``numpy.lib.npyio.NpzFile``), only the indexed part of the member is read (C-order arrays: it is one
    contiguous run of bytes), not the whole array; from anything else, plain indexing."""
    zf = getattr(arrays, "zip", None)
    member = f"{key}.npy"
    if zf is None or member not in zf.namelist() or zf.getinfo(member).compress_type != 0:
        return np.asarray(arrays[key][index])
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        if fortran_order or dtype.hasobject:
            return np.asarray(arrays[key][index])
        lead, rest = shape[:len(index)], shape[len(index):]
        flat = int(np.ravel_multi_index(index, lead)) if lead else 0
        count = int(np.prod(rest, dtype=np.int64))
        f.seek(flat * count * dtype.itemsize, 1)
        return np.frombuffer(f.read(count * dtype.itemsize), dtype).reshape(rest)


def checkpoint_from_arrays(arrays, tag: str, seed_index: int, lr_index: int) -> model.Params:
    """The params of the run of the ``seed_index``-th seed (config order, see ``grid_axes``) at the
    ``lr_index``-th grid LR at checkpoint ``tag``, from the arrays of ``sweep_checkpoint_arrays`` (a dict
    or an opened .npz: only that run's slice of each array is read). For ``init`` lr_index is ignored
    (every LR of a seed starts from the same weights)."""
    prefix = f"{tag}/"
    index = (int(seed_index),) if tag == "init" else (int(seed_index), int(lr_index))
    return model.unflatten_params({k[len(prefix):]: _read_entry(arrays, k, index)
                                   for k in arrays.keys() if k.startswith(prefix)})


def train_variant(dataset: str, variant: str, data: dict, variants_config: dict, sweep_config: dict,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Everything the train rule writes for one variant of one dataset, from its processed data (the
    arrays of ``data/processed/<dataset>/<data input>.npz``, ``Variant.data_input``: the raw file for the
    batchnorm input treatment) and the config's ``variants`` and ``sweep`` sections: the network is
    ``variants_config``'s width, activation and eps at the variant's input treatment, norm and depth
    (``variants.model_spec``); its output is one unit with the ``mse`` loss for a regression dataset, else
    one per class with ``softmax_cross_entropy``; every (lr, seed) of the sweep's grid is trained
    (``train_sweep``) and logged on the evaluation set, the first ``sweep_config["eval_examples"]`` training
    rows. Then one more vmapped call trains the refinement runs (``refinement_runs``: LRs inside each
    seed's max-stable bracket); they are rows of ``runs`` with ``grid`` False and appear nowhere else. A
    refinement run is evaluated at steps 0 and ``steps`` only, so its ``steps_to_target`` is NaN (not
    measured).

    Returns, in the order the job writes them: ``model`` (model.json text), ``sweep`` (``sweep_arrays`` of
    the grid), ``checkpoints`` (``sweep_checkpoint_arrays``: every seed), ``runs`` (grid runs, then
    refinement runs) and ``training`` (grid runs) tables."""
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    v = variants.Variant.parse(variant)
    vc, sc = variants_config, sweep_config
    regression = str(data["task"]) == "regression" if "task" in data else len(data["classes"]) == 0
    spec = variants.model_spec(v, data["X_train"].shape[1], 1 if regression else len(data["classes"]), vc["width"],
                               vc["activation"], vc["eps"], loss="mse" if regression else "softmax_cross_entropy")
    cfg = TrainConfig.from_sweep_config(sc)
    lrs = variants.lr_grid(sc["lr_min"], sc["lr_max"], sc["n_lr"])
    progress(f"training {dataset}/{v.name}: {len(lrs)} LRs x {len(sc['seeds'])} seeds, {cfg.steps} steps, "
             f"sizes {list(spec.sizes)}")
    result = train_sweep(spec, cfg, data, lrs, sc["seeds"], sc["eval_examples"], sc["target_loss"], progress=progress)
    ids = {"dataset": dataset, "variant": v.name, "input": v.input, "norm": v.norm, "depth": v.depth}
    runs = [tables.runs_table(ids, result, grid=True)]
    lr_runs, seed_runs = refinement_runs(result)
    if len(lr_runs):
        progress(f"refining the max stable LR: {len(lr_runs)} runs inside the brackets of "
                 f"{len(np.unique(seed_runs))} of {len(sc['seeds'])} seeds")
        # converged needs the evaluation loss at steps 0 and last only: no other evaluation, no checkpoints
        refined = train_runs(spec, cfg, data, lr_runs, seed_runs, sc["eval_examples"], progress=progress,
                             keep_checkpoints=False, eval_steps=[0, cfg.steps], eval_gradients=False)
        runs.append(tables.runs_table(ids, refined, grid=False))
        table = tables.concat(runs)
        for s in sc["seeds"]:
            m = table["seed"] == s
            lo, up = selection.max_stable_bracket(table["lr"][m], selection.run_converged(
                table["diverged"][m], table["initial_train_loss"][m], table["final_train_loss"][m]), table["grid"][m])
            progress(f"  seed {s}: max stable LR {lo:.4g}, first unstable above it {up:.4g}")
    else:
        progress("no max-stable-LR refinement: every seed converged at the largest grid LR or at none")
    return {
        "model": spec.to_json(),
        "sweep": sweep_arrays(result),
        "checkpoints": sweep_checkpoint_arrays(result),
        "runs": tables.concat(runs),
        "training": tables.training_table(ids, result),
    }

"""The ``matched`` checkpoint: each arm's best-LR run taken where its loss first reaches a level shared by the
arms it is compared with, so that their geometry is compared at the same training loss, not at the same step.

On nearly separable data the end-of-training geometry is set by the few examples near the decision margin, and
an arm that trained further sits deeper in that regime; comparing the arms at matched loss removes that
difference. The level of a case (dataset, depth, input) is the largest best-LR median final training loss among
its arms (``selection``'s ``matched_level``), so every arm's median seed reaches it.

A run is replayed from its seed (the same initial weights and the same mini-batches as in training, the same
update and divergence rule: ``train.Sweep``), with the analysis-set loss evaluated after
every update; the checkpoint is the parameters after the first update whose loss is <= the level. A run that
never reaches it gives its last parameters, flagged ``reached=False``; a run that diverged before gives the
parameters it was frozen with, flagged ``frozen``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from normlab import model, train
from normlab.spec import param_count


@dataclasses.dataclass(frozen=True)
class MatchedRun:
    """Where one seed's run reached the level. params: the parameters after ``step`` updates. reached: the
    analysis-set loss after ``step`` updates is <= the level (False: ``step`` is the last step and the run never
    got there). frozen: the run had diverged before ``step``. loss: the analysis-set loss after ``step`` updates."""

    params: model.Params
    step: int
    reached: bool
    frozen: bool
    loss: float


# The most memory the replay's per-step parameters may take (bytes): ``replay_chunk`` shortens the chunks of
# wide models to stay below it.
REPLAY_PARAMS_BYTES = 64 * 2**20


def replay_chunk(steps: int, log_every: int, n_runs: int, n_params: int, itemsize: int,
                 budget: int = REPLAY_PARAMS_BYTES) -> int:
    """Updates per compiled call of the replay: the largest divisor of ``steps`` that is at most ``log_every``
    and whose per-step parameters (chunk x n_runs x n_params x itemsize bytes) fit in ``budget``; at least 1."""
    fits = max(1, budget // max(1, n_runs * n_params * itemsize))
    return max(d for d in range(1, min(log_every, fits, steps) + 1) if steps % d == 0)


def replay_to_level(spec: model.ModelSpec, cfg: train.TrainConfig, X_train, y_train, X_eval, y_eval, lr: float,
                    seeds, level: float, progress: Callable[[str], None] | None = None) -> dict[int, MatchedRun]:
    """Replay the runs (lr, seed) for every seed in ``seeds`` together (one vmapped program) until each one's
    loss on (X_eval, y_eval) is <= ``level`` or the run's ``cfg.steps`` updates are done.

    Each compiled call makes ``replay_chunk`` updates (``cfg.log_every`` unless the model is wide), the loss
    after every one of them (a forward pass: the level is a loss) and the parameters after each, so that the
    first update under the level is found, and its parameters taken, at every step, not at chunk boundaries.
    X_train (m, n_features), y_train (m,): the training split the runs were trained on (their batches are rows
    of it, ``train.batch_schedule``). X_eval, y_eval: the analysis set. Returns {seed: MatchedRun}. A NaN level
    (no level for the case) returns every run at step 0 with reached False."""
    progress = progress or (lambda msg: None)
    seeds = [int(s) for s in seeds]
    chunk = replay_chunk(cfg.steps, cfg.log_every, len(seeds), param_count(spec), np.dtype(cfg.dtype).itemsize)
    replay = dataclasses.replace(cfg, log_every=chunk)
    sweep = train.Sweep(spec, replay, X_train, y_train, X_eval, y_eval, eval_steps=np.arange(cfg.steps + 1),
                        eval_gradients=False, log_params=True)
    n_rows = np.asarray(X_train).shape[0]
    schedules = train.seed_batch_schedules(seeds, cfg, n_rows)
    state, log0 = sweep.init(jnp.full(len(seeds), lr), jnp.asarray(seeds))
    loss = np.asarray(log0["train_loss"], np.float64)
    found: dict[int, MatchedRun] = {}

    def take(k: int, step: int, reached: bool, loss_k: float, params):
        """Seed k's run after ``step`` updates, its parameters ``params`` (every run's leaves, run axis first)."""
        mine = jax.tree.map(lambda a: np.asarray(a[k]), params)
        frozen = bool(train.frozen_before(state["diverged"][k], state["diverged_step"][k], step))
        found[seeds[k]] = MatchedRun(mine, step, reached, frozen, loss_k)

    if not np.isfinite(level):
        for k in range(len(seeds)):
            take(k, 0, False, float(loss[k]), jax.device_get(state["params"]))
        return found
    for k in np.flatnonzero(loss <= level):
        take(int(k), 0, True, float(loss[k]), jax.device_get(state["params"]))
    for t0 in range(0, cfg.steps, chunk):
        if len(found) == len(seeds):
            break
        state, log = sweep.interval(state, jnp.asarray(t0, jnp.int32), jnp.asarray(schedules[:, t0:t0 + chunk]),
                                    np.ones(chunk, bool))
        losses = np.asarray(log["train_loss"], np.float64)  # (runs, chunk): after updates t0 + 1 .. t0 + chunk
        params = None
        for k in range(len(seeds)):
            hits = np.flatnonzero(losses[k] <= level)
            if seeds[k] in found or not hits.size:
                continue
            params = jax.device_get(log["params"]) if params is None else params
            i = int(hits[0])
            take(k, t0 + i + 1, True, float(losses[k, i]), jax.tree.map(lambda a, i=i: a[:, i], params))
        loss = losses[:, -1]
    last = jax.device_get(state["params"])
    for k, s in enumerate(seeds):
        if s not in found:
            take(k, cfg.steps, False, float(loss[k]), last)
    progress(f"matched level {level:.4g}: steps {[found[s].step for s in seeds]}, "
             f"reached {[found[s].reached for s in seeds]}")
    return found

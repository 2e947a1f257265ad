"""One training loop for every strategy: a compiled step run through ``strategy.run``.

Keras 3 ``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the loop is a
custom one: ``steps_per_execution`` steps per ``tf.function`` call (no host round trip per step),
XLA on the step where it applies, AdamW with global-norm clipping and a warm-up + cosine schedule,
the Keras progress bar, a checkpoint after every epoch (resumed after an interruption when the
configuration is unchanged), and a clear error on the first non-finite loss.

Under tf.distribute (see ``README.md``, "Several GPUs or machines"):

- ``train.batch_size`` is the *global* batch: each of the R replicas gets ``batch_size / R`` rows
  of the same global batch a single device would see (``pipeline.data.windows.train_dataset``), and the
  loss is averaged over the global batch (``tf.nn.compute_average_loss``), so the gradients summed
  across replicas are the gradient of the global-batch mean.
- The loop sums the gradients across replicas itself (:func:`apply_aggregated`) and the optimizer
  then unscales (mixed_float16), clips the global norm of the *summed* gradient and applies it.
  A stock Keras 3 optimizer would clip each replica's partial gradient before its own all-reduce
  (``BaseOptimizer._backend_apply_gradients`` clips, then ``TFOptimizer._backend_update_step``
  all-reduces), which bounds the norm of the sum by R x clipnorm instead of clipnorm.
- XLA compiles the whole step on one replica; with several replicas it compiles the forward and
  backward pass of each replica, while the all-reduce and the optimizer update (``merge_call``)
  stay outside XLA.
- Under MultiWorkerMirroredStrategy only the chief (:func:`pipeline.training.runtime.is_chief`) writes the
  checkpoint, prints progress and calls ``on_epoch``; at start every worker takes the chief's
  checkpoint (epoch, weights, optimizer state) through one collective, so the workers resume
  together even when only the chief's disk holds the file.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.data.windows import check_length, eval_windows, train_dataset
from pipeline.disk import require_free  # check only
from pipeline.errors import DivergenceError, SeqlabError
from pipeline.config.params import TrainParams
from pipeline.models.family import ModelParams
from pipeline.models.registry import family_of
from pipeline.training.checkpoint import Checkpoint, fingerprint
from pipeline.training.optimizer import apply_aggregated, make_optimizer
from pipeline.training.runtime import is_chief, resolve_jit, resolve_precision, resolve_strategy



@dataclass
class TrainResult:
    model: object
    history: list[dict]
    train_seconds: float
    tokens_per_second: float
    steps: int
    resumed_from_epoch: int
    settings: dict
    steps_run: int = 0       # optimizer steps run by this process (fewer than ``steps`` after a resume)
    is_chief: bool = True    # False on the non-chief workers of a multi-worker run: they write nothing


def _replica_sum(strategy, values: list[np.ndarray], chief_only: bool) -> list[np.ndarray]:
    """Sum of ``values`` over all replicas of all workers (one all-reduce, in float64).

    ``chief_only``: only replica 0 (the chief's first device) contributes, which broadcasts the
    chief's values. float64 holds every float32 weight, int64 step counter below 2**53 and uint32
    RNG state exactly, and adding zeros keeps them exact.
    """
    import tensorflow as tf
    inputs = [tf.constant(np.asarray(v, np.float64)) for v in values]

    @tf.function
    def reduce(xs):
        def replica_fn(xs):
            ctx = tf.distribute.get_replica_context()
            keep = tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), tf.float64) if chief_only else 1.0
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, [x * keep for x in xs])
        return strategy.experimental_local_results(strategy.run(replica_fn, args=(xs,)))[0]

    out = reduce(inputs)
    return [np.asarray(o.numpy()).astype(np.asarray(v).dtype) for o, v in zip(out, values)]


def _sync_workers(strategy, fp: str, start_epoch: int, model_vars: list, opt_vars: list, restored) -> tuple:
    """Multi-worker start: check that all workers run the same configuration, then take the
    chief's epoch and, when it resumes, its variables. Returns (start_epoch, weights, opt_values)."""
    replicas = strategy.num_replicas_in_sync
    own = float(int(fp[:10], 16))  # < 2**40: the sum over replicas stays exact in float64
    (total,) = _replica_sum(strategy, [np.array(own)], chief_only=False)
    if float(total) != own * replicas:
        raise SeqlabError("the workers' configurations differ (params, prepared data or seed): every worker "
                          "must run the same command on the same prepared data")
    (epoch,) = _replica_sum(strategy, [np.array(float(start_epoch))], chief_only=True)
    if not int(epoch):
        return 0, [], []
    if restored is None:  # a non-chief: its own values only give the shapes
        weights, opt_values = [v.numpy() for v in model_vars], [v.numpy() for v in opt_vars]
    else:
        _, weights, opt_values = restored
    synced = _replica_sum(strategy, weights + opt_values, chief_only=True)
    return int(epoch), synced[:len(model_vars)], synced[len(model_vars):]


def _check_finite(row: dict, weights: list, variables: list, cfg: TrainParams) -> None:
    """Divergence that the training losses did not show: a non-finite validation loss or weight
    (e.g. the last step's update overflowed) stops the run before anything is saved."""
    where = f"after epoch {row['epoch']} (step {row['step']})"
    hint = (f"lower train.learning_rate (now {cfg.learning_rate}), train.weight_decay (now {cfg.weight_decay}) or "
            "train.clipnorm; nothing was saved or registered")
    if not math.isfinite(row["valid_loss"]):
        raise DivergenceError(f"training diverged: validation loss is {row['valid_loss']} {where}; {hint}")
    for var, value in zip(variables, weights):
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise DivergenceError(f"training diverged: weight {var.path} is not finite {where}; {hint}")


def mask_density(mask: np.ndarray, block: int = 1 << 24) -> float:
    """The fraction of tokens a loss mask scores, read in blocks (a memory-mapped mask of any size)."""
    scored = sum(int(np.count_nonzero(mask[i:i + block])) for i in range(0, len(mask), block))
    if not scored:
        raise SeqlabError("the loss mask of the train split scores no token (data.score_after)")
    return scored / len(mask)


def train_model(model_cfg: ModelParams, train_cfg: TrainParams, train_ids: np.ndarray, valid_ids: np.ndarray,
                vocab_size: int, data_hash: str, seed: int, checkpoint_dir: Path,
                build_model: Callable, on_epoch: Callable[[dict], None] | None = None,
                train_mask: np.ndarray | None = None, valid_mask: np.ndarray | None = None) -> TrainResult:
    """Train ``model_cfg`` on ``train_ids``. With loss masks (``data.score_after``; one uint8 per id,
    both or neither) only the masked targets are trained and scored: a batch's loss is the sum of
    its masked targets' losses over ``batch x seq_len x`` the train mask's density, so it averages
    the scored targets in expectation and needs no all-reduce of the weights under tf.distribute;
    the validation loss is the exact mean over the masked targets."""
    import keras
    import tensorflow as tf

    cfg = train_cfg
    check_length(train_ids, cfg.seq_len, "data/prepared/train.npy")
    if (train_mask is None) != (valid_mask is None) or any(
            m is not None and len(m) != len(i) for m, i in ((train_mask, train_ids), (valid_mask, valid_ids))):
        raise SeqlabError("loss masks: expected one mask value per token of both the train and the valid split")
    density = mask_density(train_mask) if train_mask is not None else 1.0
    # MultiWorkerMirroredStrategy configures the collective runtime: before any other TF op
    strategy = resolve_strategy(cfg.distribute)
    keras.utils.set_random_seed(seed)
    family = family_of(model_cfg)
    precision = resolve_precision(cfg.precision, family)
    keras.mixed_precision.set_dtype_policy(precision)
    jit = resolve_jit(cfg.jit_compile, family)
    replicas = strategy.num_replicas_in_sync
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    chief = is_chief() if multi_worker else True
    if cfg.batch_size % replicas:
        raise SeqlabError(f"train.batch_size={cfg.batch_size} is not divisible by the {replicas} replicas")
    total_steps = cfg.epochs * cfg.steps_per_epoch
    settings = {"precision": precision, "jit_compile": jit, "strategy": type(strategy).__name__,
                "replicas": replicas}
    say = print if chief else (lambda *a, **k: None)

    with strategy.scope():
        model = build_model(model_cfg, vocab_size, cfg.seq_len)
        optimizer = make_optimizer(cfg, total_steps, precision)
        optimizer.build(model.trainable_variables)
    # model.variables: the weights plus the dropout RNG states, so a resumed run draws the same masks
    model_vars, opt_vars = list(model.variables), list(optimizer.variables)

    # a checkpoint holds the weights and the optimizer's variables, written next to the previous one
    # before it replaces it; the saved network holds the weights once more
    weight_bytes = 4.0 * sum(int(np.prod(v.shape)) for v in model_vars + opt_vars)
    require_free(checkpoint_dir, 2 * weight_bytes + 4.0 * model.count_params(), "training (checkpoints, the saved network)")
    ckpt = Checkpoint(checkpoint_dir, fingerprint(model_cfg, cfg, vocab_size, data_hash, seed, precision))
    history: list[dict] = []
    start_epoch = 0
    restored = ckpt.load() if chief else None
    if restored is not None:
        meta, weights, opt_values = restored
        shapes_ok = (len(weights) == len(model_vars) and len(opt_values) == len(opt_vars)
                     and all(tuple(a.shape) == tuple(v.shape) for a, v in zip(weights + opt_values,
                                                                              model_vars + opt_vars)))
        if shapes_ok:
            history, start_epoch = meta["history"], meta["epoch"]
        else:
            print(f"ignoring the checkpoint {ckpt.path}: its variables do not match this model", flush=True)
            restored = None
    if multi_worker:  # every worker must start from the chief's state, or the collectives deadlock
        start_epoch, weights, opt_values = _sync_workers(strategy, ckpt.fp, start_epoch, model_vars, opt_vars,
                                                         restored)
    if start_epoch:
        for var, value in zip(model_vars + opt_vars, weights + opt_values):
            var.assign(value)
        where = ckpt.path if chief else "the chief's checkpoint"
        print(f"resuming from the checkpoint after epoch {start_epoch} ({where}) at step "
              f"{int(optimizer.iterations.numpy())}", flush=True)

    def token_losses(x, y, training):
        logits = model(x, training=training)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))

    def loss_of(x, y, training, w=None):
        per_token = token_losses(x, y, training)
        if w is None:
            return tf.reduce_mean(per_token, axis=-1)  # per example
        return tf.reduce_sum(per_token * w, axis=-1) / (cfg.seq_len * density)

    variables = model.trainable_variables

    def grads_of(x, y, w=None):
        # x, y: this replica's batch_size / replicas rows; the mean is over the global batch
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(loss_of(x, y, True, w), global_batch_size=cfg.batch_size)
            scaled = optimizer.scale_loss(loss)  # x the dynamic loss scale under mixed_float16, else as is
        return loss, tape.gradient(scaled, variables)

    if replicas == 1:
        def step(*batch):
            loss, grads = grads_of(*batch)
            apply_aggregated(optimizer, grads, variables)
            return loss
        replica_step = tf.function(step, jit_compile=jit)
    else:  # the all-reduce and the optimizer's merge_call stay outside XLA
        grads_fn = tf.function(grads_of, jit_compile=jit)

        def replica_step(*batch):
            loss, grads = grads_fn(*batch)
            apply_aggregated(optimizer, grads, variables)
            return loss

    @tf.function
    def run_steps(iterator, n):
        losses = tf.TensorArray(tf.float32, size=n)
        for i in tf.range(n):
            batch = next(iterator)   # (x, y), or (x, y, weights) with a loss mask
            per_replica = strategy.run(replica_step, args=tuple(batch))
            # the sum of the replicas' shares of the global-batch mean is the global-batch mean
            losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
        return losses.stack()

    vx, vy, vw = eval_windows(valid_ids, cfg.seq_len, cfg.eval_tokens, valid_mask)
    if vw is None:
        vw = np.ones(vy.shape, np.float32)
    elif not vw.any():
        raise SeqlabError(f"the loss mask scores none of the first {cfg.eval_tokens} validation tokens that "
                          "train.eval_tokens covers; raise train.eval_tokens")

    @tf.function(jit_compile=jit)
    def eval_loss(x, y, w):   # (sum of the weighted losses, sum of the weights)
        return tf.reduce_sum(token_losses(x, y, False) * w), tf.reduce_sum(w)

    def valid_loss() -> float:
        total, n = 0.0, 0.0
        for i in range(0, len(vx), cfg.batch_size):
            s, c = eval_loss(*(tf.constant(a[i:i + cfg.batch_size]) for a in (vx, vy, vw)))
            total, n = total + float(s), n + float(c)
        return total / n

    step_time = sum(h["seconds"] for h in history)  # time in training steps, evaluation excluded
    # steady-state throughput leaves out each process's first call (tracing and XLA compilation)
    steady_tokens, steady_time, first_call = 0, 0.0, True
    tokens_per_step = cfg.batch_size * cfg.seq_len
    steps_run, run_time = 0, 0.0  # in this process
    for epoch in range(start_epoch, cfg.epochs):
        dataset = strategy.distribute_datasets_from_function(
            functools.partial(train_dataset, train_ids, cfg.seq_len, cfg.batch_size, cfg.steps_per_epoch,
                              seed, epoch, mask=train_mask))
        iterator = iter(dataset)
        bar = keras.utils.Progbar(cfg.steps_per_epoch, stateful_metrics=["loss", "lr"], verbose=1 if chief else 0)
        done, epoch_losses, t_epoch = 0, [], time.perf_counter()
        while done < cfg.steps_per_epoch:
            n = min(cfg.steps_per_execution, cfg.steps_per_epoch - done)
            t_call = time.perf_counter()
            losses = run_steps(iterator, tf.constant(n)).numpy()
            if not first_call:
                steady_tokens, steady_time = steady_tokens + n * tokens_per_step, steady_time + time.perf_counter() - t_call
            first_call = False
            # the loss is all-reduced: every worker sees the same values and stops at the same step
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                global_step = epoch * cfg.steps_per_epoch + done + int(bad[0]) + 1
                raise DivergenceError(
                    f"training diverged: loss is {losses[bad[0]]} at step {global_step} (epoch {epoch + 1}); "
                    f"lower train.learning_rate (now {cfg.learning_rate}) or train.clipnorm; nothing was saved "
                    "or registered")
            done += n
            steps_run += n
            epoch_losses.extend(losses.tolist())
            lr = float(optimizer.learning_rate)  # the schedule's value at the current iteration
            bar.update(done, values=[("loss", float(np.mean(losses))), ("lr", lr)])
        seconds = time.perf_counter() - t_epoch
        step_time += seconds
        run_time += seconds
        step = (epoch + 1) * cfg.steps_per_epoch
        row = {"epoch": epoch + 1, "step": step, "tokens_seen": step * tokens_per_step,
               "train_seconds": step_time, "train_loss": float(np.mean(epoch_losses)), "valid_loss": valid_loss(),
               "learning_rate": lr, "seconds": seconds, "tokens_per_second": tokens_per_step * done / seconds}
        row["valid_bits_per_token"] = row["valid_loss"] / math.log(2)
        history.append(row)
        say(f"epoch {row['epoch']}/{cfg.epochs}: train_loss {row['train_loss']:.4f} "
            f"valid_loss {row['valid_loss']:.4f} ({row['tokens_per_second']:.0f} tokens/s)", flush=True)
        weights = [v.numpy() for v in model_vars]
        _check_finite(row, weights, model_vars, cfg)   # before anything is logged or saved
        if chief:  # the other workers hold the same values; only the chief writes and logs
            if on_epoch is not None:
                on_epoch(row)
            ckpt.save({"epoch": epoch + 1, "history": history}, weights, [v.numpy() for v in opt_vars])
    if steady_time == 0:  # a single call in all: no steady state to measure
        if steps_run:
            steady_tokens, steady_time = tokens_per_step * steps_run, run_time
        else:  # resumed after the last epoch: the checkpoint's epochs
            steady_tokens, steady_time = tokens_per_step * cfg.steps_per_epoch * len(history), step_time
    return TrainResult(model=model, history=history, train_seconds=step_time,
                       tokens_per_second=steady_tokens / max(steady_time, 1e-9), steps=total_steps,
                       resumed_from_epoch=start_epoch, settings=settings, steps_run=steps_run, is_chief=chief)

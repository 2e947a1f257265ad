"""One training loop for every strategy: a compiled step run through ``strategy.run``.

Keras 3 ``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the loop is a
custom one: ``steps_per_execution`` steps per ``tf.function`` call (no host round trip per step),
XLA on the step where it applies, AdamW with global-norm clipping and a warm-up + cosine schedule,
the Keras progress bar, a checkpoint after every epoch (resumed after an interruption when the
configuration is unchanged), and a clear error on the first non-finite loss.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.dataset import check_length, eval_windows, train_dataset
from pipeline.errors import DivergenceError, SeqlabError
from pipeline.params import ModelParams, TrainParams
from pipeline.runtime import resolve_jit, resolve_precision, resolve_strategy


@dataclass
class TrainResult:
    model: object
    history: list[dict]
    train_seconds: float
    tokens_per_second: float
    steps: int
    resumed_from_epoch: int
    settings: dict


def fingerprint(model_cfg: ModelParams, train_cfg: TrainParams, vocab_size: int, data_hash: str, seed: int) -> str:
    blob = json.dumps([dataclasses.asdict(model_cfg), dataclasses.asdict(train_cfg), vocab_size, data_hash, seed],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Checkpoint:
    """Model weights, optimizer state and history after each epoch, in one npz (no pickle)."""

    def __init__(self, folder: Path, fp: str):
        self.path = Path(folder) / "last.npz"
        self.fp = fp

    def load(self):
        if not self.path.exists():
            return None
        with np.load(self.path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("fingerprint") != self.fp:
                return None
            n_w, n_o = meta["n_weights"], meta["n_opt"]
            return meta, [z[f"w{i}"] for i in range(n_w)], [z[f"o{i}"] for i in range(n_o)]

    def save(self, meta: dict, weights: list, opt_vars: list) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**meta, "fingerprint": self.fp, "n_weights": len(weights), "n_opt": len(opt_vars)}
        arrays = {f"w{i}": w for i, w in enumerate(weights)} | {f"o{i}": o for i, o in enumerate(opt_vars)}
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def make_optimizer(cfg: TrainParams, total_steps: int):
    import keras
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.learning_rate,
        decay_steps=max(total_steps - warmup, 1), alpha=cfg.min_lr_ratio,
        warmup_target=cfg.learning_rate if warmup else None, warmup_steps=warmup)
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay, beta_1=cfg.beta1,
                                 beta_2=cfg.beta2, global_clipnorm=cfg.clipnorm or None)
    # decay matrices only, as is usual: never biases, norms or gains
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def train_model(model_cfg: ModelParams, train_cfg: TrainParams, train_ids: np.ndarray, valid_ids: np.ndarray,
                vocab_size: int, data_hash: str, seed: int, checkpoint_dir: Path,
                build_model: Callable, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    import keras
    import tensorflow as tf

    cfg = train_cfg
    check_length(train_ids, cfg.seq_len, "data/prepared/train.npy")
    keras.utils.set_random_seed(seed)
    precision = resolve_precision(cfg.precision)
    keras.mixed_precision.set_dtype_policy(precision)
    jit = resolve_jit(cfg.jit_compile, model_cfg.family)
    strategy = resolve_strategy(cfg.distribute)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise SeqlabError(f"train.batch_size={cfg.batch_size} is not divisible by the {replicas} replicas")
    total_steps = cfg.epochs * cfg.steps_per_epoch
    settings = {"precision": precision, "jit_compile": jit, "strategy": type(strategy).__name__,
                "replicas": replicas}

    with strategy.scope():
        model = build_model(model_cfg, vocab_size, cfg.seq_len)
        optimizer = make_optimizer(cfg, total_steps)
        optimizer.build(model.trainable_variables)

    ckpt = Checkpoint(checkpoint_dir, fingerprint(model_cfg, cfg, vocab_size, data_hash, seed))
    history: list[dict] = []
    start_epoch = 0
    restored = ckpt.load()
    if restored is not None:
        meta, weights, opt_vars = restored
        model.set_weights(weights)
        for var, value in zip(optimizer.variables, opt_vars):
            var.assign(value)
        history, start_epoch = meta["history"], meta["epoch"]
        print(f"resuming from the checkpoint after epoch {start_epoch} ({ckpt.path})", flush=True)

    def loss_of(x, y, training):
        logits = model(x, training=training)
        per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))
        return tf.reduce_mean(per_token, axis=-1)  # per example

    variables = model.trainable_variables

    def grads_of(x, y):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(loss_of(x, y, True), global_batch_size=cfg.batch_size)
        return loss, tape.gradient(loss, variables)

    if replicas == 1:
        def step(x, y):
            loss, grads = grads_of(x, y)
            optimizer.apply_gradients(zip(grads, variables))
            return loss
        replica_step = tf.function(step, jit_compile=jit)
    else:  # cross-replica gradient aggregation happens in apply_gradients, outside XLA
        grads_fn = tf.function(grads_of, jit_compile=jit)

        def replica_step(x, y):
            loss, grads = grads_fn(x, y)
            optimizer.apply_gradients(zip(grads, variables))
            return loss

    @tf.function
    def run_steps(iterator, n):
        losses = tf.TensorArray(tf.float32, size=n)
        for i in tf.range(n):
            x, y = next(iterator)
            per_replica = strategy.run(replica_step, args=(x, y))
            losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
        return losses.stack()

    vx, vy = eval_windows(valid_ids, cfg.seq_len, cfg.eval_tokens)

    @tf.function(jit_compile=jit)
    def eval_loss(x, y):
        return tf.reduce_mean(loss_of(x, y, False))

    def valid_loss() -> float:
        total, n = 0.0, 0
        for i in range(0, len(vx), cfg.batch_size):
            xb, yb = vx[i:i + cfg.batch_size], vy[i:i + cfg.batch_size]
            total += float(eval_loss(tf.constant(xb), tf.constant(yb))) * len(xb)
            n += len(xb)
        return total / n

    step_time = sum(h["seconds"] for h in history)  # time in training steps, evaluation excluded
    # steady-state throughput leaves out each process's first call (tracing and XLA compilation)
    steady_tokens, steady_time, first_call = 0, 0.0, True
    tokens_per_step = cfg.batch_size * cfg.seq_len
    for epoch in range(start_epoch, cfg.epochs):
        ds = train_dataset(train_ids, cfg.seq_len, cfg.batch_size, cfg.steps_per_epoch, seed, epoch)
        iterator = iter(strategy.experimental_distribute_dataset(ds))
        bar = keras.utils.Progbar(cfg.steps_per_epoch, stateful_metrics=["loss", "lr"])
        done, epoch_losses, t_epoch = 0, [], time.perf_counter()
        while done < cfg.steps_per_epoch:
            n = min(cfg.steps_per_execution, cfg.steps_per_epoch - done)
            t_call = time.perf_counter()
            losses = run_steps(iterator, tf.constant(n)).numpy()
            if not first_call:
                steady_tokens, steady_time = steady_tokens + n * tokens_per_step, steady_time + time.perf_counter() - t_call
            first_call = False
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                global_step = epoch * cfg.steps_per_epoch + done + int(bad[0]) + 1
                raise DivergenceError(
                    f"training diverged: loss is {losses[bad[0]]} at step {global_step} (epoch {epoch + 1}); "
                    f"lower train.learning_rate (now {cfg.learning_rate}) or train.clipnorm; nothing was saved "
                    "or registered")
            done += n
            epoch_losses.extend(losses.tolist())
            lr = float(optimizer.learning_rate)  # the schedule's value at the current iteration
            bar.update(done, values=[("loss", float(np.mean(losses))), ("lr", lr)])
        seconds = time.perf_counter() - t_epoch
        step_time += seconds
        row = {"epoch": epoch + 1, "step": (epoch + 1) * cfg.steps_per_epoch,
               "train_loss": float(np.mean(epoch_losses)), "valid_loss": valid_loss(),
               "learning_rate": lr, "seconds": seconds, "tokens_per_second": tokens_per_step * done / seconds}
        row["valid_bits_per_token"] = row["valid_loss"] / math.log(2)
        history.append(row)
        print(f"epoch {row['epoch']}/{cfg.epochs}: train_loss {row['train_loss']:.4f} "
              f"valid_loss {row['valid_loss']:.4f} ({row['tokens_per_second']:.0f} tokens/s)", flush=True)
        if on_epoch is not None:
            on_epoch(row)
        ckpt.save({"epoch": epoch + 1, "history": history}, model.get_weights(),
                  [v.numpy() for v in optimizer.variables])
    if steady_time == 0:  # a single call in all: no steady state to measure
        steady_tokens, steady_time = tokens_per_step * cfg.steps_per_epoch * cfg.epochs, step_time
    return TrainResult(model=model, history=history, train_seconds=step_time,
                       tokens_per_second=steady_tokens / max(steady_time, 1e-9), steps=total_steps,
                       resumed_from_epoch=start_epoch, settings=settings)

"""One training loop for every strategy: a compiled step run through ``strategy.run``.

Keras 3 ``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the loop is a
custom one: ``steps_per_execution`` steps per ``tf.function`` call (no host round trip per step),
XLA on the step where it applies, AdamW with global-norm clipping and a warm-up + cosine schedule,
the Keras progress bar, a checkpoint after every epoch (resumed after an interruption when the
configuration is unchanged), and a clear error on the first non-finite loss.

:func:`train_model` runs as named phases, each short enough to read whole:

1. :func:`set_up`: the strategy, the seed, the dtype policy and XLA, before any model exists;
2. :meth:`TrainingRun.build`: the model and its optimizer under the strategy's scope, the disk check;
3. :meth:`TrainingRun.restore`: the resume from the checkpoint (on every worker, the chief's);
4. :meth:`TrainingRun.compiled_steps`: the compiled step (:meth:`TrainingRun.replica_step`), n steps per call;
5. :meth:`TrainingRun.validation`: the validation loss;
6. :meth:`TrainingRun.train`: the epoch loop (:meth:`~TrainingRun.run_epoch`, :meth:`~TrainingRun.end_epoch`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.data.examples import ExampleSampler, example_ends
from pipeline.data.tracks import ExampleTracks
from pipeline.data.windows import carried_dataset, check_length, eval_windows, train_dataset
from pipeline.disk import require_free  # check only
from pipeline.errors import DivergenceError, SeqlabError
from pipeline.config.params import TrainParams
from pipeline.models.family import STREAM, ModelParams
from pipeline.models.catalog import family_of
from pipeline.training.carried import CarriedState
from pipeline.training.checkpoint import Checkpoint, fingerprint
from pipeline.training.optimizer import apply_aggregated, averaged_weights, make_optimizer, use_averages
from pipeline.training.runtime import is_chief, resolve_jit, resolve_precision, resolve_state, resolve_strategy


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
        _, weights, opt_values, _ = restored
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


def _check_losses(losses: np.ndarray, epoch: int, done: int, cfg: TrainParams) -> None:
    """The first non-finite training loss stops the run. The loss is all-reduced, so every worker
    sees the same values and stops at the same step."""
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        global_step = epoch * cfg.steps_per_epoch + done + int(bad[0]) + 1
        raise DivergenceError(
            f"training diverged: loss is {losses[bad[0]]} at step {global_step} (epoch {epoch + 1}); "
            f"lower train.learning_rate (now {cfg.learning_rate}) or train.clipnorm; nothing was saved "
            "or registered")


@dataclass(frozen=True, eq=False)
class TrainJob:
    """The arguments of :func:`train_model`, one field each, so that the phases share them by name."""
    model_cfg: ModelParams
    cfg: TrainParams
    train_ids: np.ndarray
    valid_ids: np.ndarray
    vocab_size: int
    data_hash: str
    seed: int
    checkpoint_dir: Path
    build_model: Callable
    on_epoch: Callable[[dict], None] | None = None
    train_mask: np.ndarray | None = None
    valid_mask: np.ndarray | None = None
    train_starts: np.ndarray | None = None     # example starts (data.examples: lines), both or neither
    valid_starts: np.ndarray | None = None

    def check_inputs(self) -> float:
        """Refuse bad inputs before anything is built. Returns the loss mask's density (the
        fraction of the train targets it scores; 1 without a mask)."""
        pairs = ((self.train_mask, self.train_ids), (self.valid_mask, self.valid_ids))
        if (self.train_mask is None) != (self.valid_mask is None) or any(
                m is not None and len(m) != len(i) for m, i in pairs):
            raise SeqlabError("loss masks: expected one mask value per token of both the train and the valid split")
        if (self.train_starts is None) != (self.valid_starts is None):
            raise SeqlabError("examples: expected the example starts of both the train and the valid split")
        if self.train_starts is None:     # in examples mode any example length works: short ones are padded
            check_length(self.train_ids, self.cfg.seq_len, "data/prepared/train.npy")
        return mask_density(self.train_mask) if self.train_mask is not None else 1.0


@dataclass(frozen=True)
class Setup:
    """Where and how the steps run, resolved by :func:`set_up` before any model exists."""
    strategy: object
    precision: str      # the Keras dtype policy: float32, mixed_bfloat16 or mixed_float16
    jit: bool           # XLA on the step
    multi_worker: bool
    chief: bool         # writes the checkpoint, prints progress and calls on_epoch

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def settings(self) -> dict:
        return {"precision": self.precision, "jit_compile": self.jit, "strategy": type(self.strategy).__name__,
                "replicas": self.replicas}

    def say(self, *args, **kwargs) -> None:
        """``print`` on the chief only: the other workers of a multi-worker run print the same lines."""
        if self.chief:
            print(*args, **kwargs)


def set_up(job: TrainJob) -> Setup:
    """Phase 1: the strategy, the seed, the dtype policy and XLA, in this order and before the model.

    MultiWorkerMirroredStrategy configures the collective runtime, so it comes before any other TF
    op; the seed comes before any weight or dropout RNG state is drawn."""
    import keras
    import tensorflow as tf
    cfg = job.cfg
    strategy = resolve_strategy(cfg.distribute)
    keras.utils.set_random_seed(job.seed)
    family = family_of(job.model_cfg)
    precision = resolve_precision(cfg.precision, family)
    keras.mixed_precision.set_dtype_policy(precision)
    jit = resolve_jit(cfg.jit_compile, family)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    setup = Setup(strategy, precision, jit, multi_worker, is_chief() if multi_worker else True)
    if cfg.batch_size % setup.replicas:
        raise SeqlabError(f"train.batch_size={cfg.batch_size} is not divisible by the {setup.replicas} replicas")
    return setup


@dataclass
class Clock:
    """Seconds in training steps (evaluation excluded) and the steady-state throughput, which
    leaves out each process's first call (tracing and XLA compilation)."""
    tokens_per_step: float
    step_time: float            # every epoch's steps, the checkpoint's epochs included
    steps_run: int = 0          # optimizer steps run by this process
    run_time: float = 0.0       # seconds of this process's epochs
    steady_tokens: int = 0
    steady_time: float = 0.0
    first_call: bool = True

    def call(self, n: int, seconds: float) -> None:
        """One call of the compiled step that ran ``n`` steps in ``seconds``."""
        if not self.first_call:
            self.steady_tokens, self.steady_time = self.steady_tokens + n * self.tokens_per_step, self.steady_time + seconds
        self.first_call = False
        self.steps_run += n

    def epoch(self, seconds: float) -> None:
        self.step_time += seconds
        self.run_time += seconds

    def tokens_per_second(self, epochs: int, steps_per_epoch: int) -> float:
        """Steady state; after a single call, that call; resumed after the last epoch, the checkpoint's ``epochs``."""
        tokens, seconds = self.steady_tokens, self.steady_time
        if seconds == 0:  # a single call in all: no steady state to measure
            if self.steps_run:
                tokens, seconds = self.tokens_per_step * self.steps_run, self.run_time
            else:
                tokens, seconds = self.tokens_per_step * steps_per_epoch * epochs, self.step_time
        return tokens / max(seconds, 1e-9)


@dataclass(eq=False)
class TrainingRun:
    """What the phases after :func:`set_up` share: the model, its optimizer, its checkpoint and the
    history so far (the checkpoint's, once restored)."""
    job: TrainJob
    setup: Setup
    mask_density: float     # see TrainJob.check_inputs
    model: object
    optimizer: object
    ckpt: Checkpoint
    model_vars: list    # model.variables: the weights plus the dropout RNG states, so a resumed run draws the same masks
    opt_vars: list
    state: str = "windows"          # train.state, resolved: windows | carried
    carried: CarriedState | None = None
    example_density: float = 1.0    # examples mode: the expected fraction of a window's targets inside its example
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    best: dict | None = None        # train.keep: best: the epoch and validation loss of the weights kept

    @property
    def cfg(self) -> TrainParams:
        return self.job.cfg

    @classmethod
    def build(cls, job: TrainJob, setup: Setup, mask_density: float) -> TrainingRun:
        """Phase 2: the model and its optimizer under the strategy's scope, and their checkpoint.

        Stops before the first step when the disk cannot hold a checkpoint (the weights and the
        optimizer's variables), written beside the previous one before it replaces it, and the saved
        network (the weights once more)."""
        cfg = job.cfg
        with setup.strategy.scope():
            model = job.build_model(job.model_cfg, job.vocab_size, cfg.seq_len)
            optimizer = make_optimizer(cfg, cfg.epochs * cfg.steps_per_epoch, setup.precision)
            optimizer.build(model.trainable_variables)
        model_vars, opt_vars = list(model.variables), list(optimizer.variables)
        weight_bytes = 4.0 * sum(int(np.prod(v.shape)) for v in model_vars + opt_vars)
        require_free(job.checkpoint_dir, 2 * weight_bytes + 4.0 * model.count_params(),
                     "training (checkpoints, the saved network)")
        ckpt = Checkpoint(job.checkpoint_dir, fingerprint(job.model_cfg, cfg, job.vocab_size, job.data_hash, job.seed,
                                                          setup.precision))
        state = resolve_state(cfg.state, family_of(job.model_cfg), model, examples=job.train_starts is not None)
        carried = CarriedState(model, setup.strategy, cfg.batch_size // setup.replicas) if state == "carried" else None
        example_density = 1.0
        if job.train_starts is not None:
            rows = ExampleTracks(job.train_starts, len(job.train_ids), cfg.seq_len, cfg.batch_size) if carried else (
                ExampleSampler(job.train_starts, len(job.train_ids), cfg.seq_len))
            example_density = rows.density
        return cls(job, setup, mask_density, model, optimizer, ckpt, model_vars, opt_vars, state, carried,
                   example_density)

    @property
    def density(self) -> float:
        """The expected fraction of a window's targets that count (the loss mask's density times,
        in examples mode, the fraction inside the example): it scales each batch's weighted loss."""
        return self.mask_density * self.example_density

    def restore(self) -> None:
        """Phase 3: resume after the checkpoint's epoch when it matches this configuration and model.

        Under MultiWorkerMirroredStrategy every worker takes the chief's epoch and variables, or
        the collectives deadlock; only the chief reads the file."""
        variables = self.model_vars + self.opt_vars
        restored = self.ckpt.load() if self.setup.chief else None
        states = []
        if restored is not None:
            meta, weights, opt_values, states = restored
            shapes_ok = (len(weights) == len(self.model_vars) and len(opt_values) == len(self.opt_vars)
                         and all(tuple(a.shape) == tuple(v.shape) for a, v in zip(weights + opt_values, variables)))
            if shapes_ok:
                self.history, self.start_epoch, self.best = meta["history"], meta["epoch"], meta.get("best")
            else:
                print(f"ignoring the checkpoint {self.ckpt.path}: its variables do not match this model", flush=True)
                restored = None
        if self.setup.multi_worker:
            self.start_epoch, weights, opt_values = _sync_workers(self.setup.strategy, self.ckpt.fp, self.start_epoch,
                                                                  self.model_vars, self.opt_vars, restored)
            if self.carried is not None and self.start_epoch:   # the chief's carried state, to every worker
                shapes = self.carried.numpy()
                states = _replica_sum(self.setup.strategy, states or shapes, chief_only=True)
        if self.start_epoch:
            for var, value in zip(variables, weights + opt_values):
                var.assign(value)
            if self.carried is not None and states:
                self.carried.assign(states)
            where = self.ckpt.path if self.setup.chief else "the chief's checkpoint"
            print(f"resuming from the checkpoint after epoch {self.start_epoch} ({where}) at step "
                  f"{int(self.optimizer.iterations.numpy())}", flush=True)

    def token_losses(self, x, y, training, cache=None):
        """Per-token cross-entropy, in float32 whatever the dtype policy. With a ``cache`` (the
        carried state) the network continues from it: ``(losses, its final cache)``."""
        import tensorflow as tf
        if cache is None:
            logits, new = self.model(x, training=training), None
        else:
            logits, new = self.model.call_with_cache(x, cache=cache, training=training)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))
        return losses if cache is None else (losses, new)

    def replica_step(self) -> Callable:
        """One replica's step on its ``batch_size / replicas`` rows: the loss (its share of the
        global-batch mean), the gradient, and the update through :func:`apply_aggregated`. A masked
        batch's loss is its masked losses' sum over ``seq_len x density``. With the state carried
        the batch ends with ``keep`` and the step starts from the carried state (reset where
        ``keep`` is 0) and leaves its final state for the next step."""
        import tensorflow as tf
        cfg, optimizer, variables, carried = self.cfg, self.optimizer, self.model.trainable_variables, self.carried

        def grads_of(x, y, w=None, keep=None):
            new = None
            with tf.GradientTape() as tape:
                if carried is None:
                    per_token = self.token_losses(x, y, True)
                else:
                    per_token, new = self.token_losses(x, y, True, cache=carried.read(keep))
                if w is None:
                    per_example = tf.reduce_mean(per_token, axis=-1)
                else:
                    per_example = tf.reduce_sum(per_token * w, axis=-1) / (cfg.seq_len * self.density)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=cfg.batch_size)
                scaled = optimizer.scale_loss(loss)  # x the dynamic loss scale under mixed_float16, else as is
            return loss, tape.gradient(scaled, variables), new

        # XLA compiles the whole step on one replica; with several, the all-reduce and the optimizer's
        # merge_call stay outside it
        grads_fn = grads_of if self.setup.replicas == 1 else tf.function(grads_of, jit_compile=self.setup.jit)

        def step(*batch):
            loss, grads, new = grads_fn(*batch)
            if carried is not None:
                carried.write(new)
            apply_aggregated(optimizer, grads, variables)
            return loss
        return tf.function(step, jit_compile=self.setup.jit) if self.setup.replicas == 1 else step

    def compiled_steps(self) -> Callable:
        """Phase 4: ``run_steps(iterator, n)`` runs n steps through ``strategy.run`` in one
        tf.function call (no host round trip per step) and returns their global-batch mean losses."""
        import tensorflow as tf
        strategy, replica_step = self.setup.strategy, self.replica_step()

        @tf.function
        def run_steps(iterator, n):
            losses = tf.TensorArray(tf.float32, size=n)
            for i in tf.range(n):
                batch = next(iterator)   # (x, y), (x, y, weights) with a loss mask, (x, y, weights, keep) carried
                per_replica = strategy.run(replica_step, args=tuple(batch))
                # the sum of the replicas' shares of the global-batch mean is the global-batch mean
                losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
            return losses.stack()
        return run_steps

    def validation(self) -> Callable[[], float]:
        """Phase 5: ``valid_loss()``, the exact mean loss over the first ``eval_tokens`` validation
        targets (over the masked ones with a loss mask), scored as evaluate scores the family: a
        stream family's by :meth:`stream_validation`, the others' in non-overlapping windows of
        ``seq_len``, ``batch_size`` per call."""
        import tensorflow as tf
        cfg = self.cfg
        family = family_of(self.job.model_cfg)
        if family.protocol == STREAM:
            return self.stream_validation(family)
        vx, vy, vw = eval_windows(self.job.valid_ids, cfg.seq_len, cfg.eval_tokens, self.job.valid_mask,
                                  self.job.valid_starts)
        if vw is None:
            vw = np.ones(vy.shape, np.float32)
        elif not vw.any():
            raise SeqlabError(f"the loss mask scores none of the first {cfg.eval_tokens} validation tokens that "
                              "train.eval_tokens covers; raise train.eval_tokens")

        @tf.function(jit_compile=self.setup.jit)
        def eval_loss(x, y, w):   # (sum of the weighted losses, sum of the weights)
            return tf.reduce_sum(self.token_losses(x, y, False) * w), tf.reduce_sum(w)

        def valid_loss() -> float:
            total, n = 0.0, 0.0
            for i in range(0, len(vx), cfg.batch_size):
                s, c = eval_loss(*(tf.constant(a[i:i + cfg.batch_size]) for a in (vx, vy, vw)))
                total, n = total + float(s), n + float(c)
            return total / n
        return valid_loss

    def stream_validation(self, family) -> Callable[[], float]:
        """``valid_loss()`` of a stream family: the first ``eval_tokens`` validation tokens as one
        stream, the state carried from the first token to the last (in examples mode: the whole
        examples among them, each from a fresh state), by the evaluate stage's own code
        (:mod:`pipeline.scoring.stream` through the family's stepper), so the learning curves and
        the final scores measure the same thing."""
        from pipeline.scoring.protocol import split_scores
        from pipeline.scoring.stream import example_stream_pieces, stream_pieces
        cfg, job = self.cfg, self.job
        stepper = family.stepper(self.model, job.model_cfg, cfg.seq_len)
        if job.valid_starts is None:
            ids = job.valid_ids[:cfg.eval_tokens]
            pieces = functools.partial(stream_pieces, stepper, ids)
        else:
            starts = np.asarray(job.valid_starts[:cfg.eval_tokens + 1], np.int64)
            ends = example_ends(starts, len(job.valid_ids))
            count = max(1, int(np.searchsorted(ends, cfg.eval_tokens, side="right")))   # whole examples only
            ids = job.valid_ids[:int(ends[count - 1])]
            pieces = functools.partial(example_stream_pieces, stepper, ids, starts[:count], batch_size=cfg.batch_size)
        mask = None if job.valid_mask is None else np.asarray(job.valid_mask[:len(ids)])
        if mask is not None and not mask.any():
            raise SeqlabError(f"the loss mask scores none of the first {len(ids)} validation tokens that "
                              "train.eval_tokens covers; raise train.eval_tokens")
        return lambda: split_scores(pieces(), chars=1, mask=mask)["nll"]

    def train(self, run_steps: Callable, valid_loss: Callable[[], float]) -> Clock:
        """Phase 6, the epoch loop, from the first epoch the checkpoint lacks: each epoch's steps,
        its history row and line, then the checks and the checkpoint."""
        cfg = self.cfg
        clock = Clock(self.tokens_per_step(), step_time=sum(h["seconds"] for h in self.history))
        for epoch in range(self.start_epoch, cfg.epochs):
            losses, lr, seconds = self.run_epoch(epoch, run_steps, clock)
            clock.epoch(seconds)
            step = (epoch + 1) * cfg.steps_per_epoch
            valid, kept = self.validate(valid_loss)
            row = {"epoch": epoch + 1, "step": step, "tokens_seen": round(step * clock.tokens_per_step),
                   "train_seconds": clock.step_time, "train_loss": float(np.mean(losses)), "valid_loss": valid,
                   "learning_rate": lr, "seconds": seconds,
                   "tokens_per_second": clock.tokens_per_step * cfg.steps_per_epoch / seconds}
            row["valid_bits_per_token"] = row["valid_loss"] / math.log(2)
            self.history.append(row)
            self.setup.say(f"epoch {row['epoch']}/{cfg.epochs}: train_loss {row['train_loss']:.4f} "
                           f"valid_loss {row['valid_loss']:.4f} ({row['tokens_per_second']:.0f} tokens/s)", flush=True)
            self.end_epoch(row, kept)
        return clock

    def validate(self, valid_loss: Callable[[], float]) -> tuple[float, list | None]:
        """The validation loss of the weights the run would end with (with ``train.ema``, their
        moving average) and, with ``train.keep: best``, those weights (the best checkpoint's)."""
        with averaged_weights(self.optimizer, self.model.trainable_variables):
            loss = valid_loss()
            kept = [v.numpy() for v in self.model_vars] if self.cfg.keep == "best" else None
        return loss, kept

    @property
    def split_at(self) -> int | None:
        """An encoder-decoder's marker id: its training rows come split there, each side over its
        own positions (``EncoderDecoder.call``); None for every other family."""
        reads_source = family_of(self.job.model_cfg).reads_source and self.job.train_starts is not None
        return self.model.marker_id if reads_source else None

    def tokens_per_step(self) -> float:
        """The tokens a step trains on: every position of its windows; in examples mode the
        expected targets inside their examples, as the batches' widths vary (padding is not counted)."""
        return self.cfg.batch_size * self.cfg.seq_len * self.example_density

    def run_epoch(self, epoch: int, run_steps: Callable, clock: Clock) -> tuple[list[float], float, float]:
        """One epoch's steps, ``steps_per_execution`` per call, under the progress bar. Returns their
        losses, the learning rate after them and the epoch's seconds."""
        import keras
        import tensorflow as tf
        cfg, job = self.cfg, self.job
        if self.carried is None:
            batches = functools.partial(train_dataset, job.train_ids, cfg.seq_len, cfg.batch_size, cfg.steps_per_epoch,
                                        job.seed, epoch, mask=job.train_mask, starts=job.train_starts,
                                        split_at=self.split_at)
        else:
            batches = functools.partial(carried_dataset, job.train_ids, cfg.seq_len, cfg.batch_size,
                                        cfg.steps_per_epoch, epoch, mask=job.train_mask, starts=job.train_starts)
        dataset = self.setup.strategy.distribute_datasets_from_function(batches)
        iterator = iter(dataset)
        bar = keras.utils.Progbar(cfg.steps_per_epoch, stateful_metrics=["loss", "lr"],
                                  verbose=1 if self.setup.chief else 0)
        done, epoch_losses, t_epoch = 0, [], time.perf_counter()
        while done < cfg.steps_per_epoch:
            n = min(cfg.steps_per_execution, cfg.steps_per_epoch - done)
            t_call = time.perf_counter()
            losses = run_steps(iterator, tf.constant(n)).numpy()
            clock.call(n, time.perf_counter() - t_call)
            _check_losses(losses, epoch, done, cfg)
            done += n
            epoch_losses.extend(losses.tolist())
            lr = float(self.optimizer.learning_rate)  # the schedule's value at the current iteration
            bar.update(done, values=[("loss", float(np.mean(losses))), ("lr", lr)])
        return epoch_losses, lr, time.perf_counter() - t_epoch

    def end_epoch(self, row: dict, kept: list | None = None) -> None:
        """The checks that the losses did not show, then ``on_epoch`` and the checkpoint (with the
        carried state, and with ``train.keep: best`` the best weights so far, ``kept`` as
        :meth:`validate` scored them): on the chief only, as the other workers hold the same values."""
        weights = [v.numpy() for v in self.model_vars]
        _check_finite(row, weights, self.model_vars, self.cfg)   # before anything is logged or saved
        better = self.cfg.keep == "best" and (self.best is None or row["valid_loss"] < self.best["valid_loss"])
        if better:
            self.best = {"epoch": row["epoch"], "valid_loss": row["valid_loss"]}
        states = [] if self.carried is None else self.carried.numpy()   # a collective: on every worker
        if self.setup.chief:
            if self.job.on_epoch is not None:
                self.job.on_epoch(row)
            if better:
                self.best_ckpt.save(dict(self.best), kept, [])
            self.ckpt.save({"epoch": row["epoch"], "history": self.history, "best": self.best}, weights,
                           [v.numpy() for v in self.opt_vars], states)

    @property
    def best_ckpt(self) -> Checkpoint:
        return Checkpoint(self.ckpt.path.parent, self.ckpt.fp, name="best")

    def keep_best(self) -> int:
        """The epoch whose weights the model ends with: with ``train.keep: best`` the best one's
        (loaded from its checkpoint, on every worker: one collective), else the last."""
        last = len(self.history)
        if self.cfg.keep != "best" or self.best is None or self.best["epoch"] == last:
            return last
        saved = self.best_ckpt.load() if self.setup.chief else None
        weights = None if saved is None or saved[0].get("epoch") != self.best["epoch"] else saved[1]
        if self.setup.multi_worker:
            weights = _replica_sum(self.setup.strategy, weights or [v.numpy() for v in self.model_vars],
                                   chief_only=True)
        if weights is None:
            raise SeqlabError(f"train.keep: best: the checkpoint of epoch {self.best['epoch']} "
                              f"({self.best_ckpt.path}) is missing or unreadable")
        for var, value in zip(self.model_vars, weights):
            var.assign(value)
        self.setup.say(f"keeping the weights of epoch {self.best['epoch']} (validation loss "
                       f"{self.best['valid_loss']:.4f}; train.keep: best)", flush=True)
        return self.best["epoch"]

    def result(self, clock: Clock) -> TrainResult:
        cfg = self.cfg
        kept_epoch = self.keep_best()
        if kept_epoch == len(self.history):     # the last weights: with train.ema, their moving average
            use_averages(self.optimizer, self.model.trainable_variables)
        settings = self.setup.settings | {"state": self.state, "keep": cfg.keep, "kept_epoch": kept_epoch}
        return TrainResult(model=self.model, history=self.history, train_seconds=clock.step_time,
                           tokens_per_second=clock.tokens_per_second(len(self.history), cfg.steps_per_epoch),
                           steps=cfg.epochs * cfg.steps_per_epoch, resumed_from_epoch=self.start_epoch,
                           settings=settings, steps_run=clock.steps_run, is_chief=self.setup.chief)


def train_model(model_cfg: ModelParams, train_cfg: TrainParams, train_ids: np.ndarray, valid_ids: np.ndarray,
                vocab_size: int, data_hash: str, seed: int, checkpoint_dir: Path,
                build_model: Callable, on_epoch: Callable[[dict], None] | None = None,
                train_mask: np.ndarray | None = None, valid_mask: np.ndarray | None = None,
                train_starts: np.ndarray | None = None, valid_starts: np.ndarray | None = None) -> TrainResult:
    """Train ``model_cfg`` on ``train_ids``. With loss masks (``data.score_after``; one uint8 per id,
    both or neither) only the masked targets are trained and scored: a batch's loss is the sum of
    its masked targets' losses over ``batch x seq_len x`` the train mask's density, so it averages
    the scored targets in expectation and needs no all-reduce of the weights under tf.distribute;
    the validation loss is the exact mean over the masked targets. With example starts
    (``data.examples: lines``) no window crosses an example (:mod:`pipeline.data.examples`)."""
    job = TrainJob(model_cfg, train_cfg, train_ids, valid_ids, vocab_size, data_hash, seed, checkpoint_dir,
                   build_model, on_epoch, train_mask, valid_mask, train_starts, valid_starts)
    run = TrainingRun.build(job, set_up(job), job.check_inputs())
    run.restore()
    run_steps = run.compiled_steps()
    clock = run.train(run_steps, run.validation())
    return run.result(clock)

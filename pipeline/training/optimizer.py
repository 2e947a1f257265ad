"""The optimizer: AdamW with warm-up + cosine decay and clipping of the summed gradient.

Under tf.distribute the loop sums the gradients across replicas first (:func:`apply_aggregated`),
so that clipping sees the global gradient; see ``pipeline.training.loop``.
"""
from __future__ import annotations

import contextlib
import functools

from pipeline.config.params import TrainParams


@functools.cache
def _adamw_class():
    """keras.optimizers.AdamW taking gradients the loop has already summed across replicas.

    Keras 3's TensorFlow optimizer all-reduces inside ``apply`` (``_all_reduce_sum_gradients``),
    after clipping; the loop all-reduces first (:func:`apply_aggregated`) so that clipping sees the
    summed gradient, and this subclass skips the second sum.
    """
    import keras
    if not hasattr(keras.optimizers.AdamW, "_all_reduce_sum_gradients"):
        raise RuntimeError("this Keras version no longer all-reduces in TFOptimizer._all_reduce_sum_gradients; "
                           "pipeline.training.optimizer.apply_aggregated must be revisited")

    class PreAggregatedAdamW(keras.optimizers.AdamW):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return list(grads_and_vars)

    return PreAggregatedAdamW


def make_optimizer(cfg: TrainParams, total_steps: int, precision: str = "float32"):
    """AdamW (warm-up + cosine, global-norm clipping), wrapped for dynamic loss scaling under float16;
    with ``train.ema`` it also keeps the moving average of the weights (Keras's ``use_ema``).

    Use it with :func:`apply_aggregated`, which sums the gradients across replicas first.
    """
    import keras
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.learning_rate,
        decay_steps=max(total_steps - warmup, 1), alpha=cfg.min_lr_ratio,
        warmup_target=cfg.learning_rate if warmup else None, warmup_steps=warmup)
    opt = _adamw_class()(learning_rate=schedule, weight_decay=cfg.weight_decay, beta_1=cfg.beta1,
                         beta_2=cfg.beta2, global_clipnorm=cfg.clipnorm or None, use_ema=cfg.ema > 0,
                         ema_momentum=cfg.ema or 0.99)
    # decay matrices only, as is usual: never biases, norms or gains
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if precision == "mixed_float16":  # what Model.compile does for this policy; fit is not used here
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def _averaging(optimizer):
    """The optimizer that keeps the weights' moving average, or None (``train.ema`` 0)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)      # under LossScaleOptimizer
    return inner if inner.use_ema else None


def use_averages(optimizer, variables) -> None:
    """Put the moving averages in place of the trained weights (with ``train.ema``; else nothing)."""
    averaging = _averaging(optimizer)
    if averaging is not None:
        averaging.finalize_variable_values(variables)


@contextlib.contextmanager
def averaged_weights(optimizer, variables):
    """Within: ``variables`` hold their moving averages (with ``train.ema``); after: the trained
    weights again, so that training continues from them."""
    if _averaging(optimizer) is None:
        yield
        return
    trained = [v.numpy() for v in variables]
    use_averages(optimizer, variables)
    try:
        yield
    finally:
        for v, value in zip(variables, trained):
            v.assign(value)


def apply_aggregated(optimizer, grads, variables) -> None:
    """In replica context: sum ``grads`` across all replicas, then apply them with ``optimizer``.

    ``optimizer`` comes from :func:`make_optimizer`: it unscales (loss scaling), clips the global
    norm of the summed gradient, and updates every replica's copy with the same values.
    """
    import tensorflow as tf
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    grads, variables = [g for g, _ in pairs], [v for _, v in pairs]
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    optimizer.apply(grads, variables)

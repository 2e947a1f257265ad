"""The state a network carries from one training window to the next (``train.state: carried``).

One non-trainable variable per tensor of the network's cache (``SequenceModel.empty_cache``: a
recurrent network's hidden and cell states), of the replica's rows. Under tf.distribute every
replica holds its own value (``ON_READ`` variables, never aggregated): its rows are the same tracks
at every step (:func:`pipeline.data.windows.carried_dataset`). A step reads the state, zeroed
where the batch starts a pass (``keep`` 0), runs the network from it and writes the final state
back with the gradient stopped: truncated backpropagation through time.
"""
from __future__ import annotations

import numpy as np


class CarriedState:
    """The carried cache of ``rows`` sequences per replica of ``strategy`` for ``model``."""

    def __init__(self, model, strategy, rows: int):
        import tensorflow as tf
        self.model, self.strategy, self.rows = model, strategy, int(rows)
        with strategy.scope():
            self.variables = [tf.Variable(np.asarray(z, np.float32), trainable=False, name=f"carried_{i}",
                                          synchronization=tf.VariableSynchronization.ON_READ,
                                          aggregation=tf.VariableAggregation.NONE)
                              for i, z in enumerate(_numpy(model.empty_cache(self.rows)))]

    def read(self, keep) -> tuple:
        """The cache to start this replica's step from: zeros in the rows whose ``keep`` (rows,) is 0."""
        import tensorflow as tf
        keep = tf.cast(keep, tf.float32)
        return tuple(tf.cast(v.read_value() * tf.reshape(keep, [-1] + [1] * (len(v.shape) - 1)),
                             self.model.compute_dtype) for v in self.variables)

    def write(self, cache) -> None:
        """Keep the step's final cache for the next step; no gradient flows back through it."""
        import tensorflow as tf
        for v, c in zip(self.variables, cache):
            v.assign(tf.cast(tf.stop_gradient(c), v.dtype))

    def numpy(self) -> list[np.ndarray]:
        """The whole carried state, (batch_size, ...) per variable, replica r's rows at
        ``r * rows .. (r + 1) * rows`` (its tracks'): one all-reduce, which every worker of a
        multi-worker run must call."""
        import tensorflow as tf
        strategy, rows = self.strategy, self.rows

        @tf.function
        def gather():
            def replica_fn():
                ctx = tf.distribute.get_replica_context()
                r, n = ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync
                placed = [tf.pad(v.read_value(), [[r * rows, (n - 1 - r) * rows]] + [[0, 0]] * (len(v.shape) - 1))
                          for v in self.variables]
                return ctx.all_reduce(tf.distribute.ReduceOp.SUM, placed)   # exact: each row has one non-zero term
            return strategy.experimental_local_results(strategy.run(replica_fn))[0]

        return [np.asarray(x.numpy()) for x in gather()]

    def assign(self, values: list[np.ndarray]) -> None:
        """The inverse of :meth:`numpy`: every replica takes its own rows of ``values``."""
        import tensorflow as tf
        rows = self.rows

        @tf.function
        def scatter(full):
            def replica_fn(full):
                r = tf.distribute.get_replica_context().replica_id_in_sync_group
                for v, f in zip(self.variables, full):
                    v.assign(f[r * rows:(r + 1) * rows])
            self.strategy.run(replica_fn, args=(full,))

        scatter([tf.constant(np.asarray(v, np.float32)) for v in values])


def _numpy(cache) -> list[np.ndarray]:
    from keras import ops
    return [ops.convert_to_numpy(t) for t in cache]

"""Training: the loop, the optimizer, checkpoints, and the runtime (strategy, precision, XLA)."""

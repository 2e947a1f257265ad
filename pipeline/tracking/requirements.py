"""The pinned requirements every logged seqlab model declares (one answer for every flavor).

Given explicitly: MLflow would otherwise infer them by loading the model in a subprocess that
imports TensorFlow, about ten seconds per logged model.
"""
from __future__ import annotations

# What loading and decoding a network needs: Keras and its backend, the tokenizers
# (tensorflow-text), NumPy, and pandas for the pyfunc's DataFrames.
PACKAGES = ("keras", "tensorflow", "tensorflow-text", "numpy", "pandas")


def pip_requirements() -> list[str]:
    """``package==version`` for every package of :data:`PACKAGES` installed here."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for package in PACKAGES:
        try:
            reqs.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pass
    return reqs

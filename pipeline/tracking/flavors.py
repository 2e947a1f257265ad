"""An MLflow flavor for ``Model.log`` that logs a model without MLflow's in-process serving check.

With an input example, ``Model.log`` loads the model it has just saved and predicts the example
once before uploading it (``_validate_serving_input``). For a seqlab network that check traces and
runs a whole decoder a second time: 7 to 11 s of each evaluate stage (registering g2p's networks
under cProfile: 10.4 -> 2.9 s for the GRU, 14.2 -> 3.1 s for the Transformer encoder-decoder),
about a minute of a preset run, and it decides nothing (a failure is only a
warning; the model is logged anyway). Serving is tested where it is promised instead: from a fresh
process outside the repo (tests/test_tracking.py, tests/test_pipeline_e2e.py).

``Model.log`` passes every keyword on to the flavor's ``save_model``, which for ``mlflow.pyfunc``
refuses one it does not know, so the flavor drops the check's switch before saving.
"""
from __future__ import annotations

import types
from collections.abc import Callable

NO_SERVING_CHECK = {"validate_serving_input": False}     # the keyword ``Model.log`` reads


def unchecked_flavor(module_name: str, save_model: Callable) -> types.SimpleNamespace:
    """A flavor named ``module_name`` (the MLmodel's loader stays the module's) whose
    ``save_model`` is ``save_model`` without :data:`NO_SERVING_CHECK`'s keyword."""

    def save(path, **kwargs):
        for key in NO_SERVING_CHECK:
            kwargs.pop(key, None)
        save_model(path=path, **kwargs)

    return types.SimpleNamespace(__name__=module_name, save_model=save)

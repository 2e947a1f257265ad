"""MLflow pyfunc that turns a trained seqlab network into a text generator.

``mlflow models serve -m <uri> --env-manager local`` serves it (run it with ``.venv/bin`` on
``PATH``: MLflow execs ``uvicorn``). The input is a DataFrame (or a
dict of columns, or a list of prompt strings) with a ``prompt`` column and optional per-row
``max_tokens``, ``temperature``, ``top_k``, ``top_p`` and ``seed`` columns; the same five
settings can also be given as inference ``params`` (a per-row value wins over a param, a param
over the logged defaults). The output is a DataFrame with one column ``text``: the generated
continuation of each prompt. Example request::

    curl -s localhost:5000/invocations -H 'Content-Type: application/json' \\
      -d '{"dataframe_records": [{"prompt": "The ", "seed": 1}], "params": {"max_tokens": 50}}'
    # also {"inputs": ["The ", "A "], "params": {...}} and {"inputs": {"prompt": [...], ...}}
    # -> {"predictions": [{"text": "..."}, ...]}

Artifacts of the logged pyfunc: the network folder (``pipeline.models.network.save_network``:
weights and config) and ``vocab.json``. The ``pipeline`` package itself (and the source of a family
from the user's own code) is shipped as the model's code, so a served model decodes with the exact
code it was logged with.

The loaders (``pipeline.models.network.load_generating_model``,
``pipeline.data.tokenizers.load_tokenizer``) are imported lazily inside the pyfunc's methods; tests
inject stubs through the :class:`TextGenerator` constructor.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import mlflow.pyfunc
import pandas as pd

from pipeline.paths import NGRAM_FILE, PACKAGE

SETTINGS = ("max_tokens", "temperature", "top_k", "top_p", "seed")
DEFAULTS: dict[str, Any] = {"max_tokens": 200, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                            "seed": -1}   # seed -1: fresh randomness on every request
_TYPES = {"max_tokens": int, "temperature": float, "top_k": int, "top_p": float, "seed": int}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class TextGenerator(mlflow.pyfunc.PythonModel):
    """Generates text from prompts with a saved seqlab model (a network or the n-gram) and its vocabulary.

    ``load_model_fn`` and ``load_tokenizer_fn`` replace the real loaders (tests only); left as None,
    the real ones are imported when the model is loaded. The model only needs ``sample(context,
    num_tokens, rng, temperature, top_k, top_p)``. Nothing but these (None in production) and
    ``defaults`` is pickled with the model.
    """

    def __init__(self, defaults: dict | None = None, *, load_model_fn: Callable | None = None,
                 load_tokenizer_fn: Callable | None = None):
        self.defaults = {**DEFAULTS, **(defaults or {})}
        self.load_model_fn = load_model_fn
        self.load_tokenizer_fn = load_tokenizer_fn

    # ---- loading
    def load_context(self, context) -> None:
        """Runs where the logged model is loaded, with the code logged with it (its imports are
        marked "load time": the stage that logs the model never runs them)."""
        if self.load_tokenizer_fn is None:
            from pipeline.data.tokenizers import load_tokenizer  # load time: where the model is served
            self.load_tokenizer_fn = load_tokenizer
        self.tokenizer = self.load_tokenizer_fn(Path(context.artifacts["vocab"]))
        self.model = (self.load_model_fn or load_model)(Path(context.artifacts["network"]))


    # ---- inference
    def _rows(self, model_input, params: dict | None) -> list[dict]:
        import numpy as np

        if isinstance(model_input, (str, bytes)):
            model_input = [model_input]
        if isinstance(model_input, np.ndarray):   # JSON {"inputs": [...]} arrives as an array
            model_input = model_input.tolist()
        if isinstance(model_input, pd.Series):
            model_input = model_input.to_frame()
        if isinstance(model_input, dict):
            model_input = pd.DataFrame({k: list(v) if isinstance(v, (list, tuple, np.ndarray))
                                        else [v] for k, v in model_input.items()})
        if isinstance(model_input, (list, tuple)):
            model_input = pd.DataFrame(
                [r if isinstance(r, dict) else {"prompt": r} for r in model_input])
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"expected a DataFrame, dict or list of prompts, got {type(model_input)}")
        if "prompt" not in model_input.columns:
            if model_input.shape[1] != 1:
                raise ValueError("input needs a 'prompt' column")
            model_input = model_input.rename(columns={model_input.columns[0]: "prompt"})
        base = {**self.defaults, **{k: v for k, v in (params or {}).items()
                                    if k in SETTINGS and not _missing(v)}}
        rows = []
        for record in model_input.to_dict(orient="records"):
            row = {"prompt": "" if _missing(record.get("prompt")) else str(record["prompt"])}
            for key in SETTINGS:
                value = record.get(key)
                row[key] = _TYPES[key](base[key] if _missing(value) else value)
            rows.append(row)
        return rows

    def generate_one(self, row: dict) -> str:
        import numpy as np

        rng = np.random.default_rng(None if row["seed"] < 0 else row["seed"])
        prompt_ids = self.tokenizer.encode(row["prompt"])
        ids = self.model.sample(prompt_ids, row["max_tokens"], rng, row["temperature"], row["top_k"], row["top_p"])
        return self.tokenizer.decode(ids)

    # The pd.DataFrame hint only tells MLflow not to validate or convert the input itself
    # (lists and dicts are accepted too); a missing hint would warn on every load.
    def predict(self, context, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        return pd.DataFrame({"text": [self.generate_one(r) for r in self._rows(model_input, params)]})


def load_model(folder: Path):
    """The model a saved folder holds, as something with ``sample``: the n-gram model
    (``models/ngram``: ``model.npz``), or a network (``save_network``) behind its stepper."""
    if (folder / NGRAM_FILE).is_file():
        from pipeline.models.ngram import KneserNeyLM  # load time: where the model is served
        return KneserNeyLM.load(folder / NGRAM_FILE)
    from pipeline.generation.decoding import StepperSampler  # load time: where the model is served
    from pipeline.models.network import load_network  # load time: where the model is served
    return StepperSampler(load_network(folder).stepper())


def generator_signature(defaults: dict | None = None):
    """The settings as inference params (with their defaults) and a ``text`` column out.

    There is deliberately no input schema: MLflow's column-schema enforcement rejects a plain
    list of prompts (it wants the named ``prompt`` column), and an unnamed one-column schema
    would drop the per-row settings columns. :meth:`TextGenerator._rows` checks the input.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    d = {**DEFAULTS, **(defaults or {})}
    kinds = {"max_tokens": "long", "temperature": "double", "top_k": "long", "top_p": "double",
             "seed": "long"}
    return ModelSignature(
        inputs=None,
        outputs=Schema([ColSpec("string", "text")]),
        params=ParamSchema([ParamSpec(k, kinds[k], _TYPES[k](d[k])) for k in SETTINGS]),
    )


class _DropMessages:
    """Logging filter that drops records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str):
        self.prefixes = prefixes

    def filter(self, record) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def log_generator(network_folder, vocab_path, model_cfg=None, name: str = "generator", *,
                  defaults: dict | None = None, registered_name: str | None = None,
                  python_model: TextGenerator | None = None):
    """Log the text-generator pyfunc in the active run; returns MLflow's ``ModelInfo``.

    ``network_folder``: a ``save_network`` folder, or the n-gram's (``model.npz``); ``vocab_path``:
    the ``vocab.json``; ``model_cfg``: a network's parameters (``ModelParams``), which say what
    source its family needs besides ``pipeline/`` (None for the n-gram). ``defaults`` override the sampler defaults (:data:`DEFAULTS`);
    they become the params' defaults in the signature. ``python_model`` replaces the pyfunc
    (tests). ``registered_name`` also registers it. The serving example (one greedy token of
    "The ") is validated by MLflow in-process; if that fails MLflow logs a warning and the model
    is still logged.
    """
    import logging

    import mlflow

    from pipeline.models.registry import code_paths
    from pipeline.tracking.requirements import pip_requirements
    from pipeline.tracking.store import quiet_mlflow

    quiet_mlflow()
    if mlflow.active_run() is None:
        raise RuntimeError("log_generator needs an active MLflow run")
    python_model = python_model or TextGenerator(defaults)
    # One short greedy token: MLflow saves it as the serving example and checks it by loading
    # the logged model and predicting once.
    example = pd.DataFrame({"prompt": ["The "], "max_tokens": [1], "temperature": [0.0],
                            "seed": [0]})
    # The pickled object holds only `defaults` (the class is pickled by reference and shipped as
    # code), so MLflow's generic CloudPickle warning is noise here, as is the INFO line.
    pickle_note = _DropMessages("Passing a Python object as `python_model`",
                                "Validating input example against model signature")
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    pyfunc_logger.addFilter(pickle_note)
    try:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=python_model,
            artifacts={"network": str(network_folder), "vocab": str(vocab_path)},
            code_paths=[str(PACKAGE)] + [str(p) for p in (code_paths(model_cfg) if model_cfg else [])],
            signature=generator_signature(python_model.defaults),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_name,
        )
    finally:
        pyfunc_logger.removeFilter(pickle_note)

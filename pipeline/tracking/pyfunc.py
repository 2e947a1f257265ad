"""MLflow pyfunc that turns a trained seqlab network into a text generator.

``mlflow models serve -m <uri> --env-manager local`` serves it (run it with ``.venv/bin`` on
``PATH``: MLflow execs ``uvicorn``). The input is a DataFrame (or a
dict of columns, or a list of prompt strings) with a ``prompt`` column and optional per-row
``max_tokens``, ``temperature``, ``top_k``, ``top_p``, ``seed`` and ``stop`` columns; the same
settings can also be given as inference ``params`` (a per-row value wins over a param, a param
over the logged defaults). The output is a DataFrame with one column ``text``: the generated
continuation of each prompt (all prompts of a request are decoded together, in one batch of the
compiled decoder). ``predict_stream`` yields the text of one prompt as it is generated. Example
request::

    curl -s localhost:5000/invocations -H 'Content-Type: application/json' \\
      -d '{"dataframe_records": [{"prompt": "The ", "seed": 1}], "params": {"max_tokens": 50}}'
    # also {"inputs": ["The ", "A "], "params": {...}} and {"inputs": {"prompt": [...], ...}}
    # -> {"predictions": [{"text": "..."}, ...]}

A model of an image corpus draws images instead: each row's ``prompt`` names its class (a labelled
corpus) or is empty, and the output's one column ``image`` holds each image as (height, width)
lists of levels (the whole image, whatever ``max_tokens`` says)::

    curl -s localhost:5000/invocations -H 'Content-Type: application/json' \
      -d '{"inputs": {"prompt": ["", ""], "seed": [1, 2]}}'
    # -> {"predictions": [{"image": [[0, 0, 3, ...], ...]}, ...]}

A model trained on paired data (``data.examples: pairs``) is also a transducer: a request with a
``source`` column instead of ``prompt`` decodes each source to its output (up to the example's
end), by beam search of ``beam_width`` beams (1: greedy) with GNMT's ``length_penalty``, as the
evaluate stage measures it::

    curl -s localhost:5000/invocations -H 'Content-Type: application/json' \
      -d '{"inputs": {"source": ["3 March 2021", "mercredi 5 juin 1991"]}, "params": {"beam_width": 4}}'
    # -> {"predictions": [{"text": "2021-03-03"}, {"text": "1991-06-05"}]}

Every request is checked first (:mod:`pipeline.generation.requests`: the types and ranges of the
settings, and the caps: ``MAX_TOKENS`` per row, ``MAX_PROMPT_CHARS`` per prompt, ``MAX_ROWS``
prompts per request); the scoring server answers a bad one with HTTP 400 and a one-line message
naming the field (:class:`RequestRejected`).

Artifacts of the logged pyfunc: the network folder (``pipeline.models.network.save_network``:
weights and config) and ``vocab.json``. The ``pipeline`` package itself (and the source of a family
from the user's own code) is shipped as the model's code, so a served model decodes with the exact
code it was logged with.

The loaders (``pipeline.saved.load_saved``, ``pipeline.data.tokenizers.load_tokenizer``) are imported lazily inside the pyfunc's methods; tests
inject stubs through the :class:`TextGenerator` constructor.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pipeline.paths import PACKAGE
from pipeline.generation.requests import LENGTH_PENALTY, MAX_SECONDS, SETTINGS, RequestError, parse_requests

DEFAULTS: dict[str, Any] = {"max_tokens": 200, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                            "seed": -1, "stop": "",   # seed -1: fresh randomness on every request
                            "beam_width": 1, "length_penalty": LENGTH_PENALTY}
_TYPES = {"max_tokens": int, "temperature": float, "top_k": int, "top_p": float, "seed": int, "stop": str,
          "beam_width": int, "length_penalty": float}


class RequestRejected(MlflowException, ValueError):
    """A request the generator will not serve (a :class:`RequestError`), as MLflow's scoring server
    answers it: HTTP 400 (``INVALID_PARAMETER_VALUE``), the error's one-line message, no stack trace.

    Its message cannot be rewritten. MLflow 3.17's scoring server (``scoring_server.invocations``)
    sets the message of every MlflowException that ``predict`` raises to ``"Failed to predict data
    '<the whole input>'. \\nError: <message>"``: two lines, echoing the request back (a 1 MB prompt,
    a 1 MB error). That assignment is ignored here; ``tests/test_serving.py`` checks the response.
    """

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):   # set once, by MlflowException.__init__
            self._message = value


class TextGenerator(mlflow.pyfunc.PythonModel):
    """Generates text from prompts with a saved seqlab model (a network or the n-gram) and its vocabulary.

    ``load_model_fn`` and ``load_tokenizer_fn`` replace the real loaders (tests only); left as None,
    the real ones are imported when the model is loaded. The model only needs ``stream`` (as
    ``pipeline.generation.text`` wants it). Nothing but these (None in production) and
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
        self.folder = Path(context.artifacts["network"])
        self._saved = None
        if self.load_model_fn is None:       # one load serves prompts (its sampler) and sources (its transducer)
            from pipeline.saved import load_saved  # load time: where the model is served
            self._saved = load_saved(self.folder)
            self.model = self._saved.sampler()
        else:
            self.model = self.load_model_fn(self.folder)


    # ---- inference
    def _rows(self, model_input, params: dict | None) -> list[dict]:
        """The request's rows, checked: :func:`pipeline.generation.requests.parse_requests` with the
        logged defaults. A bad request raises :class:`RequestRejected` (also a ValueError)."""
        try:
            return parse_requests(model_input, params, self.defaults)
        except RequestError as e:
            raise RequestRejected(str(e), error_code=INVALID_PARAMETER_VALUE) from e

    def _deadline(self) -> float:
        return time.monotonic() + MAX_SECONDS

    # The pd.DataFrame hint only tells MLflow not to validate or convert the input itself
    # (lists and dicts are accepted too); a missing hint would warn on every load.
    def predict(self, context, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        """One ``text`` per prompt, all prompts decoded together in one batch."""
        from pipeline.generation.text import generate_texts  # load time: where the model is served
        rows = self._rows(model_input, params)
        if "source" in rows[0]:
            return pd.DataFrame({"text": self._transduce(rows)})
        if self.image_layout is not None:
            return pd.DataFrame({"image": self._images(rows)})
        return pd.DataFrame({"text": generate_texts(self.model, self.tokenizer, rows, self._deadline())})

    @property
    def image_layout(self):
        """The image layout of a model of an image corpus (None for text)."""
        from pipeline.data.image_layout import layout_of  # load time: where the model is served
        return layout_of(self.tokenizer)

    def _images(self, rows: list[dict]) -> list[list[list[int]]]:
        """Each row's image, (height, width) levels as lists: its ``prompt`` names the class (a
        labelled corpus) or is empty, and the whole image is drawn whatever ``max_tokens`` says."""
        from pipeline.errors import SeqlabError  # load time: where the model is served
        from pipeline.generation.images import draw  # load time: where the model is served
        layout = self.image_layout
        try:
            prompts = [layout.prompt(r["prompt"] or None) for r in rows]
        except SeqlabError as e:
            raise RequestRejected(f"prompt: {e}", error_code=INVALID_PARAMETER_VALUE) from None
        images = draw(self.model, layout, prompts, [r["seed"] for r in rows], [r["temperature"] for r in rows],
                      [r["top_k"] for r in rows], [r["top_p"] for r in rows])
        return [image.astype(int).tolist() for image in images]

    def _transduce(self, rows: list[dict]) -> list[str]:
        """Each row's source decoded to its output: ``source<TAB>`` up to the line end, the rows of
        one beam width and length penalty decoded together by the saved model's transducer."""
        from pipeline.data.loss_mask import line_end_id  # load time: where the model is served
        from pipeline.data.pairs import SEPARATOR  # load time: where the model is served
        from pipeline.saved import load_saved  # load time: where the model is served
        if SEPARATOR not in self.tokenizer.tokens:
            raise RequestRejected("source: this model was not trained on paired data (source<TAB>target "
                                  "examples); send prompts to continue instead", error_code=INVALID_PARAMETER_VALUE)
        self._saved = self._saved or load_saved(self.folder)
        texts = [""] * len(rows)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault((r["beam_width"], r["length_penalty"]), []).append(i)
        for (width, alpha), idx in groups.items():
            longest = max(rows[i]["max_tokens"] for i in idx)
            if longest == 0:
                continue
            decoder = self._saved.transducer(line_end_id(self.tokenizer), width, longest, alpha, len(idx))
            if decoder is None:
                raise RequestRejected(f"beam_width: {width}; this model decodes greedily only: expected 1",
                                      error_code=INVALID_PARAMETER_VALUE)
            outputs = decoder.decode([self.tokenizer.encode(rows[i]["source"] + SEPARATOR) for i in idx])
            for i, ids in zip(idx, outputs):
                texts[i] = self.tokenizer.decode(ids[:rows[i]["max_tokens"]])
        return texts

    def predict_stream(self, context, model_input, params: dict | None = None):
        """The text of one prompt as it is generated: an iterator of strings."""
        from pipeline.generation.text import stream_texts  # load time: where the model is served
        rows = self._rows(model_input, params)
        if "source" in rows[0]:
            yield from self._transduce(rows)
            return
        if len(rows) != 1:
            raise RequestRejected(f"input: {len(rows)} prompts; predict_stream takes one",
                                  error_code=INVALID_PARAMETER_VALUE)
        if self.image_layout is not None:
            raise RequestRejected("a model of images draws whole images: call predict (an image per prompt, "
                                  "as arrays of levels)", error_code=INVALID_PARAMETER_VALUE)
        for deltas in stream_texts(self.model, self.tokenizer, rows, self._deadline()):
            if deltas[0]:
                yield deltas[0]


def open_text_generator(model: str, vocab: Path) -> "TextGenerator":
    """The loaded :class:`TextGenerator` behind ``model``: a registered model (``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``), a run's (``runs:/ID/generator``), a logged model folder (``MLmodel``),
    or a saved model folder (``models/<arch>``) with the vocabulary ``vocab``. SeqlabError otherwise."""
    from types import SimpleNamespace

    from pipeline.errors import SeqlabError

    folder = Path(model)
    if ":/" not in model and not (folder / "MLmodel").is_file():
        if not folder.is_dir():
            raise SeqlabError(f"model {model!r}: no such folder; expected models:/NAME@ALIAS, "
                              "models:/NAME/VERSION, runs:/RUN_ID/generator or a model folder")
        if not vocab.is_file():
            raise SeqlabError(f"--vocab {vocab}: no such file (the vocabulary of {model}; run `make run`)")
        generator = TextGenerator()
        generator.load_context(SimpleNamespace(artifacts={"network": str(folder), "vocab": str(vocab)}))
        return generator

    from pipeline.tracking.store import public_uri, quiet_mlflow, tracking_uri
    quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    try:
        loaded = mlflow.pyfunc.load_model(model)
    except Exception as e:   # MLflow raises several types (MlflowException, OSError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SeqlabError(f"model {model!r} could not be loaded from {public_uri()}: {first}") from None
    generator = loaded.unwrap_python_model()
    if not isinstance(generator, TextGenerator):
        raise SeqlabError(f"model {model!r} is not a seqlab text generator ({type(generator).__name__})")
    return generator


def generator_signature(defaults: dict | None = None, images: bool = False):
    """The settings as inference params (with their defaults) and a ``text`` column out (``images``:
    an ``image`` column of (height, width) levels).

    There is deliberately no input schema: MLflow's column-schema enforcement rejects a plain
    list of prompts (it wants the named ``prompt`` column), and an unnamed one-column schema
    would drop the per-row settings columns. :meth:`TextGenerator._rows` checks the input.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    d = {**DEFAULTS, **(defaults or {})}
    kinds = {"max_tokens": "long", "temperature": "double", "top_k": "long", "top_p": "double",
             "seed": "long", "stop": "string", "beam_width": "long", "length_penalty": "double"}
    return ModelSignature(
        inputs=None,
        outputs=Schema([ColSpec(Array(Array("long")), "image") if images else ColSpec("string", "text")]),
        params=ParamSchema([ParamSpec(k, kinds[k], _TYPES[k](d[k])) for k in SETTINGS]),
    )


class _DropMessages:
    """Logging filter that drops records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str):
        self.prefixes = prefixes

    def filter(self, record) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def shipped_code(model_cfg=None) -> list[Path]:
    """The source shipped with a logged generator: the ``pipeline`` package, and the source of a
    family from the user's own code (``model_cfg``: a network's parameters; None for the n-gram)."""
    from pipeline.models.catalog import code_paths
    return [Path(PACKAGE)] + (code_paths(model_cfg) if model_cfg else [])


def log_generator(network_folder, vocab_path, model_cfg=None, name: str = "generator", *,
                  defaults: dict | None = None, registered_name: str | None = None,
                  python_model: TextGenerator | None = None):
    """Log the text-generator pyfunc in the active run; returns MLflow's ``ModelInfo``.

    ``network_folder``: a saved model folder (any kind ``pipeline.saved`` loads); ``vocab_path``:
    the ``vocab.json``; ``model_cfg``: a network's parameters (``ModelParams``), which say what
    source its family needs besides ``pipeline/`` (None for the n-gram). ``defaults`` override the sampler defaults (:data:`DEFAULTS`);
    they become the params' defaults in the signature. ``python_model`` replaces the pyfunc
    (tests). ``registered_name`` also registers it. The serving example (one greedy token of
    "The ") is saved with it, without MLflow's in-process check (:mod:`pipeline.tracking.flavors`).
    """
    import logging

    import mlflow
    from mlflow.models import Model

    from pipeline.tracking.flavors import NO_SERVING_CHECK, unchecked_flavor
    from pipeline.tracking.requirements import pip_requirements
    from pipeline.tracking.store import quiet_mlflow

    quiet_mlflow()
    if mlflow.active_run() is None:
        raise RuntimeError("log_generator needs an active MLflow run")
    from pipeline.data.image_layout import layout_of
    from pipeline.data.tokenizers import load_tokenizer

    python_model = python_model or TextGenerator(defaults)
    layout = layout_of(load_tokenizer(Path(vocab_path)))
    # One short greedy token (an image model: one image of its first class): MLflow saves it as the
    # serving example (the UI shows it).
    example = pd.DataFrame({"prompt": [(layout.labels or [""])[0] if layout else "The "], "max_tokens": [1],
                            "temperature": [0.0], "seed": [0]})
    # The pickled object holds only `defaults` (the class is pickled by reference and shipped as
    # code), so MLflow's generic CloudPickle warning is noise here, as is the INFO line.
    pickle_note = _DropMessages("Passing a Python object as `python_model`",
                                "Validating input example against model signature")
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    pyfunc_logger.addFilter(pickle_note)
    try:
        return Model.log(
            artifact_path=None,
            name=name,
            flavor=unchecked_flavor(mlflow.pyfunc.__name__, mlflow.pyfunc.save_model),
            flavor_name="pyfunc.CustomPythonModel",       # what mlflow.pyfunc.log_model records for it
            python_model=python_model,
            artifacts={"network": str(network_folder), "vocab": str(vocab_path)},
            code_paths=[str(p) for p in shipped_code(model_cfg)],
            signature=generator_signature(python_model.defaults, images=layout is not None),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_name,
            **NO_SERVING_CHECK,
        )
    finally:
        pyfunc_logger.removeFilter(pickle_note)

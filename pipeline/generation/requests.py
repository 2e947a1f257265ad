"""Parse and validate a text-generation request: the prompts and sampler settings the served pyfunc
(:class:`pipeline.tracking.pyfunc.TextGenerator`) generates from.

A request is its input (a DataFrame, a dict of columns, in which a scalar is every row's value, a
list of prompt strings or of row dicts, one string, a numpy array or a pandas Series) with a
``prompt`` column (or, for a model of paired data, a ``source`` column: each source is decoded to
its output, see :mod:`pipeline.scoring.transduction`) and optional per-row settings columns, plus
inference ``params`` with the same settings. A per-row value wins over a
param, a param over the logged ``defaults``. In a per-row column an empty cell (None, or NaN, which
is how pandas marks a value a row left out) means "not set for this row"; in ``params`` None means
"not given" (and NaN is an error).

The limits, so that no request can run for ever or eat the server:

- ``prompt``: a string of at most :data:`MAX_PROMPT_CHARS` characters (one per row, 1 to
  :data:`MAX_ROWS` rows per request);
- ``max_tokens``: an integer from 0 to :data:`MAX_TOKENS` (per row);
- ``temperature``: a finite number from 0 (greedy) to :data:`MAX_TEMPERATURE`;
- ``top_k``: an integer >= 0 (0: off);
- ``top_p``: a number > 0 and <= 1 (1: off);
- ``seed``: -1 (fresh randomness on every request) or an integer from 0 to :data:`MAX_SEED`;
- ``stop``: a string of at most :data:`MAX_STOP_CHARS` characters ("" : none); a row's text ends
  before its first occurrence;
- ``beam_width`` (sources only): an integer from 1 (greedy) to :data:`MAX_BEAM`;
- ``length_penalty`` (sources only): GNMT's alpha, a number from 0 to :data:`MAX_LENGTH_PENALTY`.

A request's generation stops after :data:`MAX_SECONDS` with the text it has (a bounded answer
before the server's own timeout abandons the client while the work goes on).

Integer settings accept integral floats (``3.0``: pandas turns an integer column with an empty cell
into floats) but not ``2.5``; booleans and strings are never numbers. Anything else raises
:class:`RequestError`, whose one-line message names the field, the row when it is per-row, the value
and what was expected.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import numpy as np
import pandas as pd

MAX_TOKENS = 2048            # tokens generated per row, at most
MAX_PROMPT_CHARS = 65536     # characters of one prompt, at most
MAX_ROWS = 64                # prompts per request, at most
MAX_TEMPERATURE = 100.0
MAX_SEED = 2**31 - 1
MAX_STOP_CHARS = 256
MAX_BEAM = 16               # beams per source, at most
MAX_LENGTH_PENALTY = 4.0
LENGTH_PENALTY = 0.6          # GNMT's alpha where nothing else is set (``eval.length_penalty`` sets a run's)
MAX_SECONDS = 50.0           # generation stops here and returns what it has: under MLflow's 60 s server timeout

SETTINGS = ("max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "beam_width", "length_penalty")
COLUMNS = ("prompt", "source") + SETTINGS

# what each setting accepts, as the error messages say it
EXPECTED = {
    "max_tokens": f"an integer from 0 to {MAX_TOKENS}",
    "temperature": f"a finite number from 0 to {MAX_TEMPERATURE:g}",
    "top_k": "an integer >= 0",
    "top_p": "a number > 0 and <= 1",
    "seed": f"-1 (fresh randomness) or an integer from 0 to {MAX_SEED}",
    "stop": f"a string of at most {MAX_STOP_CHARS} characters ('' for none)",
    "beam_width": f"an integer from 1 (greedy) to {MAX_BEAM}",
    "length_penalty": f"a number from 0 to {MAX_LENGTH_PENALTY:g}",
}
_INTEGER = {"max_tokens", "top_k", "seed", "beam_width"}
_IN_RANGE = {
    "max_tokens": lambda v: 0 <= v <= MAX_TOKENS,
    "temperature": lambda v: 0 <= v <= MAX_TEMPERATURE,
    "top_k": lambda v: v >= 0,
    "top_p": lambda v: 0 < v <= 1,
    "seed": lambda v: v == -1 or 0 <= v <= MAX_SEED,
    "beam_width": lambda v: 1 <= v <= MAX_BEAM,
    "length_penalty": lambda v: 0 <= v <= MAX_LENGTH_PENALTY,
}


class RequestError(ValueError):
    """A request the generator will not serve; the message is one line meant for the client."""


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a request may carry a megabyte in a field)."""
    try:
        text = repr(value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value)
    except ValueError:   # an int of more than sys.get_int_max_str_digits() digits
        text = f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _empty(value: Any) -> bool:
    """An empty cell: None, pandas' NA/NaT, or a float NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) \
        and math.isnan(float(value))


def check_setting(key: str, value: Any, where: str = "") -> int | float | str:
    """``value`` as the Python int/float/str that setting ``key`` takes; RequestError if it is not one.

    ``where`` says where the value came from, for the message: "" (params), "row 3", "logged
    default".
    """
    field = f"{key} ({where})" if where else key
    expected = EXPECTED[key]
    if key == "stop":
        if not isinstance(value, str) or len(value) > MAX_STOP_CHARS:
            raise RequestError(f"{field}: {_show(value)}; expected {expected}")
        return str(value)
    if isinstance(value, (bool, np.bool_)):   # bool is an Integral, but not a number here
        raise RequestError(f"{field}: {_show(value)} is a boolean; expected {expected}")
    if not isinstance(value, numbers.Real):
        raise RequestError(f"{field}: {_show(value)} is not a number; expected {expected}")
    if isinstance(value, numbers.Integral):
        number = int(value)          # exact, however large: no float overflow
    else:
        number = float(value)
        if not math.isfinite(number):
            raise RequestError(f"{field}: {_show(value)} is not finite; expected {expected}")
        if key in _INTEGER:
            if not number.is_integer():
                raise RequestError(f"{field}: {_show(value)} is not an integer; expected {expected}")
            number = int(number)
    if not _IN_RANGE[key](number):
        raise RequestError(f"{field}: {_show(value)} is out of range; expected {expected}")
    if key not in _INTEGER:
        number = float(number)
    return number


def check_params(params: Mapping | None) -> dict:
    """The settings ``params`` gives, checked (:func:`check_setting`): None values are left out
    (NaN is an error here), an unknown name is an error."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise RequestError(f"params: a {type(params).__name__}; expected a mapping of settings")
    unknown = [k for k in params if k not in SETTINGS]
    if unknown:
        raise RequestError(f"params: unknown setting {_show(unknown[0])}; known: {', '.join(SETTINGS)}")
    return {k: check_setting(k, v) for k, v in params.items() if v is not None}


def _frame(model_input):
    """The request's input as a DataFrame, in every form the generator accepts."""
    if isinstance(model_input, bytes):
        try:
            model_input = model_input.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("prompt: bytes that are not UTF-8; expected a string") from None
    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, np.ndarray):   # JSON {"inputs": [...]} arrives as an array
        model_input = model_input.tolist() if model_input.ndim else [model_input.item()]
    if isinstance(model_input, pd.Series):
        model_input = model_input.to_frame()
    if isinstance(model_input, (list, tuple)) and len(model_input) > MAX_ROWS:
        raise _too_many(len(model_input))
    if isinstance(model_input, Mapping):
        model_input = _columns(model_input)
    if isinstance(model_input, (list, tuple)):
        model_input = pd.DataFrame([r if isinstance(r, Mapping) else {"prompt": r} for r in model_input])
    if not isinstance(model_input, pd.DataFrame):
        raise RequestError(f"input: a {type(model_input).__name__}; expected a DataFrame, a dict of "
                           "columns, a list of prompts or of rows, or a string")
    return model_input


def _columns(columns: Mapping) -> pd.DataFrame:
    """A dict-of-columns input as a DataFrame: sequences (lists, tuples, arrays, Series) are columns
    of one common length; a scalar is every row's value (all scalars: one row)."""
    def sequence(value):
        if isinstance(value, np.ndarray):
            return value.tolist() if value.ndim else None
        return list(value) if isinstance(value, (list, tuple, pd.Series)) else None

    seqs = {k: sequence(v) for k, v in columns.items()}
    lengths = {len(v) for v in seqs.values() if v is not None}
    if len(lengths) > 1:
        raise RequestError("input: the columns have different lengths ("
                           + ", ".join(f"{k}: {len(v)}" for k, v in seqs.items() if v is not None) + ")")
    rows = lengths.pop() if lengths else 1
    if rows > MAX_ROWS:
        raise _too_many(rows)
    return pd.DataFrame({k: seqs[k] if seqs[k] is not None else
                         [v.item() if isinstance(v, np.ndarray) else v] * rows
                         for k, v in columns.items()})


def _too_many(rows: int) -> RequestError:
    return RequestError(f"input: {rows} prompts; expected 1 to {MAX_ROWS} per request")


def _prompt(value: Any, row: int, key: str = "prompt") -> str:
    if _empty(value):
        raise RequestError(f"{key} (row {row}): missing; expected a string")
    if not isinstance(value, str):
        raise RequestError(f"{key} (row {row}): {_show(value)} is not a string "
                           f"({type(value).__name__}); expected a string")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(f"{key} (row {row}): {len(value)} characters; expected at most "
                           f"{MAX_PROMPT_CHARS}")
    return str(value)


def parse_requests(model_input, params: Mapping | None, defaults: Mapping) -> list[dict]:
    """The rows to generate: one dict ``{prompt, max_tokens, temperature, top_k, top_p, seed, stop,
    beam_width, length_penalty}`` (Python str, int and float values) per prompt, in order; with a
    ``source`` column instead of ``prompt``, ``source`` is each row's key instead.

    ``model_input``: see the module docstring; a DataFrame with no ``prompt`` column but exactly one
    column (not a known one) takes that column as the prompts. ``params``: the settings for every row (None: none);
    ``defaults``: a value for every setting. Raises :class:`RequestError`.
    """
    defaults = {"stop": "", "beam_width": 1, "length_penalty": LENGTH_PENALTY, **defaults}
    base = {**{k: check_setting(k, defaults.get(k), "logged default") for k in SETTINGS},
            **check_params(params)}

    frame = _frame(model_input)
    if len(frame) == 0:
        raise RequestError(f"input: no prompts; expected 1 to {MAX_ROWS} per request")
    if "prompt" not in frame.columns and frame.shape[1] == 1 and frame.columns[0] not in COLUMNS:
        frame = frame.rename(columns={frame.columns[0]: "prompt"})
    unknown = [c for c in frame.columns if c not in COLUMNS]
    if unknown:
        raise RequestError(f"input: unknown column {_show(unknown[0])}; known: {', '.join(COLUMNS)}")
    if "prompt" in frame.columns and "source" in frame.columns:
        raise RequestError("input: both a 'prompt' and a 'source' column; expected prompts to continue or "
                           "sources to decode, not both")
    if "prompt" not in frame.columns and "source" not in frame.columns:
        raise RequestError(f"input: no 'prompt' (or 'source') column; known: {', '.join(COLUMNS)}")
    text = "prompt" if "prompt" in frame.columns else "source"
    if len(frame) > MAX_ROWS:
        raise _too_many(len(frame))

    rows = []
    for i, record in enumerate(frame.to_dict(orient="records")):
        row = {text: _prompt(record[text], i, text)}
        for key in SETTINGS:
            value = record.get(key)
            row[key] = base[key] if _empty(value) else check_setting(key, value, f"row {i}")
        rows.append(row)
    return rows

"""pipeline.generation.requests: parsing and validating a generation request (fast; no server, no model).

tests/test_serving.py sends the same kinds of request to a real `mlflow models serve`.
"""
from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest

from pipeline.tracking import pyfunc
from pipeline.generation.requests import (MAX_PROMPT_CHARS, MAX_ROWS, MAX_TOKENS, RequestError,
                                        check_setting, parse_requests)

DEFAULTS = {"max_tokens": 200, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": -1, "stop": "",
            "beam_width": 1, "length_penalty": 0.6}


def parse(model_input, params=None, defaults=DEFAULTS):
    return parse_requests(model_input, params, defaults)


def row(prompt, **settings):
    return {"prompt": prompt, **DEFAULTS, **settings}


# --------------------------------------------------------------------------- accepted forms
@pytest.mark.parametrize("model_input", [
    pytest.param(["a", "b"], id="list of prompts"),
    pytest.param(("a", "b"), id="tuple of prompts"),
    pytest.param(np.array(["a", "b"]), id="numpy array ({'inputs': [...]})"),
    pytest.param(pd.Series(["a", "b"]), id="unnamed Series"),
    pytest.param(pd.Series(["a", "b"], name="prompt"), id="Series named prompt"),
    pytest.param({"prompt": ["a", "b"]}, id="dict of columns"),
    pytest.param({"prompt": np.array(["a", "b"])}, id="dict of arrays"),
    pytest.param([{"prompt": "a"}, {"prompt": "b"}], id="list of rows"),
    pytest.param(pd.DataFrame({"prompt": ["a", "b"]}), id="DataFrame"),
    pytest.param(pd.DataFrame({"text": ["a", "b"]}), id="one unnamed column is the prompts"),
])
def test_forms_of_input(model_input):
    assert parse(model_input) == [row("a"), row("b")]


@pytest.mark.parametrize("model_input", ["a", b"a", np.array("a"), {"prompt": "a"},
                                         {"prompt": np.array("a")}])
def test_one_prompt(model_input):
    assert parse(model_input) == [row("a")]


def test_row_beats_param_beats_default():
    frame = pd.DataFrame({"prompt": ["x", "y", "z"], "seed": [1, None, 3],
                          "max_tokens": [2, 6, None], "top_k": [None, None, 4]})
    rows = parse(frame, {"top_k": 9, "temperature": 0.5})
    assert rows == [row("x", seed=1, max_tokens=2, top_k=9, temperature=0.5),
                    row("y", seed=-1, max_tokens=6, top_k=9, temperature=0.5),
                    row("z", seed=3, max_tokens=200, top_k=4, temperature=0.5)]
    # an integer column with an empty cell is float in pandas; the values come back as Python ints
    assert all(type(r[k]) is int for r in rows for k in ("max_tokens", "top_k", "seed"))
    assert all(type(r[k]) is float for r in rows for k in ("temperature", "top_p"))


def test_none_param_is_not_given_and_numpy_scalars_are_numbers():
    assert parse(["a"], {"max_tokens": None, "top_k": np.int64(3), "top_p": np.float32(0.5)}) == \
        [row("a", top_k=3, top_p=0.5)]


def test_dict_of_columns_with_scalar_settings():
    """A scalar in a dict of columns is every row's value ({"inputs": {"prompt": [...], "seed": 1}})."""
    assert parse({"prompt": ["a", "b"], "max_tokens": 1}) == [row("a", max_tokens=1), row("b", max_tokens=1)]
    assert parse({"prompt": np.array(["a", "b"]), "seed": np.array(3)}) == \
        [row("a", seed=3), row("b", seed=3)]
    assert parse({"prompt": "z", "max_tokens": 1}) == [row("z", max_tokens=1)]
    with pytest.raises(RequestError,
                       match=r"^input: the columns have different lengths \(prompt: 2, max_tokens: 1\)$"):
        parse({"prompt": ["a", "b"], "max_tokens": [1]})


# --------------------------------------------------------------------------- the limits
@pytest.mark.parametrize("key, edge", [
    ("max_tokens", 0), ("max_tokens", MAX_TOKENS), ("max_tokens", 7.0), ("temperature", 0),
    ("temperature", 100), ("top_k", 0), ("top_k", 10**6), ("top_p", 1), ("top_p", 1e-9),
    ("seed", -1), ("seed", 0), ("seed", 2**31 - 1),
])
def test_edges_accepted(key, edge):
    (got,) = parse(["a"], {key: edge})
    assert got[key] == edge


def test_caps_on_rows_and_prompt_length():
    assert len(parse(["a"] * MAX_ROWS)) == MAX_ROWS
    assert parse(["x" * MAX_PROMPT_CHARS])[0]["prompt"] == "x" * MAX_PROMPT_CHARS
    assert parse([""])[0]["prompt"] == ""                              # an empty prompt is a prompt


# (case, input, params, the message: exact, or a prefix when it ends with "...")
BAD = [
    ("max_tokens -1", ["a"], {"max_tokens": -1},
     f"max_tokens: -1 is out of range; expected an integer from 0 to {MAX_TOKENS}"),
    ("max_tokens 10**9", ["a"], {"max_tokens": 10**9},
     f"max_tokens: 1000000000 is out of range; expected an integer from 0 to {MAX_TOKENS}"),
    ("max_tokens cap + 1", ["a"], {"max_tokens": MAX_TOKENS + 1},
     f"max_tokens: {MAX_TOKENS + 1} is out of range..."),
    ("max_tokens 2.5", ["a"], {"max_tokens": 2.5},
     f"max_tokens: 2.5 is not an integer; expected an integer from 0 to {MAX_TOKENS}"),
    ("max_tokens True", ["a"], {"max_tokens": True}, "max_tokens: True is a boolean; expected..."),
    ("max_tokens numpy bool", ["a"], {"max_tokens": np.bool_(True)}, "max_tokens: True is a boolean..."),
    ("max_tokens '5'", ["a"], {"max_tokens": "5"}, "max_tokens: '5' is not a number..."),
    ("max_tokens inf", ["a"], {"max_tokens": float("inf")}, "max_tokens: inf is not finite..."),
    ("temperature -0.5", ["a"], {"temperature": -0.5},
     "temperature: -0.5 is out of range; expected a finite number from 0 to 100"),
    ("temperature 101", ["a"], {"temperature": 101}, "temperature: 101 is out of range..."),
    ("temperature 'abc'", ["a"], {"temperature": "abc"},
     "temperature: 'abc' is not a number; expected a finite number from 0 to 100"),
    ("temperature NaN", ["a"], {"temperature": float("nan")}, "temperature: nan is not finite..."),
    ("temperature huge int", ["a"], {"temperature": 10**400}, "temperature: 1000000000..."),
    ("temperature list", ["a"], {"temperature": [1.0]}, "temperature: [1.0] is not a number..."),
    ("top_k -1", ["a"], {"top_k": -1}, "top_k: -1 is out of range; expected an integer >= 0"),
    ("top_k 1.5", ["a"], {"top_k": 1.5}, "top_k: 1.5 is not an integer..."),
    ("top_p 0", ["a"], {"top_p": 0}, "top_p: 0 is out of range; expected a number > 0 and <= 1"),
    ("top_p 1.5", ["a"], {"top_p": 1.5}, "top_p: 1.5 is out of range..."),
    ("seed -2", ["a"], {"seed": -2},
     "seed: -2 is out of range; expected -1 (fresh randomness) or an integer from 0 to 2147483647"),
    ("seed 2**31", ["a"], {"seed": 2**31}, "seed: 2147483648 is out of range..."),
    ("unknown param", ["a"], {"max_token": 5},
     "params: unknown setting 'max_token'; known: max_tokens, temperature, top_k, top_p, seed, stop, "
     "beam_width, length_penalty"),
    ("params not a dict", ["a"], [("seed", 1)], "params: a list; expected a mapping of settings"),
    ("per-row value", [{"prompt": "a"}, {"prompt": "b", "temperature": "hot"}], None,
     "temperature (row 1): 'hot' is not a number; expected a finite number from 0 to 100"),
    ("per-row non-integral", pd.DataFrame({"prompt": ["a"], "max_tokens": [2.5]}), None,
     "max_tokens (row 0): 2.5 is not an integer..."),
    ("per-row inf", pd.DataFrame({"prompt": ["a"], "top_p": [np.inf]}), None,
     "top_p (row 0): inf is not finite..."),
    ("unknown column", [{"prompt": "a", "temprature": 0.5}], None,
     "input: unknown column 'temprature'; known: prompt, source, max_tokens, temperature, top_k, top_p, seed, "
     "stop, beam_width, length_penalty"),
    ("no prompt column", pd.DataFrame({"a": ["x"], "b": ["y"]}), None, "input: unknown column 'a'..."),
    ("only a setting column", pd.DataFrame({"seed": [1]}), None,
     "input: no 'prompt' (or 'source') column; known: prompt, source, max_tokens, temperature, top_k, top_p, "
     "seed, stop, beam_width, length_penalty"),
    ("missing prompt", [{"prompt": "a"}, {"seed": 1}], None, "prompt (row 1): missing; expected a string"),
    ("None prompt", [None], None, "prompt (row 0): missing; expected a string"),
    ("number as prompt", [5], None, "prompt (row 0): 5 is not a string (int); expected a string"),
    ("list as prompt", [["a", "b"]], None, "prompt (row 0): ['a', 'b'] is not a string (list)..."),
    ("bytes not UTF-8", b"\xff", None, "prompt: bytes that are not UTF-8; expected a string"),
    ("prompt too long", ["a", "x" * (MAX_PROMPT_CHARS + 1)], None,
     f"prompt (row 1): {MAX_PROMPT_CHARS + 1} characters; expected at most {MAX_PROMPT_CHARS}"),
    ("empty list", [], None, f"input: no prompts; expected 1 to {MAX_ROWS} per request"),
    ("empty frame", pd.DataFrame({"prompt": []}), None, "input: no prompts..."),
    ("empty array", np.array([]), None, "input: no prompts..."),
    ("too many rows", ["a"] * (MAX_ROWS + 1), None,
     f"input: {MAX_ROWS + 1} prompts; expected 1 to {MAX_ROWS} per request"),
    ("too many rows (frame)", pd.DataFrame({"prompt": ["a"] * (MAX_ROWS + 1)}), None, "input: 65 prompts..."),
    ("too many rows (columns)", {"prompt": ["a"] * (MAX_ROWS + 1)}, None, "input: 65 prompts..."),
    ("temperature 5000-digit int", ["a"], {"temperature": 10**5000},
     "temperature: <a int too long to show> is out..."),
    ("stop not a string", ["a"], {"stop": 3}, "stop: 3; expected a string of at most 256 characters ('' for none)"),
    ("stop too long", ["a"], {"stop": "x" * 257}, "stop: 'xxxx..."),
    ("not an input", 3.5, None, "input: a float; expected a DataFrame, a dict of columns, ..."),
]


@pytest.mark.parametrize("model_input, params, message", [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_bad_request(model_input, params, message):
    with pytest.raises(RequestError) as err:
        parse(model_input, params)
    got = str(err.value)
    if message.endswith("..."):
        assert got.startswith(message[:-3]), got
    else:
        assert got == message
    assert "\n" not in got and len(got) < 200                    # one line, whatever the value's size


def test_request_error_is_a_value_error_and_values_are_cut():
    with pytest.raises(ValueError, match=r"^temperature: 'xxx.*\.\.\. is not a number"):
        parse(["a"], {"temperature": "x" * 10**6})


def test_bad_logged_default_says_so():
    with pytest.raises(RequestError, match=r"^max_tokens \(logged default\): 5000 is out of range"):
        parse(["a"], None, {**DEFAULTS, "max_tokens": 5000})
    assert parse(["a"], {"max_tokens": 5}, DEFAULTS)[0]["max_tokens"] == 5


def test_check_setting_returns_python_numbers():
    assert check_setting("seed", np.int32(4)) == 4 and type(check_setting("seed", np.int32(4))) is int
    assert type(check_setting("temperature", 1)) is float
    assert type(check_setting("max_tokens", 3.0)) is int


# --------------------------------------------------------------------------- the pyfunc's side
def test_text_generator_rows_raise_request_rejected():
    gen = pyfunc.TextGenerator({"max_tokens": 4})
    assert gen._rows(["a"], {"seed": 2}) == [row("a", max_tokens=4, seed=2)]
    with pytest.raises(pyfunc.RequestRejected) as err:
        gen._rows(["a"], {"max_tokens": -1})
    e = err.value
    assert isinstance(e, ValueError) and isinstance(e.__cause__, RequestError)
    assert e.error_code == "INVALID_PARAMETER_VALUE" and e.get_http_status_code() == 400
    assert json.loads(e.serialize_as_json())["message"] == \
        f"max_tokens: -1 is out of range; expected an integer from 0 to {MAX_TOKENS}"


def test_scoring_server_rewrites_messages_but_not_request_rejected():
    """Why RequestRejected keeps its message: MLflow's scoring server (3.17, ``invocations``)
    rewrites the message of an MlflowException raised in predict to quote the whole input. If this
    test starts failing on its first assertion, MLflow stopped doing that and the guard can go."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.pyfunc import scoring_server

    def server_message(error):
        class Model:
            metadata = types.SimpleNamespace()

            def predict(self, data, params=None):
                raise error

        body = json.dumps({"inputs": ["p" * 5000], "params": {"max_tokens": -1}})
        with pytest.raises(MlflowException) as err:
            scoring_server.invocations(body, "application/json", Model(), None)
        return json.loads(err.value.serialize_as_json())["message"]

    plain = server_message(MlflowException("max_tokens: bad", error_code=INVALID_PARAMETER_VALUE))
    assert plain.startswith("Failed to predict data") and "\n" in plain and "p" * 5000 in plain
    assert server_message(pyfunc.RequestRejected("max_tokens: bad", error_code=INVALID_PARAMETER_VALUE)) \
        == "max_tokens: bad"


def test_sources_take_the_transduction_settings_and_never_mix_with_prompts():
    rows = parse({"source": ["3 March 2021", "1.2.1999"], "beam_width": [4, 1]}, {"length_penalty": 1.0})
    assert rows == [{"source": "3 March 2021", **DEFAULTS, "beam_width": 4, "length_penalty": 1.0},
                    {"source": "1.2.1999", **DEFAULTS, "length_penalty": 1.0}]
    assert parse(pd.DataFrame({"source": ["x"]}))[0]["source"] == "x"      # one column: still the sources
    for bad, message in [({"source": ["x"], "prompt": ["y"]}, "both a 'prompt' and a 'source' column"),
                         ({"source": ["x"], "beam_width": [17]}, r"beam_width \(row 0\): 17 is out of range; "
                                                                  "expected an integer from 1 \\(greedy\\) to 16"),
                         ({"source": ["x"], "beam_width": [2.5]}, "beam_width \\(row 0\\): 2.5 is not an integer"),
                         ({"source": [None]}, r"source \(row 0\): missing; expected a string")]:
        with pytest.raises(RequestError, match=message):
            parse(bad)

"""The registered text generator behind a real `mlflow models serve`: good and bad requests.

One tiny network is logged and registered (alias ``champion``) in a temporary sqlite store, and one
scoring server serves ``models:/<name>@champion`` from a folder outside the repo for the whole
module. Every bad request must be answered quickly with a 4xx whose JSON ``message`` names the field
(one line when it is seqlab's check, :mod:`pipeline.generation.requests`, that answers) and no Python
traceback, or, where stated, with a bounded 200; and the server must still answer a good request
after each one.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.generation.requests import MAX_PROMPT_CHARS, MAX_ROWS, MAX_TOKENS

BIN = Path(sys.executable).parent
NAME = "seqlab-serving-test"
TEXT = "The quick brown fox jumps over the lazy dog\n" * 5
GOOD = {"inputs": ["The "], "params": {"max_tokens": 5, "seed": 1}}
START_TIMEOUT_S = 120
ANSWER_WITHIN_S = 15        # a bad request is rejected before any generation: well under this


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End the server's whole process group (`mlflow models serve` runs uvicorn as a child, and a
    busy uvicorn can outlive its parent): SIGTERM, then SIGKILL, each with a bounded wait."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()                      # reap our own child
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URL of a scoring server for a freshly registered tiny LSTM generator, once /ping answers."""
    import mlflow

    from pipeline.data.tokenizers import learn_tokenizer
    from pipeline.models import build_model
    from pipeline.models.network import save_network
    from pipeline.tracking import pyfunc, runs, store
    from tests.conftest import tracking_store
    from tests.tiny_models import tiny_cfg

    folder = tmp_path_factory.mktemp("serving")
    with tracking_store(folder) as uri:
        tok = learn_tokenizer("char", TEXT, 40)
        tok.save(folder / "vocab.json")
        cfg = tiny_cfg("lstm", layers=1)
        save_network(folder / "net", build_model(cfg, tok.vocab_size, 32), cfg, 32, tok.vocab_size)
        with runs.model_run("seqlab-serving", "lstm", "train", "hashServe"):
            info = pyfunc.log_generator(folder / "net", folder / "vocab.json", cfg, registered_name=NAME)
        store.client().set_registered_model_alias(NAME, "champion", info.registered_model_version)
        assert mlflow.get_tracking_uri() == uri

    served_from = folder / "elsewhere"          # not the repo: the model brings its own code
    served_from.mkdir()
    port = _free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for key in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "PYTHONPATH"):
        env.pop(key, None)
    log_path = folder / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
        cwd=served_from, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else "timed out"
                pytest.fail(f"mlflow models serve {state}:\n" + log_path.read_text(errors="replace"))
            time.sleep(0.3)
        yield {"url": url, "proc": proc, "log": log_path}
    finally:
        _stop(proc)
        log.close()


def post(url: str, body: bytes, timeout: float = 60) -> tuple[int, str, float]:
    """POST ``body`` as JSON to /invocations: (status, response text, seconds)."""
    req = urllib.request.Request(f"{url}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), time.monotonic() - start
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), time.monotonic() - start


def _json(payload) -> bytes:
    return json.dumps(payload).encode()


def _prompts(*prompts, **params) -> bytes:
    return _json({"inputs": list(prompts), "params": params})


def _texts(text: str) -> list[str]:
    return [p["text"] for p in json.loads(text)["predictions"]]


def test_good_request(server):
    status, text, _ = post(server["url"], _json(GOOD))
    assert status == 200, text
    (out,) = _texts(text)
    assert isinstance(out, str) and out
    assert _texts(post(server["url"], _json(GOOD))[1]) == [out]          # seed 1: the same text


# (case, request body, expected status, what the message must contain, whether seqlab's check
# answers: then the message is exactly one line). Where MLflow answers before the model is called
# (the body is not JSON; a param of the wrong type, which the signature's param schema rejects) the
# message is MLflow's: it names the problem but spans lines and quotes the input.
BAD = [
    ("empty body", b"", 400, "valid JSON", False),
    ("malformed JSON", b'{"inputs": [', 400, "valid JSON", False),
    ("max_tokens -1", _prompts("The ", max_tokens=-1), 400,
     f"max_tokens: -1 is out of range; expected an integer from 0 to {MAX_TOKENS}", True),
    ("max_tokens 10**9", _prompts("The ", max_tokens=10**9), 400,
     f"max_tokens: 1000000000 is out of range; expected an integer from 0 to {MAX_TOKENS}", True),
    (f"max_tokens {MAX_TOKENS + 1} in a row", _json({"dataframe_records": [
        {"prompt": "The ", "max_tokens": MAX_TOKENS + 1}]}), 400,
     f"max_tokens (row 0): {MAX_TOKENS + 1} is out of range", True),
    ("negative temperature", _prompts("The ", temperature=-0.5), 400,
     "temperature: -0.5 is out of range; expected a finite number from 0 to 100", True),
    ("temperature NaN", b'{"inputs": ["The "], "params": {"temperature": NaN}}', 400,
     "temperature: nan is not finite", True),
    ("top_p 0", _prompts("The ", top_p=0), 400,
     "top_p: 0.0 is out of range; expected a number > 0 and <= 1", True),
    ("seed -2", _prompts("The ", seed=-2), 400, "seed: -2 is out of range", True),
    ("string temperature (row)", _json({"dataframe_records": [
        {"prompt": "The ", "temperature": "abc", "max_tokens": 3}]}), 400,
     "temperature (row 0): 'abc' is not a number", True),
    ("string temperature (params)", _prompts("The ", temperature="abc"), 400,
     "'temperature': double", False),
    ("max_tokens 2.5 (params)", _prompts("The ", max_tokens=2.5), 400, "'max_tokens': long", False),
    ("unknown column", _json({"dataframe_records": [{"prompt": "The ", "temprature": 0.5}]}), 400,
     "input: unknown column 'temprature'; known: prompt, source, max_tokens, temperature, top_k, top_p, seed",
     True),
    ("row without a prompt", _json({"dataframe_records": [{"prompt": "The "}, {"seed": 1}]}), 400,
     "prompt (row 1): missing; expected a string", True),
    ("number as prompt", _prompts(5, max_tokens=2), 400, "prompt (row 0): 5 is not a string", True),
    ("no rows", _json({"inputs": []}), 400, "input: no prompts", True),
    ("1 MB prompt", _prompts("a" * 10**6, max_tokens=1), 400,
     f"prompt (row 0): 1000000 characters; expected at most {MAX_PROMPT_CHARS}", True),
    (f"{MAX_ROWS + 1} rows", _prompts(*["a"] * (MAX_ROWS + 1), max_tokens=1), 400,
     f"input: {MAX_ROWS + 1} prompts; expected 1 to {MAX_ROWS} per request", True),
]


@pytest.mark.parametrize("body, status, expected, ours",
                         [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_request_is_answered_and_server_keeps_serving(server, body, status, expected, ours):
    got, text, seconds = post(server["url"], body)
    assert got == status, text[:2000]
    assert seconds < ANSWER_WITHIN_S
    error = json.loads(text)
    assert expected in error["message"], error["message"][:2000]
    assert error["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
    assert "stack_trace" not in error and "Traceback" not in text
    if ours:
        assert error["message"].startswith(expected)                   # the field comes first
        assert "\n" not in error["message"] and len(text) < 1000       # one line; the input is not echoed
        assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert post(server["url"], _json(GOOD))[0] == 200, "the server must keep serving"


# Answered 200 on purpose, and bounded.
def test_characters_outside_the_vocabulary(server):
    """The char tokenizer maps unknown characters to <unk>: a normal, bounded answer."""
    status, text, seconds = post(server["url"], _prompts("漢字😀", max_tokens=5, seed=1))
    assert status == 200, text
    (out,) = _texts(text)
    assert isinstance(out, str) and 0 < len(out) <= 5 * len("<unk>") and seconds < ANSWER_WITHIN_S


def test_at_the_caps(server):
    """Requests at every cap are served: MAX_ROWS prompts, a prompt of MAX_PROMPT_CHARS characters,
    MAX_TOKENS tokens."""
    url = server["url"]
    status, text, _ = post(url, _prompts(*["The "] * MAX_ROWS, max_tokens=1, seed=0))
    assert status == 200 and len(_texts(text)) == MAX_ROWS, text[:2000]
    status, text, _ = post(url, _prompts(("fox " * MAX_PROMPT_CHARS)[:MAX_PROMPT_CHARS], max_tokens=1))
    assert status == 200 and len(_texts(text)) == 1, text[:2000]
    status, text, _ = post(url, _prompts("The ", max_tokens=MAX_TOKENS, seed=0))
    assert status == 200, text[:2000]
    (out,) = _texts(text)
    assert MAX_TOKENS <= len(out) <= MAX_TOKENS * len("<unk>")


def test_unknown_param_is_dropped_by_mlflow(server):
    """Pins MLflow's behaviour (3.17, ``_enforce_params_schema``): a param the signature does not
    declare is dropped with a warning in the server's log before the model sees it, so a typo such
    as ``max_token`` is served with the default. (Called in-process without MLflow,
    ``parse_requests`` rejects it: tests/test_requests.py.)"""
    status, text, _ = post(server["url"], _prompts("The ", max_token=3, seed=1, temperature=0.0))
    assert status == 200, text
    assert len(_texts(text)[0]) >= 200        # the logged default max_tokens (200), not 3
    assert "Unrecognized params ['max_token'] are ignored" in server["log"].read_text(errors="replace")


def test_server_still_alive(server):
    assert server["proc"].poll() is None
    assert post(server["url"], _json(GOOD))[0] == 200

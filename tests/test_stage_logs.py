"""Logs a person can read: no CUDA-probe noise from TensorFlow in a stage's output where there is
no GPU, nothing hidden where there is one, and no real error hidden anywhere."""
import os
import re
import subprocess
import sys
import time

import pytest

from pipeline.stage import (QuietTensorFlowImport, drop_pattern, filtered_stderr, nvidia_gpu_possible,
                                 quiet_tensorflow, startup_filter_level)
from tests.conftest import ROOT
from tests.repo_copy import tool_env

NOISE = re.compile(r"cuInit|cuda_executor|cuda_platform|cudart_stub|Unable to register|absl::InitializeLog"
                   r"|oneDNN custom operations|^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]", re.MULTILINE)

# Every stage module imports without TensorFlow (so run_stage's hook comes first), then a stage
# main that imports Keras and TensorFlow and uses a device, through run_stage.
STAGE = """
import importlib, pkgutil, sys
import stages
for m in pkgutil.iter_modules(stages.__path__):
    importlib.import_module(f"stages.{m.name}")
    assert "tensorflow" not in sys.modules, f"stages.{m.name} imports TensorFlow before run_stage can quiet it"
from pipeline.stage import run_stage

def main(argv):
    import keras
    import tensorflow as tf
    print(len(tf.config.list_physical_devices("CPU")), float(keras.ops.sum(keras.ops.ones((3,)))))

run_stage(main, tracked=False)
"""


def test_a_stage_that_uses_tensorflow_writes_no_cuda_probe_lines():
    env = tool_env()
    if nvidia_gpu_possible():       # the GPUs hidden, as a user may: the same noise, the same filter
        env["CUDA_VISIBLE_DEVICES"] = ""
    p = subprocess.run([sys.executable, "-c", STAGE], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.split() == ["1", "3.0"]
    assert not NOISE.search(p.stderr), p.stderr


@pytest.mark.parametrize("environ, gpu, expected", [
    ({"TF_CPP_MIN_LOG_LEVEL": "2"}, True, None),                                  # a GPU: nothing changes
    ({"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "1"}, True, None),
    ({"TF_CPP_MIN_LOG_LEVEL": "2"}, False, 2),                                    # none: filtered
    ({"TF_CPP_MIN_LOG_LEVEL": "1", "CUDA_VISIBLE_DEVICES": "1"}, False, 1),
    ({"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}, True, 2),         # the user hid them
    ({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}, True, 3),
    ({"TF_CPP_MIN_LOG_LEVEL": "0"}, False, None),                                 # every line asked for
    ({}, False, None),
])
def test_the_filter_decision(environ, gpu, expected):
    before = dict(environ)
    assert startup_filter_level(environ, gpu) == expected
    assert environ == before


@pytest.mark.parametrize("gpu", [True, False])
@pytest.mark.parametrize("visible", [None, "", "0,1"])
def test_quiet_tensorflow_sets_only_the_log_level(monkeypatch, gpu, visible):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)    # as before any import of it
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    finder = quiet_tensorflow(environ, lambda: gpu)
    try:
        assert environ == {"TF_CPP_MIN_LOG_LEVEL": "2"} | ({} if visible is None else {"CUDA_VISIBLE_DEVICES": visible})
        assert (finder is not None) == (not gpu or visible == "")
        assert (finder in sys.meta_path) == (finder is not None)
        assert quiet_tensorflow(environ, lambda: gpu) is None                # once
    finally:
        if finder is not None:
            finder.remove()
    assert not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path)


def test_quiet_tensorflow_keeps_the_users_log_level():
    environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert quiet_tensorflow(environ, lambda: False) is None
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="device nodes are Linux's")
def test_what_counts_as_a_gpu_machine(tmp_path):
    def possible(search_path="", lib_path=""):
        return nvidia_gpu_possible(tmp_path, search_path, lib_path)

    (tmp_path / "dev").mkdir()
    stubs = tmp_path / "usr/local/cuda/lib64/stubs"       # a CUDA toolkit alone: no GPU
    stubs.mkdir(parents=True)
    (stubs / "libcuda.so").touch()
    assert not possible(lib_path=str(stubs))
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "nvidia-smi").touch(mode=0o755)
    assert possible(search_path=str(bin_))
    lib = tmp_path / "usr/lib64"
    lib.mkdir(parents=True)
    (lib / "libcuda.so.1").touch()
    assert possible()
    (lib / "libcuda.so.1").unlink()
    for node in ("dev/nvidia0", "dev/nvidiactl", "dev/dxg", "proc/driver/nvidia"):
        (tmp_path / node).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / node).touch()
        assert possible(), node
        (tmp_path / node).unlink()
    assert not possible()


LINES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796479645.336800    3815 port.cc:153] oneDNN custom operations are on.\n",
    b"python: a warning\n",
    b"I0000 00:00:1796479645.337156    3815 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n",
    b"W0000 00:00:1796479645.337156    3815 some.cc:31] a warning from C++\n",
    b"E0000 00:00:1796479658.639723    3881 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
    b"E0000 00:00:1796479658.639723    3881 cuda_dnn.cc:8310] Unable to register cuDNN factory: already registered\n",
    b"E0000 00:00:1796479658.639723    3881 executor.cc:1] a real error\n",
    b"F0000 00:00:1796479658.639723    3881 executor.cc:2] a fatal one\n",
    b"a last line without its newline",
]


@pytest.mark.parametrize("level, kept", [
    (1, [2, 4, 7, 8, 9]),
    (2, [2, 7, 8, 9]),
    (3, [2, 8, 9]),
])
def test_the_filter_drops_only_the_noise_in_order(capfd, level, kept):
    with filtered_stderr(drop_pattern(level)):
        for line in LINES:
            os.write(2, line)
    assert capfd.readouterr().err.encode() == b"".join(LINES[i] for i in kept)


def test_the_filter_passes_through_what_a_dying_process_wrote(tmp_path):
    code = ("import os\nfrom pipeline.stage import filtered_stderr, drop_pattern\n"
            "with filtered_stderr(drop_pattern(2)):\n"
            "    os.write(2, b'E0000 00:00:1.5  1 cuda_platform.cc:52] failed call to cuInit: x\\n')\n"
            "    os.write(2, b'E0000 00:00:1.5  1 executor.cc:1] the error before the crash\\n')\n"
            "    os._exit(3)\n")
    with open(tmp_path / "err", "wb") as err:
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stderr=err, timeout=60)
    assert p.returncode == 3
    deadline = time.monotonic() + 10        # the filter process finishes on its own
    while b"crash" not in (tmp_path / "err").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "err").read_bytes() == b"E0000 00:00:1.5  1 executor.cc:1] the error before the crash\n"

"""What every stage script shares: the working directory, the error exit and a quiet TensorFlow.

A stage turns a :class:`SeqlabError` into one line on stderr and exit status 2; outputs are only
written at the end (atomically), so a failed stage leaves nothing half-written.

:func:`quiet_tensorflow` runs first (no stage module imports TensorFlow at import time; the
generate CLI calls it too). On a machine without an NVIDIA GPU, TensorFlow writes lines that
``TF_CPP_MIN_LOG_LEVEL`` cannot hide:

* while ``import tensorflow`` loads its libraries, before it has read the variable (absl writes
  everything before ``absl::InitializeLog()``): ``WARNING: All log messages before
  absl::InitializeLog() is called are written to STDERR``, ``I... port.cc] oneDNN custom operations
  are on ...``, ``I... cudart_stub.cc] Could not find cuda drivers on your machine ...`` (once per
  library that carries its own copy of the logging code: twice with TensorFlow 2.21);
* at the first use of a device, at level ERROR: ``E... cuda_platform.cc] failed call to cuInit:
  ... UNKNOWN ERROR (303)`` (``CUDA_ERROR_NO_DEVICE`` where a driver is installed). Hiding the
  GPUs (``CUDA_VISIBLE_DEVICES=""`` or ``-1``) does not prevent it: TensorFlow still calls
  ``cuInit``; only level 3 hides it, and level 3 hides every other error too.

So, where no NVIDIA GPU can be reached (:func:`nvidia_gpu_possible`, or the user hid them), the
first ``import tensorflow`` runs with file descriptor 2 passed through a filter that drops exactly
those lines: TensorFlow's log lines below the ``TF_CPP_MIN_LOG_LEVEL`` it has not applied yet, absl's
notice about it, and the messages of the CUDA probe (:data:`GPU_PROBE`). The probe itself
(``tf.config.list_physical_devices()``, which calls ``cuInit`` once per process) runs in the same
window. Everything else written meanwhile (Python's warnings, any other error) passes through, in
order; the filter is a separate process, so what was written still comes out if this one dies.
Nothing changes on a machine with a GPU, no environment variable but ``TF_CPP_MIN_LOG_LEVEL``
(default 2) is set, and ``TF_CPP_MIN_LOG_LEVEL=0`` turns the filter off.
"""
from __future__ import annotations

import importlib.abc
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, MutableMapping

from pipeline.errors import SeqlabError
from pipeline.paths import ROOT

DEFAULT_LOG_LEVEL = "2"

# absl's format: severity, then MMDD, time, thread id, file:line] message
LOG_REST = r"\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] "
LOG_LINE = "[IWEF]" + LOG_REST
ABSL_NOTICE = r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
# what TensorFlow's CUDA probe says, at any level, where there is no GPU to find
GPU_PROBE = (r"failed call to cuInit|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory"
             r"|kernel driver does not appear to be running|Could not load dynamic library 'libcu"
             r"|Cannot dlopen some GPU libraries|Could not find TensorRT")

# libcuda.so.1's usual homes (distribution packages, the NVIDIA container runtime, WSL)
DRIVER_LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64", "usr/lib",
                   "usr/local/nvidia/lib64", "usr/local/nvidia/lib", "usr/lib/wsl/lib")


def nvidia_gpu_possible(root: Path = Path("/"), search_path: str | None = None,
                        lib_path: str | None = None) -> bool:
    """Whether a CUDA program on this machine might reach an NVIDIA GPU: a device node of the driver
    (``/dev/nvidia*``; WSL's ``/dev/dxg``), the loaded kernel module (``/proc/driver/nvidia``), the
    driver's tools (``nvidia-smi``, ``nvidia-modprobe``, which creates missing device nodes) or its
    library (``libcuda.so.1``). True where unsure (not Linux); a CUDA toolkit alone does not count."""
    if not sys.platform.startswith("linux"):
        return True
    dev = root / "dev"
    if (dev / "dxg").exists() or (root / "proc/driver/nvidia").exists():
        return True
    try:
        if any(name.startswith("nvidia") for name in os.listdir(dev)):
            return True
    except OSError:
        pass
    search_path = os.environ.get("PATH", os.defpath) if search_path is None else search_path
    if any(shutil.which(tool, path=search_path) for tool in ("nvidia-smi", "nvidia-modprobe")):
        return True
    lib_path = os.environ.get("LD_LIBRARY_PATH", "") if lib_path is None else lib_path
    dirs = [root / d for d in DRIVER_LIB_DIRS] + [Path(d) for d in lib_path.split(os.pathsep) if d]
    return any((d / "libcuda.so.1").exists() for d in dirs)


def log_level(environ: MutableMapping[str, str]) -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it (not a number: 0)."""
    try:
        return max(0, int(environ.get("TF_CPP_MIN_LOG_LEVEL", "0")))
    except ValueError:
        return 0


def startup_filter_level(environ: MutableMapping[str, str], gpu_possible: bool) -> int | None:
    """The log level TensorFlow's start-up lines are to be filtered at, or None: no filter (a GPU
    this process may use, or ``TF_CPP_MIN_LOG_LEVEL=0``: every line wanted). Reads only."""
    level = log_level(environ)
    gpus_hidden = environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
    if level == 0 or (gpu_possible and not gpus_hidden):
        return None
    return level


def drop_pattern(level: int) -> str:
    """The lines the filter drops: absl's notice, log lines below ``level`` (1: INFO, 2: also
    WARNING, 3: also ERROR) and, at any level, the CUDA probe's complaints."""
    parts = [f"^{ABSL_NOTICE}\\s*$", f"^{LOG_LINE}.*(?:{GPU_PROBE})"]
    below = "IWE"[:min(level, 3)]
    if below:
        parts.append(f"^[{below}]{LOG_REST}")
    return "|".join(f"(?:{p})" for p in parts)


# Run as `python -I -S -c FILTER PATTERN`: stdin to stdout, line by line, without the lines that match.
# It ignores SIGINT (Ctrl-C reaches the whole process group) and ends when every writer has closed.
FILTER = """\
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
drop = re.compile(sys.argv[1].encode())
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not drop.search(line):
        out.write(line)
        out.flush()
"""


@contextmanager
def filtered_stderr(pattern: str) -> Iterator[None]:
    """File descriptor 2, for the duration, through a filter process that drops the lines
    matching ``pattern``; unchanged where that cannot be set up."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):       # no stderr at all
        yield
        return
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", FILTER, pattern],
                                stdin=subprocess.PIPE, stdout=saved, stderr=saved)
    except OSError:
        os.close(saved)
        yield
        return
    os.dup2(proc.stdin.fileno(), 2)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:   # a process started meanwhile still writes there: it stays filtered
            pass


class _QuietLoader(importlib.abc.Loader):
    """``tensorflow``'s own loader, run inside :func:`filtered_stderr`, then the CUDA probe."""

    def __init__(self, inner, pattern: str):
        self.inner, self.pattern = inner, pattern

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr(self.pattern):
            try:
                self.inner.exec_module(module)
            finally:
                module.__loader__ = self.inner
                if getattr(module, "__spec__", None) is not None:
                    module.__spec__.loader = self.inner
            try:
                module.config.list_physical_devices()   # calls cuInit, once per process
            except Exception:       # noqa: BLE001 -- the same call fails again, visibly, where it matters
                pass

    def __getattr__(self, name):
        return getattr(self.inner, name)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """On ``sys.meta_path``: the first ``import tensorflow`` goes through :class:`_QuietLoader`;
    then it takes itself off."""

    def __init__(self, level: int):
        self.pattern = drop_pattern(level)

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        self.remove()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader, self.pattern)
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def quiet_tensorflow(environ: MutableMapping[str, str] = os.environ,
                     gpu_possible: Callable[[], bool] = nvidia_gpu_possible) -> QuietTensorFlowImport | None:
    """Call before TensorFlow is imported: ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 and, where
    :func:`startup_filter_level` says so, the first ``import tensorflow`` is filtered (the finder
    that does it is returned). Never touches ``CUDA_VISIBLE_DEVICES``; does nothing more where
    TensorFlow is already imported, or the filter already waits for it."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LOG_LEVEL)
    if "tensorflow" in sys.modules or any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
        return None
    level = startup_filter_level(environ, gpu_possible())
    if level is None:
        return None
    finder = QuietTensorFlowImport(level)
    sys.meta_path.insert(0, finder)
    return finder


def run_stage(main: Callable[[list[str]], None], tracked: bool = True) -> None:
    """Run ``main`` in the repository; a ``tracked`` stage (one that logs to MLflow) first checks
    that the tracking store can take it, within seconds, before any work."""
    quiet_tensorflow()
    os.chdir(ROOT)
    try:
        if tracked:
            from pipeline.tracking.store import check_store  # check only
            check_store()
        main(sys.argv[1:])
    except SeqlabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

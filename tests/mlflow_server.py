"""A real ``mlflow server`` on 127.0.0.1 for tests: an SQL backend and proxied artifacts
(``--artifacts-destination``) in a folder, optionally MLflow's basic-auth app with an admin account."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
ADMIN = ("seqlab-admin", "admin-password-for-tests")   # the basic-auth app's admin account


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    folder: Path

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")

    def wait(self, timeout: float = 90) -> "Server":
        """Return once ``/health`` answers; fail with the server's log when it does not in ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up:\n{self.log()[-4000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        """End the server's whole process group (it runs uvicorn workers as children)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def start(folder: Path, auth: bool = False) -> Server:
    """Start the server in the background (it takes 10-20 s: call :meth:`Server.wait` when needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
           "--artifacts-destination", str(folder / "artifacts")]
    if auth:
        ini = folder / "basic_auth.ini"
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = sqlite:///{folder / 'auth.db'}\n"
                       f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_FLASK_SERVER_SECRET_KEY="seqlab-tests")
        cmd += ["--app-name", "basic-auth"]
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Server(proc, f"http://127.0.0.1:{port}", folder)

"""Ways to run the sandbox: in a background thread (tests), as a subprocess (multi-process
tests), or in the foreground (``kaipiao sandbox-tax``). Always on a loopback address."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.tax.app import create_sandbox_app
from sandbox.tax.service import SandboxConfig

READY_PREFIX = "sandbox-tax listening on "


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the sandbox binds loopback addresses only, not {host}")


def make_sandbox_server(config: SandboxConfig | Mapping[str, Any], host: str = "127.0.0.1",
                        port: int = 0) -> BaseWSGIServer:
    """A threaded werkzeug server for the sandbox (port 0 = a free port)."""
    _check_loopback(host)
    return make_server(host, port, create_sandbox_app(config), threaded=True)


def run_sandbox_in_thread(config: SandboxConfig | Mapping[str, Any],
                          host: str = "127.0.0.1") -> tuple[str, Callable[[], None]]:
    """Start the sandbox on a free loopback port in a daemon thread: (base_url, stop)."""
    server = make_sandbox_server(config, host, 0)
    # A short poll interval makes stop() quick (shutdown waits for the next poll).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-tax",
                              daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://{host}:{server.server_port}", stop


@dataclass
class SandboxProcess:
    base_url: str
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 5) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode

    def kill(self) -> None:
        """Hard stop (SIGKILL): what a crash looks like to the store."""
        self.process.kill()
        self.process.wait(timeout=5)


def start_sandbox_subprocess(db_path: str | Path, *, wire: str = "native", host: str = "127.0.0.1",
                             port: int = 0, extra_args: list[str] | None = None,
                             env: Mapping[str, str] | None = None, timeout: float = 20) -> SandboxProcess:
    """Run ``python -m sandbox.tax`` and wait until it listens."""
    _check_loopback(host)
    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-m", "sandbox.tax", "--host", host, "--port", str(port),
            "--db", str(db_path), "--wire", wire, *(extra_args or [])]
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), child_env.get("PYTHONPATH")]))
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=child_env, cwd=str(root))
    deadline = time.monotonic() + timeout
    log: list[str] = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                raise RuntimeError("sandbox subprocess exited early:\n" + "".join(log))
            continue
        log.append(line)
        if line.startswith(READY_PREFIX):
            base_url = line[len(READY_PREFIX):].strip()
            # Keep draining output so a chatty child never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process, log), daemon=True).start()
            return SandboxProcess(base_url=base_url, process=process, log=log)
    process.kill()
    raise RuntimeError("sandbox subprocess did not start in time:\n" + "".join(log))


def _drain(process: subprocess.Popen[str], log: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if len(log) < 1000:
            log.append(line)


def serve_forever(config: SandboxConfig, host: str, port: int) -> None:
    """Foreground server; prints the ready line (with the real port) first."""
    import logging
    import os

    # One log line per request would cost more than the request itself under load.
    if not os.environ.get("KAIPIAO_SANDBOX_ACCESS_LOG"):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_sandbox_server(config, host, port)
    print(f"{READY_PREFIX}http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

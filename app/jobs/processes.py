"""Child processes of Kaipiao (workers, scheduler, sandbox) for the demo, the chaos test and
the benchmarks: started in their own process group so a stop (or a SIGKILL) takes the
RQ work-horses with them."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path


def kaipiao_cmd() -> list[str]:
    exe = shutil.which("kaipiao", path=str(Path(sys.executable).parent)) or shutil.which("kaipiao")
    return [exe] if exe else [sys.executable, "-c", "from app.cli import main; main()"]


class Children:
    """Child processes that die with their parent."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self._specs: dict[str, tuple[list[str], Path, dict[str, str]]] = {}
        self._owner = os.getpid()  # a forked copy (a gunicorn web worker) must not stop them
        atexit.register(self.stop)

    def start(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        environment = {**os.environ, **(env or {})}
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "ab")
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=environment,
                                start_new_session=True)
        self.procs[name] = proc
        self._specs[name] = (args, log, env or {})
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)

    def restart(self, name: str) -> subprocess.Popen:
        args, log, env = self._specs[name]
        self.kill(name)
        return self.start(name, args, log, env)

    def stop(self) -> None:
        if os.getpid() != self._owner:
            return
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.procs.clear()

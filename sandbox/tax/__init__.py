"""The sandbox tax service: a fake provider with its own SQLite store (see ``app.py``)."""

from sandbox.tax.app import create_sandbox_app
from sandbox.tax.runner import (
    SandboxProcess,
    make_sandbox_server,
    run_sandbox_in_thread,
    start_sandbox_subprocess,
)
from sandbox.tax.service import SandboxConfig, SandboxService

__all__ = [
    "SandboxConfig",
    "SandboxProcess",
    "SandboxService",
    "create_sandbox_app",
    "make_sandbox_server",
    "run_sandbox_in_thread",
    "start_sandbox_subprocess",
]

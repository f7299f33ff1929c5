"""Fixtures for the tax gateway tests: an in-thread sandbox per test and gateways onto it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tax_helpers import APP_KEY, APP_SECRET, Sandbox

from sandbox.tax import run_sandbox_in_thread


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    stops: list[Callable[[], None]] = []

    def start(wire: str = "native", db_path: Path | None = None, **config: Any) -> Sandbox:
        path = db_path or tmp_path / f"sandbox-{wire}-{len(stops)}.sqlite3"
        url, stop = run_sandbox_in_thread({"db_path": path, "wire": wire, "app_key": APP_KEY,
                                           "app_secret": APP_SECRET, **config})
        stops.append(stop)
        return Sandbox(url=url, wire=wire, db_path=path, stop=stop)

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def sandbox(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return start_sandbox("native")


@pytest.fixture(params=["native", "nuonuo"])
def any_sandbox(request: pytest.FixtureRequest, start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """The same behaviour checked through both adapters and both wires."""
    return start_sandbox(request.param)

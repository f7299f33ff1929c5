"""The sandbox as its own process: CLI wiring, subprocess start, several processes on one store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import click
import pytest
import requests
from click.testing import CliRunner
from tax_helpers import APP_KEY, APP_SECRET, issue_request, wait_issued

from app.integrations.tax.base import OutcomeUnknown
from app.integrations.tax.sandbox import SandboxGateway
from sandbox.tax import start_sandbox_subprocess
from sandbox.tax.cli import register
from sandbox.tax.runner import make_sandbox_server


def test_cli_registers_sandbox_tax_with_its_options() -> None:
    group = click.Group("kaipiao")
    register(group)
    result = CliRunner().invoke(group, ["sandbox-tax", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--db", "--latency-ms", "--fail-rate", "--wire"):
        assert option in result.output
    bad = CliRunner().invoke(group, ["sandbox-tax", "--wire", "baiwang"])
    assert bad.exit_code == 2


def test_only_loopback_addresses(tmp_path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        make_sandbox_server({"db_path": tmp_path / "x.sqlite3"}, host="0.0.0.0")


def test_two_processes_on_one_store_issue_each_serial_once(tmp_path) -> None:
    db = tmp_path / "shared.sqlite3"
    args = ["--app-key", APP_KEY, "--app-secret", APP_SECRET]
    first = start_sandbox_subprocess(db, extra_args=args)
    second = start_sandbox_subprocess(db, extra_args=args)
    try:
        gateways = [SandboxGateway(p.base_url, APP_KEY, APP_SECRET) for p in (first, second)]
        serials = [f"mp-{i % 5}" for i in range(20)]  # every serial sent 4 times, to both processes

        def send(index: int) -> bool:
            return gateways[index % 2].issue(issue_request(serials[index])).duplicate

        with ThreadPoolExecutor(max_workers=8) as pool:
            duplicates = list(pool.map(send, range(20)))
        assert duplicates.count(False) == 5
        numbers = {wait_issued(gateways[0], f"mp-{i}").number for i in range(5)}
        assert len(numbers) == 5 and None not in numbers
        state = requests.get(f"{second.base_url}/admin/state", timeout=5).json()
        assert state["invoices"] == {"blue.issued": 5}
        assert state["counters"]["duplicates_refused"] == 15
    finally:
        first.stop()
        second.stop()


def test_killed_process_restarts_with_its_idempotency(tmp_path) -> None:
    db = tmp_path / "crash.sqlite3"
    args = ["--app-key", APP_KEY, "--app-secret", APP_SECRET]
    process = start_sandbox_subprocess(db, extra_args=args)
    gateway = SandboxGateway(process.base_url, APP_KEY, APP_SECRET, read_timeout=0.3)
    requests.post(f"{process.base_url}/admin/faults", json={"calls": {"issue": {"mode": "timeout"}},
                                                           "timeout_sleep_ms": 5000}, timeout=5)
    with pytest.raises(OutcomeUnknown):
        gateway.issue(issue_request("crash-1"))
    process.kill()  # the provider dies while the caller does not know the outcome
    restarted = start_sandbox_subprocess(db, extra_args=args)
    try:
        again = SandboxGateway(restarted.base_url, APP_KEY, APP_SECRET)
        number = wait_issued(again, "crash-1").number
        assert number and again.issue(issue_request("crash-1")).duplicate
        assert again.query("crash-1").number == number
    finally:
        restarted.stop()

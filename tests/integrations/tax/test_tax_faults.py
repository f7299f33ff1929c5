"""Injected failures map to the right exception in both adapters, and the recovery paths work."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest
import requests
from tax_helpers import APP_KEY, APP_SECRET, SELLER_TAX_ID, issue_request, wait_issued

from app.integrations.tax.base import (
    AuthExpired,
    GatewayPaused,
    IssueStatus,
    NotFound,
    OutcomeUnknown,
    TransientGatewayError,
)
from app.integrations.tax.nuonuo import NuonuoGateway
from app.integrations.tax.sandbox import SandboxGateway


def test_timeout_after_sending_is_outcome_unknown_then_query_finds_one_invoice(any_sandbox) -> None:
    any_sandbox.faults(calls={"issue": {"mode": "timeout", "count": 1}}, timeout_sleep_ms=700)
    gateway = any_sandbox.gateway(read_timeout=0.3)
    with pytest.raises(OutcomeUnknown) as caught:
        gateway.issue(issue_request("to-1"))
    assert caught.value.serial_no == "to-1"
    # The caller queries by serial: the provider did process it.
    result = wait_issued(gateway, "to-1")
    assert result.status == IssueStatus.ISSUED
    # A resend (e.g. after a crash) is recognised, never a second invoice.
    assert gateway.issue(issue_request("to-1")).duplicate
    state = any_sandbox.admin("state")
    assert state["invoices"] == {"blue.issued": 1}
    assert state["counters"]["faults_injected.issue.timeout"] == 1


def test_result_unknown_5xx_after_processing(any_sandbox) -> None:
    any_sandbox.faults(calls={"issue": {"mode": "unknown", "count": 1}})
    gateway = any_sandbox.gateway()
    with pytest.raises(OutcomeUnknown):
        gateway.issue(issue_request("unk-1"))
    assert wait_issued(gateway, "unk-1").status == IssueStatus.ISSUED
    assert any_sandbox.admin("state")["invoices"] == {"blue.issued": 1}


def test_5xx_before_processing_on_issue_is_unknown_and_query_says_not_found(any_sandbox) -> None:
    any_sandbox.faults(calls={"issue": {"mode": "error_5xx", "count": 1}})
    gateway = any_sandbox.gateway()
    with pytest.raises(OutcomeUnknown):
        gateway.issue(issue_request("5xx-1"))
    with pytest.raises(NotFound):  # never processed: now it is safe to send again
        gateway.query("5xx-1")
    gateway.issue(issue_request("5xx-1"))
    assert wait_issued(gateway, "5xx-1").status == IssueStatus.ISSUED


def test_5xx_on_query_is_transient(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    gateway.issue(issue_request("5xx-q"))
    any_sandbox.faults(calls={"query": {"mode": "error_5xx", "count": 1}})
    with pytest.raises(TransientGatewayError):
        gateway.query("5xx-q")
    assert wait_issued(gateway, "5xx-q").status == IssueStatus.ISSUED


def test_rate_limit_is_transient_with_retry_after(any_sandbox) -> None:
    any_sandbox.faults(calls={"issue": {"mode": "rate_limit", "count": 1}})
    gateway = any_sandbox.gateway()
    with pytest.raises(TransientGatewayError) as caught:
        gateway.issue(issue_request("429-1"))
    assert not isinstance(caught.value, OutcomeUnknown)
    assert caught.value.retry_after == 1.0
    with pytest.raises(NotFound):
        gateway.query("429-1")
    gateway.issue(issue_request("429-1"))


def test_slow_query_is_transient(any_sandbox) -> None:
    any_sandbox.faults(latency_ms={"query": 600})
    gateway = any_sandbox.gateway(read_timeout=0.2)
    with pytest.raises(TransientGatewayError) as caught:
        gateway.query("slow-1")
    assert not isinstance(caught.value, OutcomeUnknown)


def test_fail_rate_flag_answers_503(start_sandbox) -> None:
    box = start_sandbox("native", fail_rate=1.0)
    with pytest.raises(TransientGatewayError):
        box.gateway().remaining_credit()
    box.faults(fail_rate=0.0)
    assert box.gateway().remaining_credit() > 0


def test_connection_refused_is_transient_even_for_issue() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    gateways = [SandboxGateway(url, APP_KEY, APP_SECRET, connect_timeout=1, read_timeout=1),
                NuonuoGateway(app_key=APP_KEY, app_secret=APP_SECRET, user_tax=SELLER_TAX_ID,
                              services_url=f"{url}/open/v1/services", token_url=f"{url}/accessToken",
                              connect_timeout=1, read_timeout=1)]
    for gateway in gateways:
        with pytest.raises(TransientGatewayError) as caught:
            gateway.issue(issue_request("refused-1"))
        assert not isinstance(caught.value, OutcomeUnknown)


def test_login_expired_pauses_issuing_until_renewed(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    any_sandbox.admin("expire-login")
    for serial in ("login-1", "login-2"):
        with pytest.raises(AuthExpired) as caught:
            gateway.issue(issue_request(serial))
        assert isinstance(caught.value, GatewayPaused)
    assert gateway.remaining_credit() > Decimal("0")  # reads still work
    any_sandbox.admin("renew-login")
    gateway.issue(issue_request("login-1"))
    assert wait_issued(gateway, "login-1").status == IssueStatus.ISSUED
    counters = any_sandbox.counters()
    assert counters["login_expired_refusals"] == 2 and counters["login_renewals"] == 1


def test_login_expiry_survives_a_restart(start_sandbox, tmp_path) -> None:
    db = tmp_path / "login.sqlite3"
    first = start_sandbox("native", db_path=db)
    first.admin("expire-login")
    first.stop()
    second = start_sandbox("native", db_path=db)
    with pytest.raises(AuthExpired):
        second.gateway().issue(issue_request("login-r"))


def test_asynchronous_failure_is_reported_retryable(any_sandbox) -> None:
    any_sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    gateway = any_sandbox.gateway()
    gateway.issue(issue_request("late-1"))
    result = wait_issued(gateway, "late-1")
    assert result.status == IssueStatus.FAILED
    assert result.permanent is False and result.error_reason
    assert result.error_code == ("ISSUE_FAILED" if any_sandbox.wire == "native" else "NUONUO_24")


def test_count_limits_the_fault_and_admin_validates(sandbox) -> None:
    sandbox.faults(calls={"query": {"mode": "error_5xx", "count": 2}})
    gateway = sandbox.gateway()
    for _ in range(2):
        with pytest.raises(TransientGatewayError):
            gateway.query("x")
    with pytest.raises(NotFound):
        gateway.query("x")
    bad = requests.post(f"{sandbox.url}/admin/faults", json={"calls": {"issue": {"mode": "explode"}}}, timeout=5)
    assert bad.status_code == 400
    assert sandbox.faults(reset=True)["calls"] == {}


def test_nuonuo_token_is_cached_and_refreshed_once_when_revoked(start_sandbox) -> None:
    box = start_sandbox("nuonuo")
    gateway = box.gateway()
    gateway.remaining_credit()
    gateway.remaining_credit()
    assert box.counters()["tokens_issued"] == 1
    box.admin("revoke-tokens")
    assert gateway.remaining_credit() > 0  # E9998 -> fresh token -> same call again
    assert box.counters()["tokens_issued"] == 2
    token = gateway.tokens.load()
    assert token is not None and token[0] not in repr(gateway) and token[0] not in repr(gateway.tokens)

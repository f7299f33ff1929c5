"""Batch calls: the sandbox's native batch endpoints, SandboxGateway.issue_many / query_many over
them, and NuonuoGateway.query_many over queryInvoiceResult's orderNos."""

from __future__ import annotations

import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from tax_helpers import APP_KEY, APP_SECRET, ENTERPRISE_BUYER, SELLER_TAX_ID, WORKED_INVOICE, issue_request

from app.integrations.tax import nuonuo_protocol as nn
from app.integrations.tax.base import (
    Accepted,
    AuthExpired,
    CreditExhausted,
    IdempotencyConflict,
    IssueResult,
    IssueStatus,
    NotFound,
    OutcomeUnknown,
    PermanentGatewayError,
    TaxGateway,
    TaxGatewayError,
    TransientGatewayError,
)
from app.integrations.tax.nuonuo import NuonuoGateway, order_no_for
from app.integrations.tax.sandbox import SandboxGateway
from app.integrations.tax.signing import H_APP_KEY, H_NONCE, H_SIGNATURE, H_TIMESTAMP, dump_body, native_sign
from sandbox.tax import start_sandbox_subprocess

BAD_TAX_CODE = {"lines": [dict(WORKED_INVOICE["lines"][4], seq=1, tax_code="9999999999999999999")]}


def native_post(url: str, path: str, payload: Any, *, secret: str = APP_SECRET,
                nonce: str | None = None) -> requests.Response:
    body = dump_body(payload)
    timestamp, nonce = str(int(time.time())), nonce or uuid.uuid4().hex
    headers = {"Content-Type": "application/json; charset=utf-8", H_APP_KEY: APP_KEY, H_TIMESTAMP: timestamp,
               H_NONCE: nonce, H_SIGNATURE: native_sign(secret, "POST", path, timestamp, nonce, body)}
    return requests.post(url + path, data=body, headers=headers, timeout=5)


def settled(gateway: TaxGateway, serials: list[str], timeout: float = 5.0) -> list[IssueResult | TaxGatewayError]:
    """query_many until nothing is pending any more."""
    deadline = time.monotonic() + timeout
    while True:
        answers = gateway.query_many(serials)
        pending = [a for a in answers if isinstance(a, IssueResult) and a.status == IssueStatus.PENDING]
        if not pending or time.monotonic() > deadline:
            return answers
        time.sleep(0.05)


def issued_numbers(answers: list[IssueResult | TaxGatewayError]) -> list[str]:
    numbers = []
    for answer in answers:
        assert isinstance(answer, IssueResult) and answer.status == IssueStatus.ISSUED, answer
        assert answer.number and len(answer.number) == 20
        numbers.append(answer.number)
    return numbers


# ------------------------------------------------------------------------ SandboxGateway batches


def test_repeated_batch_gives_the_same_invoices_flagged_duplicate(sandbox) -> None:
    gateway = sandbox.gateway()
    assert gateway.batch_size == 50
    batch = [issue_request(f"b-{i}") for i in range(3)]
    first = gateway.issue_many(batch)
    assert [type(a) for a in first] == [Accepted] * 3
    assert [a.serial_no for a in first] == ["b-0", "b-1", "b-2"] and not any(a.duplicate for a in first)
    numbers = issued_numbers(settled(gateway, ["b-0", "b-1", "b-2"]))
    assert len(set(numbers)) == 3

    again = gateway.issue_many(batch)
    assert all(isinstance(a, Accepted) and a.duplicate for a in again)
    assert [a.provider_serial for a in again] == [a.provider_serial for a in first]
    assert issued_numbers(gateway.query_many(["b-0", "b-1", "b-2"])) == numbers
    state = sandbox.admin("state")
    assert state["invoices"] == {"blue.issued": 3}
    assert state["counters"]["accepted"] == 3 and state["counters"]["duplicates_refused"] == 3
    assert state["counters"]["batch_calls.issue"] == 2 and state["counters"]["batch_items.issue"] == 6


def test_same_serial_twice_in_one_batch(sandbox) -> None:
    gateway = sandbox.gateway()
    other_data = issue_request("twice", remark="另一张")
    first, second, third = gateway.issue_many([issue_request("twice"), issue_request("twice"), other_data])
    assert isinstance(first, Accepted) and not first.duplicate
    assert isinstance(second, Accepted) and second.duplicate and second.provider_serial == first.provider_serial
    assert isinstance(third, IdempotencyConflict) and third.code == "DUPLICATE_SERIAL"
    counters = sandbox.counters()
    assert (counters["accepted"], counters["duplicates_refused"], counters["conflicts"]) == (1, 1, 1)


def test_mixed_batch_refuses_only_the_bad_items(sandbox) -> None:
    gateway = sandbox.gateway()
    answers = gateway.issue_many([
        issue_request("mix-ok-1"),
        issue_request("mix-taxcode", **BAD_TAX_CODE),
        issue_request("mix-special", kind="special"),  # 专票 to a personal buyer
        issue_request("mix-special-ok", kind="special", buyer=ENTERPRISE_BUYER),
    ])
    assert isinstance(answers[0], Accepted) and isinstance(answers[3], Accepted)
    assert isinstance(answers[1], PermanentGatewayError) and answers[1].code == "TAX_CODE"
    assert "9999999999999999999" in answers[1].reason
    assert isinstance(answers[2], PermanentGatewayError) and answers[2].code == "SPECIAL_BUYER"
    results = settled(gateway, ["mix-ok-1", "mix-taxcode", "mix-special", "mix-special-ok"])
    assert isinstance(results[1], NotFound) and isinstance(results[2], NotFound)  # refused = never stored
    issued_numbers([results[0], results[3]])
    assert sandbox.counters()["rejected"] == 2


def test_credit_is_used_item_by_item_inside_a_batch(start_sandbox) -> None:
    box = start_sandbox("native", credit_limit="500.00")  # two 247.90 invoices fit, the third does not
    answers = box.gateway().issue_many([issue_request(f"cr-{i}") for i in range(3)])
    assert [type(a) for a in answers] == [Accepted, Accepted, CreditExhausted]
    assert answers[2].code == "CREDIT_EXCEEDED"
    assert box.admin("credit")["used"] == "495.80"


def test_batch_wire_shape(sandbox) -> None:
    invoices = [issue_request("w-1").to_dict(), issue_request("w-2", kind="special").to_dict()]
    response = native_post(sandbox.url, "/v1/invoices/batch", {"invoices": invoices})
    assert response.status_code == 200, response.text
    ok, refused = response.json()["results"]
    assert set(ok) == {"serial_no", "provider_serial", "status", "duplicate"}
    assert (ok["serial_no"], ok["status"], ok["duplicate"]) == ("w-1", "pending", False)
    assert refused["serial_no"] == "w-2" and set(refused) == {"serial_no", "error"}
    assert refused["error"]["code"] == "SPECIAL_BUYER" and refused["error"]["permanent"] is True

    query = native_post(sandbox.url, "/v1/invoices/query", {"serial_nos": ["w-1", "nope"]})
    assert query.status_code == 200, query.text
    found, missing = query.json()["results"]
    assert found["serial_no"] == "w-1" and found["status"] == "issued" and found["pdf_url"].endswith(".pdf")
    assert missing == {"serial_no": "nope", "error": {"code": "NOT_FOUND", "message": missing["error"]["message"],
                                                      "permanent": True}}


def test_bad_signature_or_replayed_nonce_refuses_the_whole_batch(sandbox) -> None:
    invoices = {"invoices": [issue_request("sig-1").to_dict()]}
    forged = native_post(sandbox.url, "/v1/invoices/batch", invoices, secret="not-the-secret")
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "BAD_SIGNATURE"
    assert sandbox.admin("state")["invoices"] == {}
    nonce = uuid.uuid4().hex
    assert native_post(sandbox.url, "/v1/invoices/batch", invoices, nonce=nonce).status_code == 200
    replay = native_post(sandbox.url, "/v1/invoices/batch", invoices, nonce=nonce)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "REPLAYED_NONCE"
    counters = sandbox.counters()
    assert counters["signature_rejected"] == 1 and counters["replays_rejected"] == 1
    assert counters["accepted"] == 1 and "duplicates_refused" not in counters


@pytest.mark.parametrize(("body", "where"), [
    ({"invoices": []}, "invoices"),
    ({"invoices": [issue_request(f"many-{i}").to_dict() for i in range(51)]}, "invoices"),
    ({"invoices": "x"}, "invoices"),
    ({}, "invoices"),
    ([], "请求体"),
])
def test_batch_size_and_shape_are_checked(sandbox, body: Any, where: str) -> None:
    response = native_post(sandbox.url, "/v1/invoices/batch", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "MALFORMED" and where in error["message"]
    assert sandbox.admin("state")["invoices"] == {}


def test_malformed_item_refuses_the_call_naming_the_field(sandbox) -> None:
    invoices = [issue_request(f"mf-{i}").to_dict() for i in range(4)]
    del invoices[3]["lines"][0]["tax_code"]
    invoices[1]["lines"][0]["amount"] = "abc"  # the first problem in order is reported
    response = native_post(sandbox.url, "/v1/invoices/batch", {"invoices": invoices})
    assert response.status_code == 400 and response.json()["error"]["code"] == "MALFORMED"
    assert "invoices[1].lines[0].amount" in response.json()["error"]["message"]
    invoices[1] = issue_request("mf-1").to_dict()
    response = native_post(sandbox.url, "/v1/invoices/batch", {"invoices": invoices})
    assert "invoices[3].lines[0].tax_code" in response.json()["error"]["message"]
    invoices[2]["serial_no"] = 17
    response = native_post(sandbox.url, "/v1/invoices/batch", {"invoices": invoices})
    assert "invoices[2].serial_no" in response.json()["error"]["message"]
    assert sandbox.admin("state")["invoices"] == {}  # the valid items were not issued either


def test_query_batch_limits(sandbox) -> None:
    for body, where in (({"serial_nos": []}, "serial_nos"), ({"serial_nos": ["s"] * 51}, "serial_nos"),
                        ({"serial_nos": ["ok", 5]}, "serial_nos[1]")):
        response = native_post(sandbox.url, "/v1/invoices/query", body)
        assert response.status_code == 400 and where in response.json()["error"]["message"]


def test_query_many_unknown_serials_are_not_found_known_ones_settle(start_sandbox) -> None:
    box = start_sandbox("native", issue_delay_ms=150)
    gateway = box.gateway()
    box.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    gateway.issue_many([issue_request("q-late"), issue_request("q-ok")])
    first = gateway.query_many(["q-late", "q-unknown", "q-ok"])
    assert [a.status for a in (first[0], first[2])] == [IssueStatus.PENDING, IssueStatus.PENDING]
    assert isinstance(first[1], NotFound) and first[1].code == "NOT_FOUND"
    time.sleep(0.2)
    late, unknown, ok = gateway.query_many(["q-late", "q-unknown", "q-ok"])
    assert isinstance(late, IssueResult) and late.status == IssueStatus.FAILED  # a failed invoice is a result
    assert late.error_code == "ISSUE_FAILED" and late.permanent is False
    assert isinstance(unknown, NotFound)
    assert isinstance(ok, IssueResult) and ok.status == IssueStatus.ISSUED and ok.number
    counters = box.counters()
    assert counters["issued"] == 1 and counters["failed"] == 1
    assert counters["batch_calls.query"] == 2 and counters["batch_items.query"] == 6


def test_query_many_chunks_by_50(sandbox) -> None:
    gateway = sandbox.gateway()
    serials = [f"ch-{i}" for i in range(60)]
    answers = gateway.issue_many([issue_request(s) for s in serials])
    assert all(isinstance(a, Accepted) for a in answers)
    results = gateway.query_many([*serials, "ch-missing"])
    assert [r.serial_no for r in results[:60]] == serials and isinstance(results[60], NotFound)
    assert len(set(issued_numbers(results[:60]))) == 60
    counters = sandbox.counters()
    assert counters["batch_calls.issue"] == 2 and counters["batch_calls.query"] == 2


def test_fail_later_is_drawn_per_invoice(sandbox) -> None:
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 2}})
    gateway = sandbox.gateway()
    serials = [f"fl-{i}" for i in range(4)]
    assert all(isinstance(a, Accepted) for a in gateway.issue_many([issue_request(s) for s in serials]))
    statuses = [r.status for r in settled(gateway, serials)]
    assert statuses == [IssueStatus.FAILED, IssueStatus.FAILED, IssueStatus.ISSUED, IssueStatus.ISSUED]
    state = sandbox.admin("state")
    assert state["counters"]["faults_injected.issue.fail_later"] == 2
    assert state["faults"]["calls"] == {}  # the count is used up


def test_timed_out_batch_is_unknown_for_every_item_then_found_once(sandbox) -> None:
    sandbox.faults(calls={"issue": {"mode": "timeout", "count": 1}}, timeout_sleep_ms=700)
    gateway = sandbox.gateway(read_timeout=0.3)
    batch = [issue_request(f"to-{i}") for i in range(3)]
    answers = gateway.issue_many(batch)
    assert all(isinstance(a, OutcomeUnknown) for a in answers)
    assert [a.serial_no for a in answers] == ["to-0", "to-1", "to-2"]
    assert len({id(a) for a in answers}) == 3
    # The caller queries: the provider did process the batch, once.
    issued_numbers(settled(gateway, ["to-0", "to-1", "to-2"]))
    assert all(isinstance(a, Accepted) and a.duplicate for a in gateway.issue_many(batch))
    state = sandbox.admin("state")
    assert state["invoices"] == {"blue.issued": 3}
    assert state["counters"]["accepted"] == 3
    assert state["counters"]["faults_injected.issue.timeout"] == 1


@pytest.mark.parametrize(("mode", "processed"), [("unknown", True), ("error_5xx", False)])
def test_5xx_batch_is_unknown_for_every_item(sandbox, mode: str, processed: bool) -> None:
    sandbox.faults(calls={"issue": {"mode": mode, "count": 1}})
    gateway = sandbox.gateway()
    answers = gateway.issue_many([issue_request("x-1"), issue_request("x-2")])
    assert [(type(a), a.serial_no) for a in answers] == [(OutcomeUnknown, "x-1"), (OutcomeUnknown, "x-2")]
    results = settled(gateway, ["x-1", "x-2"])
    if processed:
        issued_numbers(results)
    else:
        assert all(isinstance(r, NotFound) for r in results)


def test_rate_limited_batch_is_transient_for_every_item(sandbox) -> None:
    sandbox.faults(calls={"issue": {"mode": "rate_limit", "count": 1}})
    answers = sandbox.gateway().issue_many([issue_request("rl-1"), issue_request("rl-2")])
    assert all(type(a) is TransientGatewayError and a.retry_after == 1.0 for a in answers)
    assert sandbox.admin("state")["invoices"] == {}


def test_query_batch_5xx_is_transient(sandbox) -> None:
    sandbox.faults(calls={"query": {"mode": "error_5xx", "count": 1}})
    answers = sandbox.gateway().query_many(["a", "b"])
    assert all(type(a) is TransientGatewayError for a in answers)


def test_login_expired_refuses_every_item_and_stops_sending(sandbox) -> None:
    sandbox.admin("expire-login")
    gateway = sandbox.gateway()
    answers = gateway.issue_many([issue_request(f"le-{i}") for i in range(120)])  # three chunks
    assert len(answers) == 120 and all(isinstance(a, AuthExpired) for a in answers)
    assert sandbox.counters()["login_expired_refusals"] == 1  # one call, no further chunks
    assert all(isinstance(r, NotFound) for r in gateway.query_many(["le-0", "le-119"]))
    sandbox.admin("renew-login")
    assert all(isinstance(a, Accepted) for a in gateway.issue_many([issue_request("le-0")]))


def test_connection_refused_is_transient_for_every_item() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = SandboxGateway(f"http://127.0.0.1:{port}", APP_KEY, APP_SECRET, connect_timeout=1, read_timeout=1)
    answers = gateway.issue_many([issue_request("cr-1"), issue_request("cr-2")])
    assert all(type(a) is TransientGatewayError and a.code == "CONNECTION" for a in answers)
    assert all(type(a) is TransientGatewayError for a in gateway.query_many(["cr-1"]))


# ---------------------------------------------------------------------- Nuonuo query_many


class CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if request.headers.get("method") == nn.M_QUERY:
            self.bodies.append(json.loads(request.body))
        return super().send(request, **kwargs)


def test_nuonuo_query_many_sends_order_nos_in_chunks_and_matches_by_order_no(start_sandbox) -> None:
    box = start_sandbox("nuonuo")
    gateway = box.gateway()
    assert isinstance(gateway, NuonuoGateway) and gateway.batch_size == 1 and gateway.query_batch_size == 50
    serials = [f"tmall-31415926-blue-{i}" for i in range(55)]  # longer than 20: hashed orderNos
    box.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    assert all(isinstance(a, Accepted) for a in gateway.issue_many([issue_request(s) for s in serials]))
    gateway.session = CountingSession()
    wanted = [serials[3], "never-sent", serials[0], serials[3], *serials[4:]]
    answers = gateway.query_many(wanted)
    sent = gateway.session.bodies
    assert [len(body["orderNos"]) for body in sent] == [49, 5]  # 50 + 5 asked; a repeat is asked once
    assert sent[0]["orderNos"][:3] == [order_no_for(serials[3]), order_no_for("never-sent"), order_no_for(serials[0])]
    assert isinstance(answers[1], NotFound)
    assert answers[0].serial_no == answers[3].serial_no == serials[3]
    assert answers[2].serial_no == serials[0] and answers[2].status == IssueStatus.FAILED  # the fail_later one
    assert answers[2].error_code == "NUONUO_24"
    rest = [answers[0], *answers[3:]]
    assert [a.serial_no for a in answers[4:]] == serials[4:]
    assert all(isinstance(a, IssueResult) and a.status == IssueStatus.ISSUED and a.number for a in rest)
    assert len({a.number for a in answers[4:]}) == 51


def test_nuonuo_query_many_whole_call_failure_is_per_item(start_sandbox) -> None:
    box = start_sandbox("nuonuo")
    gateway = box.gateway()
    gateway.issue(issue_request("nq-1"))
    box.faults(calls={"query": {"mode": "error_5xx", "count": 1}})
    answers = gateway.query_many(["nq-1", "nq-2"])
    assert all(type(a) is TransientGatewayError for a in answers) and answers[0] is not answers[1]
    ok, missing = gateway.query_many(["nq-1", "nq-2"])
    assert isinstance(ok, IssueResult) and ok.status == IssueStatus.ISSUED
    assert isinstance(missing, NotFound)


def test_nuonuo_issue_many_is_the_default_loop(start_sandbox) -> None:
    box = start_sandbox("nuonuo")
    box.admin("expire-login")
    gateway = NuonuoGateway(app_key=APP_KEY, app_secret=APP_SECRET, user_tax=SELLER_TAX_ID,
                            services_url=f"{box.url}/open/v1/services", token_url=f"{box.url}/accessToken")
    answers = gateway.issue_many([issue_request("nl-1"), issue_request("nl-2")])
    assert all(isinstance(a, AuthExpired) for a in answers)
    assert box.counters()["login_expired_refusals"] == 1  # paused after the first: nothing more sent


def test_overlapping_batches_from_two_processes_issue_each_serial_once(tmp_path) -> None:
    db = tmp_path / "shared.sqlite3"
    args = ["--app-key", APP_KEY, "--app-secret", APP_SECRET]
    processes = [start_sandbox_subprocess(db, extra_args=args) for _ in range(2)]
    try:
        gateways = [SandboxGateway(p.base_url, APP_KEY, APP_SECRET) for p in processes]
        # 8 batches of 30, each overlapping the next by 15: 135 distinct serials, 105 repeats.
        batches = [[f"ov-{i}" for i in range(start, start + 30)] for start in range(0, 120, 15)]

        def send(index: int) -> list[Accepted | TaxGatewayError]:
            return gateways[index % 2].issue_many([issue_request(s) for s in batches[index]])

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = [a for batch in pool.map(send, range(len(batches))) for a in batch]
        assert all(isinstance(a, Accepted) for a in answers)
        assert sum(not a.duplicate for a in answers) == 135
        serials = sorted({s for batch in batches for s in batch})
        assert len(set(issued_numbers(gateways[1].query_many(serials)))) == 135
        state = requests.get(f"{processes[0].base_url}/admin/state", timeout=5).json()
        assert state["invoices"] == {"blue.issued": 135}
        assert state["counters"]["duplicates_refused"] == 105
    finally:
        for process in processes:
            process.stop()

"""The state machines: one table each, every named group of statuses derived from it."""

from __future__ import annotations

from app.engine.states import (
    DECIDABLE,
    INVOICE_TRANSITIONS,
    REDECIDABLE_BY_HAND,
    REQUEST_TRANSITIONS,
    SENDABLE,
    InvoiceStatus,
    RequestStatus,
    may_move,
    sources_of,
)


def test_every_status_has_a_row_and_every_target_is_a_status() -> None:
    for table, statuses in ((REQUEST_TRANSITIONS, RequestStatus), (INVOICE_TRANSITIONS, InvoiceStatus)):
        assert set(table) == set(statuses)
        assert all(target in statuses for targets in table.values() for target in targets)


def test_groups_are_derived_from_the_table() -> None:
    assert sources_of(REQUEST_TRANSITIONS, RequestStatus.DECIDING) == DECIDABLE
    assert DECIDABLE == {"received", "waiting", "held", "skipped", "failed"}
    assert REDECIDABLE_BY_HAND == {"waiting", "held", "skipped", "failed"}
    assert SENDABLE == {"ready", "retry_ready"}


def test_a_failed_invoice_is_retried_at_the_provider_never_resent() -> None:
    # 重试: the provider retries the failed serial; sending it again would only get "duplicate".
    assert INVOICE_TRANSITIONS[InvoiceStatus.FAILED] == {InvoiceStatus.RETRY_READY, InvoiceStatus.CANCELLED}
    assert INVOICE_TRANSITIONS[InvoiceStatus.RETRY_READY] == {InvoiceStatus.ISSUING, InvoiceStatus.CANCELLED}


def test_statuses_are_their_database_strings() -> None:
    assert RequestStatus.HELD == "held" and f"{InvoiceStatus.RED_PENDING}" == "red_pending"
    assert may_move(INVOICE_TRANSITIONS, "ready", InvoiceStatus.ISSUING)
    assert not may_move(INVOICE_TRANSITIONS, "issued", InvoiceStatus.READY)
    # A re-issue (换开) is a new request: a reversed one is never decided again.
    assert REQUEST_TRANSITIONS[RequestStatus.REVERSED] == frozenset()

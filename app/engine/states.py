"""The state machines of invoice requests and invoices: the statuses and one transition table
each. Every "may this move?" and every named group of statuses is derived from these tables
(app/services/transitions.py writes the moves as guarded UPDATEs).

Invoice request (one per order and title; a re-issue (换开) is a new request):

    received ─► deciding ─┬─► waiting ──► deciding           (trigger or time reached)
                          ├─► held ─────► deciding | skipped (a person resolves it)
                          ├─► skipped ──► deciding           (the order changed)
                          └─► issuing ──► issued ─► delivering ─► delivered
                                     └──► failed ──► deciding | issuing (a person retries)
    issued / delivered ─► reversing ─► reversed  (red-letter, after-sales)

Invoice (one per split part of an order):

    ready ─► issuing ─┬─► pending ─► issued ─► delivering ─► delivered
      ▲               ├─► unknown ─► (query) pending | issued | failed | ready
      └── (transient, backoff) ┘    └─► failed ─► retry_ready | cancelled
    retry_ready ─► issuing ─► as from ready (back to retry_ready on backoff or pause)
      (重试: the provider retries the failed serial — never failed → ready, which would resend a
       spent serial; one the provider never accepted goes to ready and is sent again; at a
       provider that cannot retry, ready under a new serial, the old one closed in the log)
    issued / delivered ─► red_pending ─► reversed
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar


class RequestStatus(StrEnum):
    RECEIVED = "received"
    DECIDING = "deciding"
    WAITING = "waiting"
    HELD = "held"
    SKIPPED = "skipped"
    ISSUING = "issuing"
    ISSUED = "issued"
    FAILED = "failed"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    REVERSING = "reversing"
    REVERSED = "reversed"


class InvoiceStatus(StrEnum):
    READY = "ready"
    RETRY_READY = "retry_ready"  # 重试 asked for: the issue job has the provider retry the serial
    ISSUING = "issuing"
    PENDING = "pending"
    UNKNOWN = "unknown"
    ISSUED = "issued"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    RED_PENDING = "red_pending"
    FAILED = "failed"
    REVERSED = "reversed"
    CANCELLED = "cancelled"


R = RequestStatus
I = InvoiceStatus  # noqa: E741 - read as "invoice"

REQUEST_TRANSITIONS: Mapping[RequestStatus, frozenset[RequestStatus]] = {
    R.RECEIVED: frozenset({R.DECIDING, R.SKIPPED}),
    R.DECIDING: frozenset({R.WAITING, R.HELD, R.SKIPPED, R.ISSUING, R.FAILED}),
    R.WAITING: frozenset({R.DECIDING, R.SKIPPED}),
    R.HELD: frozenset({R.DECIDING, R.SKIPPED}),
    R.SKIPPED: frozenset({R.DECIDING}),
    R.ISSUING: frozenset({R.ISSUED, R.FAILED, R.HELD}),
    R.FAILED: frozenset({R.DECIDING, R.SKIPPED, R.ISSUING}),
    R.ISSUED: frozenset({R.DELIVERING, R.REVERSING}),
    R.DELIVERING: frozenset({R.DELIVERED, R.ISSUED}),
    R.DELIVERED: frozenset({R.REVERSING}),
    R.REVERSING: frozenset({R.REVERSED, R.ISSUED}),
    R.REVERSED: frozenset(),
}

INVOICE_TRANSITIONS: Mapping[InvoiceStatus, frozenset[InvoiceStatus]] = {
    I.READY: frozenset({I.ISSUING, I.FAILED, I.CANCELLED}),
    I.RETRY_READY: frozenset({I.ISSUING, I.CANCELLED}),
    I.ISSUING: frozenset({I.PENDING, I.ISSUED, I.UNKNOWN, I.FAILED, I.READY, I.RETRY_READY}),
    I.PENDING: frozenset({I.ISSUED, I.FAILED, I.UNKNOWN, I.PENDING}),
    I.UNKNOWN: frozenset({I.PENDING, I.ISSUED, I.FAILED, I.READY}),
    I.ISSUED: frozenset({I.DELIVERING, I.RED_PENDING}),
    I.DELIVERING: frozenset({I.DELIVERED, I.ISSUED}),
    I.DELIVERED: frozenset({I.RED_PENDING}),
    I.RED_PENDING: frozenset({I.REVERSED, I.ISSUED}),
    I.FAILED: frozenset({I.RETRY_READY, I.CANCELLED}),
    I.REVERSED: frozenset(),
    I.CANCELLED: frozenset(),
}


S = TypeVar("S", bound=StrEnum)


def sources_of(table: Mapping[S, frozenset[S]], target: S) -> frozenset[S]:
    """The statuses from which ``target`` may be reached in one move."""
    return frozenset(state for state, targets in table.items() if target in targets)


def may_move(table: Mapping[S, frozenset[S]], current: str, target: S) -> bool:
    """``current`` as stored (a plain string): StrEnum members hash and compare as their value."""
    return any(state == current and target in targets for state, targets in table.items())


# Requests a decision may be taken on (again): an order update sends these back to the rules.
DECIDABLE: frozenset[RequestStatus] = sources_of(REQUEST_TRANSITIONS, R.DECIDING)
# What a person may send back to the rules by hand: a received request is on its way already.
REDECIDABLE_BY_HAND: frozenset[RequestStatus] = DECIDABLE - {R.RECEIVED}
# The invoice exists at the provider with its number: issued and every state after it but
# the reversal (they count against the monthly credit and as "issued" in every view).
ISSUED_INVOICE: frozenset[InvoiceStatus] = frozenset({I.ISSUED, I.DELIVERING, I.DELIVERED})
# An invoice part that no longer keeps its request from being issued.
SETTLED_INVOICE: frozenset[InvoiceStatus] = ISSUED_INVOICE | {I.CANCELLED}
# What the issue job sends: new serials (ready) and 重试 of failed ones (retry_ready).
SENDABLE: frozenset[InvoiceStatus] = sources_of(INVOICE_TRANSITIONS, I.ISSUING)
# Sent, answer not recorded yet: asked about by serial, never sent again blind.
AWAITING_ANSWER: frozenset[InvoiceStatus] = frozenset({I.PENDING, I.UNKNOWN, I.ISSUING})
# Requests that still owe the buyer an invoice (deadline alarms watch them).
OPEN_REQUEST: frozenset[RequestStatus] = frozenset(
    {R.RECEIVED, R.DECIDING, R.WAITING, R.HELD, R.FAILED, R.ISSUING})

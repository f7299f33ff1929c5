"""Provider calls off the job's thread, so that a worker never waits on the tax provider.

A worker process keeps a few sender threads: a decide or issue job commits its invoices as
``issuing`` (their serials stored), hands them to ``Sender.submit`` and, when the provider is
slow (its calls or its settling take longer than ``SLOW``), takes its next job while the calls
run here; with a fast provider the job sends them itself, which costs less than a hand-over. Invoices the provider accepted are asked about once it should have settled
them (the settle time learnt from the provider's own answers: its ``issued_at`` minus when it
accepted), and the answers to both calls are recorded in one transaction, as for a provider
that settles at once. What is still pending is asked again shortly, then left to the periodic
tick (its ``next_attempt_at`` is set for that).

Exactly-once does not depend on any of this: a process that dies leaves ``issuing`` invoices
the tick queries by serial, and pending ones the tick polls.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from app.services import issue, poll
from app.services.issue import Claim
from app.services.outcome import Outcome
from app.settings import Settings

log = logging.getLogger(__name__)

FAST_SETTLE = 0.15  # a provider that settles faster than this is asked at once
SLOW = 0.05  # seconds the provider takes to answer a sending, beyond which jobs hand it over
RETRY_STEP = 0.25  # seconds between follow-up polls of what was still pending
FOLLOW_UPS = 8  # then the tick takes over (back-off)
MAX_SETTLE = 30.0


class SettleClock:
    """How long after accepting an invoice the provider settles it: a high quantile of what it
    reported lately (its issued_at minus our receipt of the acceptance), so one early poll in
    ten at most finds it still pending."""

    def __init__(self, start: float, window: int = 200) -> None:
        self.samples: list[float] = [start]
        self.window = window
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        if 0 <= seconds <= MAX_SETTLE:  # beyond: clock skew or a stuck invoice, not a pace
            with self._lock:
                self.samples = [*self.samples[-(self.window - 1):], seconds]

    def estimate(self) -> float:
        with self._lock:
            ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


class Sender:
    def __init__(self, settings: Settings, threads: int = 8) -> None:
        self.settings = settings
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="kaipiao-sender")
        self.clock = SettleClock(settings.timing.first_poll.total_seconds())
        self.pace = SettleClock(0.0)  # how long the provider takes to answer a sending
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._in_flight = 0
        self._stopped = False
        threading.Thread(target=self._run_timers, name="kaipiao-sender-timers", daemon=True).start()

    # ------------------------------------------------------------------ sending

    def submit(self, claims: list[Claim]) -> Outcome | None:
        """Send ``claims``: from a sender thread when the provider is slow (returns None: the job
        does not wait), else right here (returns what happened)."""
        if self.clock.estimate() < FAST_SETTLE and self.pace.estimate() < SLOW:
            return self._send(claims, inline=True)
        self._track(+1)
        # The job's logging context (its job id and request id) goes with its calls.
        self.pool.submit(contextvars.copy_context().run, self._send, claims)
        return None

    def _send(self, claims: list[Claim], inline: bool = False) -> Outcome | None:
        started = time.time()
        try:
            settle = self.clock.estimate()
            outcome = issue.send(claims, self.settings, settle=settle if settle >= FAST_SETTLE else 0.0)
            accepted_at = outcome.sent_at or time.time()
            self.pace.observe(accepted_at - started)  # the calls that sent them
            self._learn(outcome, accepted_at)
            if outcome.waiting:
                self._later(RETRY_STEP, outcome.waiting, accepted_at, 1)
            return outcome
        except Exception:  # the tick recovers what this left in issuing
            if inline:
                raise
            log.exception("sending %d invoices failed", len(claims))
            return None
        finally:
            if not inline:
                self._track(-1)

    def _poll(self, invoice_ids: list[int], accepted_at: float, attempt: int) -> None:
        try:
            outcome = poll.poll_invoices(invoice_ids, self.settings)
            self._learn(outcome, accepted_at)
            if outcome.waiting and attempt < FOLLOW_UPS:
                self._later(RETRY_STEP, outcome.waiting, accepted_at, attempt + 1)
        except Exception:
            log.exception("polling %d invoices failed; the tick asks again", len(invoice_ids))
        finally:
            self._track(-1)

    def _learn(self, outcome: Outcome, accepted_at: float) -> None:
        for issued_at in outcome.issued_at.values():
            self.clock.observe(issued_at.timestamp() - accepted_at)

    # ------------------------------------------------------------------ timers

    def _later(self, delay: float, invoice_ids: list[int], accepted_at: float, attempt: int) -> None:
        self._track(+1)
        context = contextvars.copy_context()  # the follow-up logs as the job that sent them
        with self._wake:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq),
                                          lambda: self._submit_poll(context, invoice_ids, accepted_at, attempt)))
            self._wake.notify()

    def _submit_poll(self, context: contextvars.Context, invoice_ids: list[int], accepted_at: float,
                     attempt: int) -> None:
        self.pool.submit(context.run, self._poll, invoice_ids, accepted_at, attempt)

    def _run_timers(self) -> None:
        with self._wake:
            while not self._stopped:
                if not self._timers:
                    self._wake.wait()
                    continue
                due, _, action = self._timers[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._timers)
                action()

    def _track(self, delta: int) -> None:
        with self._wake:
            self._in_flight += delta
            self._wake.notify_all()

    # ------------------------------------------------------------------ stopping

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait for what is being sent and the follow-ups already planned (a worker stopping)."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._in_flight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def stop(self) -> None:
        self.drain()
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self.pool.shutdown(wait=True)


_sender: Sender | None = None


def start(settings: Settings, threads: int) -> Sender:
    """The sender of this worker process (jobs hand their claims to it)."""
    global _sender
    if _sender is None:
        _sender = Sender(settings, threads)
    return _sender


def current() -> Sender | None:
    return _sender

"""Gauges read at scrape time (a custom collector): RQ queue depths, the outbox backlog, ledger
events awaiting sealing, each seller's remaining monthly credit. One cheap query each; a source
that does not answer is left out of that scrape (``kaipiao_gauge_errors`` says which), never a
failed scrape."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from rq import Queue
from sqlalchemy import func, select

from app import db
from app.jobs import queues
from app.models import GatewayStatus, InvoiceEvent, OutboxMessage, SellerEntity
from app.services.issuing_control import scope_of

log = logging.getLogger(__name__)


class GaugeCollector:
    def collect(self) -> Iterator[Any]:
        errors = GaugeMetricFamily("kaipiao_gauge_errors", "Gauge sources that failed at this scrape",
                                   labels=["source"])
        for source, read in (("redis", self._queues), ("database", self._database)):
            try:
                yield from read()
            except Exception:  # a down source is a missing gauge, not a failed scrape
                log.warning("metrics: the %s gauges could not be read", source, exc_info=True)
                errors.add_metric([source], 1)
        yield errors

    def _queues(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("kaipiao_queue_depth", "Jobs waiting in each RQ queue", labels=["queue"])
        connection = queues.connection()
        for name in queues.QUEUE_NAMES:
            depth.add_metric([name], Queue(name, connection=connection).count)
        yield depth

    def _database(self) -> Iterator[Any]:
        session = db.SessionFactory()
        try:
            backlog = session.scalar(select(func.count()).select_from(OutboxMessage)
                                     .where(OutboxMessage.dispatched_at.is_(None))) or 0
            unsealed = session.scalar(select(func.count()).select_from(InvoiceEvent)
                                      .where(InvoiceEvent.hash.is_(None))) or 0
            sellers = session.execute(select(SellerEntity.id, SellerEntity.code)).all()
            credit = {row.scope: row.credit_remaining for row in session.execute(
                select(GatewayStatus.scope, GatewayStatus.credit_remaining)
                .where(GatewayStatus.credit_remaining.is_not(None)))}
        finally:
            session.close()
        yield GaugeMetricFamily("kaipiao_outbox_backlog", "Outbox rows not yet pushed to the queue",
                                value=backlog)
        yield GaugeMetricFamily("kaipiao_ledger_unsealed_events", "Invoice-log events awaiting sealing",
                                value=unsealed)
        remaining = GaugeMetricFamily("kaipiao_credit_remaining_yuan",
                                      "Monthly credit (授信额度) left, as last asked of the provider",
                                      labels=["seller"])
        for seller_id, code in sellers:
            value = credit.get(scope_of(seller_id))
            if value is not None:
                remaining.add_metric([code], float(value))
        yield remaining

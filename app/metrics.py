"""Prometheus metrics: every definition in one place (served by ``GET /metrics``, app/web/metrics.py).

Multiprocess mode: web processes and RQ workers each write their counters to files in
``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any web process adds them up. The directory must be
known before ``prometheus_client`` is imported, so this module sets it: the environment's, or
``<instance>/prometheus`` (created here). Empty it when the whole service (re)starts, never while
processes run (the files of the previous run would be counted again).

Labels are the platform and the seller entity's code (``seller``), never personal data (no buyer
title, tax id, e-mail or phone). Counters are incremented after the commit that made the change
true, in bulk per unit of work (app/services/unit_of_work.py); gauges are read from the database
and Redis at scrape time (app/jobs/metrics_gauges.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from app.settings import default_instance_path


def multiproc_dir() -> Path:
    """Where this process's metric files go (``PROMETHEUS_MULTIPROC_DIR`` or the instance default)."""
    return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or default_instance_path() / "prometheus")


_DIR = multiproc_dir()
_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_DIR)

from prometheus_client import Counter, Histogram  # noqa: E402  (after the directory is set)

SELLER_LABELS = ("platform", "seller")

ORDERS_RECEIVED = Counter("kaipiao_orders_received", "Orders taken in (first seen; updates not counted)",
                          SELLER_LABELS)
DECISIONS = Counter("kaipiao_decisions", "Requests decided, by the rules' action (issue/skip/hold/wait)",
                    (*SELLER_LABELS, "action"))
INVOICES_ISSUED = Counter("kaipiao_invoices_issued", "Invoices issued; color=red: red-lettered (红冲)",
                          (*SELLER_LABELS, "color"))
INVOICES_FAILED = Counter("kaipiao_invoices_failed", "Invoices the provider refused (status failed)",
                          (*SELLER_LABELS, "color"))
INVOICES_DELIVERED = Counter("kaipiao_invoices_delivered", "Invoices delivered to the buyer",
                             (*SELLER_LABELS, "color"))
INVOICES_UPLOADED = Counter("kaipiao_invoices_uploaded",
                            "Invoices uploaded back to the platform (0 until that feature exists)",
                            (*SELLER_LABELS, "color"))
ISSUE_LATENCY = Histogram(
    "kaipiao_issue_latency_seconds", "From the request's arrival to its blue invoice issued", SELLER_LABELS,
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 72 * 3600))
PROVIDER_CALL_SECONDS = Histogram(
    "kaipiao_provider_call_seconds", "Tax provider calls, by provider and operation",
    ("provider", "operation"), buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
PROVIDER_ERRORS = Counter("kaipiao_provider_errors", "Tax provider errors, by provider, operation and code",
                          ("provider", "operation", "code"))

INVOICE_COUNTERS = {"issued": INVOICES_ISSUED, "failed": INVOICES_FAILED, "delivered": INVOICES_DELIVERED}


def render(extra_collectors: tuple[object, ...] = ()) -> tuple[bytes, str]:
    """The text exposition of every process's metrics plus ``extra_collectors`` (scrape-time gauges)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(_DIR))
    for collector in extra_collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST

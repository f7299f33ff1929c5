"""The decision for one stored order: the published rule set of its shop (per-shop override,
else the merchant's, else the shipped default) evaluated by app/rules.

A newly published version takes effect for the next order in every process: the published
version is looked up per decision (one indexed query) and compiled once per process.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Shop

_compiled: dict[int, Any] = {}
_lock = threading.Lock()


def ruleset_for(session: Session, shop: Shop | None):
    """The compiled rule set published for ``shop``; None = the shipped default."""
    if shop is None:
        return None
    from app.rules import compile_ruleset
    from app.rules.store import published_version

    version = published_version(session, shop.merchant_id, shop.id)
    if version is None:
        return None
    with _lock:
        compiled = _compiled.get(version.id)
    if compiled is None:
        compiled = compile_ruleset(version.document, label=version.label)
        with _lock:
            _compiled[version.id] = compiled
    return compiled


def decide_order(session: Session, order_doc: dict[str, Any], shop: Shop | None, *, now: datetime | None = None):
    from app.rules import decide

    return decide(order_doc, ruleset=ruleset_for(session, shop), now=now)

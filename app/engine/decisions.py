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
# (merchant, shop) -> (epoch, version id or None); the epoch is the newest version id, so any
# save, publish or rollback (all append a version) invalidates every entry at once.
_published: dict[tuple[int, int], tuple[int, int | None]] = {}
_lock = threading.Lock()


def _epoch(session: Session) -> int:
    """Newest rule-set version id, read once per transaction (a decide batch): a version
    published meanwhile applies from the next batch."""
    from sqlalchemy.orm import scoped_session

    if isinstance(session, scoped_session):  # the web request's session
        session = session()
    cached = session.info.get("kaipiao_rules_epoch")
    if cached is not None and session.info.get("kaipiao_rules_epoch_tx") is session.get_transaction():
        return cached
    from sqlalchemy import func, select

    from app.models import RuleSetVersion

    epoch = session.scalar(select(func.max(RuleSetVersion.id))) or 0
    session.info["kaipiao_rules_epoch"] = epoch
    session.info["kaipiao_rules_epoch_tx"] = session.get_transaction()
    return epoch


def ruleset_for(session: Session, shop: Shop | None):
    """The compiled rule set published for ``shop``; None = the shipped default.

    One cheap query per decision (the epoch) keeps this exact: a version published a moment
    ago decides the very next order, in every process, without a restart."""
    if shop is None:
        return None
    from app.models import RuleSetVersion
    from app.rules import compile_ruleset
    from app.services.rule_versions import published_version

    epoch = _epoch(session)
    key = (shop.merchant_id, shop.id)
    with _lock:
        cached = _published.get(key)
    if cached is not None and cached[0] == epoch:
        version_id = cached[1]
        if version_id is None:
            return None
        with _lock:
            compiled = _compiled.get(version_id)
        if compiled is not None:
            return compiled
    version = published_version(session, shop.merchant_id, shop.id)
    with _lock:
        _published[key] = (epoch, version.id if version is not None else None)
    if version is None:
        return None
    with _lock:
        compiled = _compiled.get(version.id)
    if compiled is None:
        assert isinstance(version, RuleSetVersion)
        compiled = compile_ruleset(version.document, label=version.label)
        with _lock:
            _compiled[version.id] = compiled
    return compiled


def decide_order(session: Session, order: Any, shop: Shop | None, *, now: datetime | None = None):
    from app.rules import decide

    return decide(order, ruleset=ruleset_for(session, shop), now=now)

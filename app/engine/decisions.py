"""The decision for one stored order: the published rule set of its shop (per-shop override,
else the merchant's, else the shipped default) evaluated by app/rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Shop


def ruleset_for(session: Session, shop: Shop | None) -> tuple[dict[str, Any] | None, str | None]:
    """(rule-set document, version label) published for ``shop``; (None, None) = shipped default."""
    if shop is None:
        return None, None
    from app.rules.store import published_version

    version = published_version(session, shop.merchant_id, shop.id)
    if version is None:
        return None, None
    return version.document, version.label


def decide_order(session: Session, order_doc: dict[str, Any], shop: Shop | None, *, now: datetime | None = None):
    from app.rules import decide

    document, label = ruleset_for(session, shop)
    return decide(order_doc, ruleset=document, now=now, version=label)

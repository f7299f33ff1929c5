"""Dry-run one order with a rule-set version: decide and compose it exactly as the decide job
would (app.services.context.compose_for), for the tax specialist's editor. Reads only.

Stored orders are found by ``stored_order``; a caller confined to one merchant (``merchant_id``)
finds only that merchant's orders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.engine.contract import parse_order
from app.errors import Problem, ValidationFailed
from app.models import Order, Shop
from app.models.rules import RuleSet, RuleSetVersion
from app.models.types import MAX_ROW_ID
from app.render import render_html
from app.rules import compile_ruleset, decide
from app.rules.engine import RuleEngineError
from app.rules.ruleset import RuleSet as CompiledRuleSet
from app.services.context import compose_for
from app.services.rule_versions import covers


@dataclass
class DryRun:
    decision: dict[str, Any]
    options: dict[str, Any]
    draft: dict[str, Any]
    face: str
    shop: Shop | None
    note: str | None = None

    @property
    def final_action(self) -> str:
        return self.draft.get("decision", {}).get("action", self.decision["action"])


def compile_version(version: RuleSetVersion) -> CompiledRuleSet:
    return compile_ruleset(version.document, label=version.label)


def stored_order(session: Session, raw: str, *, merchant_id: int | None = None) -> Order | None:
    """The stored order named by its id or ``platform:shop:order no``; None when there is none,
    or when it belongs to another merchant than ``merchant_id`` (None: any merchant)."""
    raw = raw.strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= 20:  # never beyond the column's range (PostgreSQL refuses it)
        number = int(raw)
        if not 0 < number <= MAX_ROW_ID:
            return None
        query = select(Order).where(Order.id == number)
    else:
        parts = raw.split(":", 2)
        if len(parts) != 3:
            return None
        query = select(Order).where(Order.platform == parts[0], Order.shop_code == parts[1],
                                    Order.order_no == parts[2])
    if merchant_id is not None:
        query = query.join(Shop, Shop.id == Order.shop_id).where(Shop.merchant_id == merchant_id)
    return session.scalar(query)


def recent_orders(session: Session, rule_set: RuleSet, limit: int, *,
                  merchant_id: int | None = None) -> list[Order]:
    """The newest stored orders of the shops ``rule_set`` covers (of ``merchant_id``'s shops only, if given)."""
    shops = select(Shop)
    if merchant_id is not None:
        shops = shops.where(Shop.merchant_id == merchant_id)
    shop_ids = [s.id for s in session.scalars(shops) if covers(rule_set, s)]
    if not shop_ids:
        return []
    return list(session.scalars(select(Order).where(Order.shop_id.in_(shop_ids))
                                .order_by(Order.id.desc()).limit(limit)))


def fallback_shop(session: Session, rule_set: RuleSet) -> Shop | None:
    """The shop whose seller and options compose a pasted order whose own shop is unknown."""
    if rule_set.shop_id is not None:
        return session.get(Shop, rule_set.shop_id)
    query = select(Shop).where(Shop.active.is_(True)).order_by(Shop.id).limit(1)
    if rule_set.merchant_id is not None:
        query = query.where(Shop.merchant_id == rule_set.merchant_id)
    return session.scalar(query)


def dry_run(session: Session, version: RuleSetVersion, order: Any, shop: Shop | None, *,
            now: datetime, note: str | None = None) -> DryRun:
    """Decide ``order`` with ``version`` and compose it as the pipeline would.
    Raises ValidationFailed (with paths) for a bad order or a version that no longer compiles."""
    if not isinstance(order, dict):
        raise ValidationFailed(Problem("order", "invalid", "an order must be a JSON object"))
    try:
        parsed = parse_order(order)
    except ValidationFailed as exc:
        raise ValidationFailed([Problem(f"order.{p.path}" if p.path else "order", p.code, p.message)
                                for p in exc.problems]) from None
    compiled = compile_version(version)
    try:
        decision = decide(parsed, ruleset=compiled, now=now)
    except RuleEngineError as exc:  # the engine failed for this order: shown, never a 500
        raise ValidationFailed(Problem("rules", "engine_error", str(exc)[:300])) from exc
    options = {**(decision.options or {}), **((shop.options or {}) if shop else {})}  # as compose_for merges
    draft = compose_for(session, parsed, shop, decision)
    return DryRun(decision=decision.as_dict(full=True), options=options, draft=draft,
                  face=render_html(draft, standalone=False, inline_css=False), shop=shop, note=note)

"""Replay stored orders with a rule-set version as if it were published: what changes, order
by order and in totals, before anyone publishes it. Reads only: nothing is added or flushed."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.engine.contract import parse_order
from app.errors import KaipiaoError, ValidationFailed
from app.models import Order, Shop
from app.models.rules import RuleSetVersion
from app.rules import decide, default_ruleset
from app.rules.engine import RuleEngineError
from app.rules.ruleset import RuleSet as CompiledRuleSet
from app.services.context import compose_for, seller_for, seller_party
from app.services.rule_dry_run import compile_version
from app.services.rule_versions import covers, published_version, scope_level

REPLAY_CAP = 5000
REPLAY_ROWS_SHOWN = 500
# Orders whose composed draft ends in one of these are (or will be) invoiced with that draft.
INVOICED_ACTIONS = ("issue", "wait")
ACTION_ORDER = ("issue", "wait", "hold", "skip", "error")


@dataclass
class Outcome:
    action: str  # the composed draft's final action (composition may hold what rules issued), or "error"
    rules_action: str | None
    reasons: list[str]
    fired: list[str]
    options: dict[str, Any]
    seller_code: str | None
    required: list[str]
    amount: Decimal
    tax: Decimal
    total: Decimal
    label: str
    error: str | None = None

    def same_as(self, other: Outcome) -> bool:
        keys = ("action", "rules_action", "fired", "options", "seller_code", "required", "amount", "tax", "reasons")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass
class ReplayRow:
    order_pk: int
    key: str
    before: Outcome
    after: Outcome

    @property
    def changed_options(self) -> list[str]:
        keys = self.before.options.keys() | self.after.options.keys()
        return sorted(k for k in keys if self.before.options.get(k) != self.after.options.get(k))

    @property
    def fired_added(self) -> list[str]:
        return [r for r in self.after.fired if r not in self.before.fired]

    @property
    def fired_removed(self) -> list[str]:
        return [r for r in self.before.fired if r not in self.after.fired]


@dataclass
class Totals:
    count: int = 0
    amount: Decimal = Decimal("0.00")
    tax: Decimal = Decimal("0.00")
    total: Decimal = Decimal("0.00")

    def add(self, outcome: Outcome) -> None:
        if outcome.action in INVOICED_ACTIONS:
            self.count += 1
            self.amount += outcome.amount
            self.tax += outcome.tax
            self.total += outcome.total


@dataclass
class Replay:
    requested: int
    orders: int = 0
    changed: int = 0
    unaffected: int = 0  # orders of shops where a more specific published rule set still wins
    matrix: Counter = field(default_factory=Counter)  # (before action, after action) -> orders
    before: Totals = field(default_factory=Totals)
    after: Totals = field(default_factory=Totals)
    rows: list[ReplayRow] = field(default_factory=list)
    before_labels: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    now: datetime | None = None

    @property
    def actions(self) -> list[str]:
        seen = {a for pair in self.matrix for a in pair}
        return [a for a in ACTION_ORDER if a in seen]

    @property
    def capped(self) -> bool:
        return self.changed > len(self.rows)


def _outcome(session: Session, parsed: Any, shop: Shop, compiled: CompiledRuleSet,
             now: datetime, sellers: dict[tuple[int, str | None], dict[str, Any] | None]) -> Outcome:
    try:
        decision = decide(parsed, ruleset=compiled, now=now)
    except (KaipiaoError, RuleEngineError) as exc:
        return _error_outcome(compiled.label, exc)
    # The seller party per (shop, routed code) is looked up once: compose_for would query it per order.
    key = (shop.id, decision.seller_code)
    if key not in sellers:
        entity = seller_for(session, shop, decision.seller_code)
        sellers[key] = seller_party(entity, shop) if entity is not None else None
    base: dict[str, Any] = dict(action="", rules_action=decision.action, reasons=[r["code"] for r in decision.reasons],
                fired=list(decision.rules_fired), options=dict(decision.options or {}),
                seller_code=decision.seller_code, required=list(decision.required), label=compiled.label)
    try:
        # ``parsed`` (parsed once, without the schema pass) takes compose_draft's fast path: schema
        # validation was ~70 % of a replay when both compositions validated the document again.
        draft = compose_for(session, parsed, shop, decision, seller=sellers[key])
    except KaipiaoError as exc:
        return Outcome(**{**base, "action": "error"}, amount=Decimal("0.00"), tax=Decimal("0.00"),
                       total=Decimal("0.00"), error=str(exc)[:300])
    invoices = draft.get("invoices") or []
    final = draft.get("decision", {})
    return Outcome(
        **{**base, "action": final.get("action", decision.action),
           "reasons": [r.get("code", "") for r in final.get("reasons") or []] or base["reasons"]},
        amount=sum((Decimal(i["total_amount"]) for i in invoices), Decimal("0.00")),
        tax=sum((Decimal(i["total_tax"]) for i in invoices), Decimal("0.00")),
        total=sum((Decimal(i["total"]) for i in invoices), Decimal("0.00")),
    )


def _error_outcome(label: str, exc: Exception) -> Outcome:
    zero = Decimal("0.00")
    return Outcome("error", None, [], [], {}, None, [], zero, zero, zero, label, error=str(exc)[:300])


def replay(session: Session, version: RuleSetVersion, limit: int, *, now: datetime | None = None,
           rows_shown: int = REPLAY_ROWS_SHOWN) -> Replay:
    """Decide and compose the newest ``limit`` stored orders of the shops ``version``'s rule set
    covers, with what is published for each shop now (before) and with ``version`` as if it
    were published (after). Reads only: nothing is added, changed or flushed."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    limit = max(1, min(int(limit), REPLAY_CAP))
    rule_set = version.rule_set
    result = Replay(requested=limit, now=now)
    draft_compiled = compile_version(version)

    shops = {s.id: s for s in session.scalars(select(Shop)) if covers(rule_set, s)}
    if not shops:
        result.seconds = time.monotonic() - started
        return result
    # Per shop: what decides it now, and what would after publishing (compiled once per version).
    compiled_by_version: dict[int, CompiledRuleSet] = {}
    before_for: dict[int, CompiledRuleSet] = {}
    after_for: dict[int, CompiledRuleSet] = {}
    for shop in shops.values():
        live = published_version(session, shop.merchant_id, shop.id)
        if live is None:
            before_for[shop.id] = default_ruleset()
        else:
            if live.id not in compiled_by_version:
                compiled_by_version[live.id] = compile_version(live)
            before_for[shop.id] = compiled_by_version[live.id]
        # Publishing wins for the shop unless a more specific rule set is live there.
        shadowed = live is not None and scope_level(live.rule_set) > scope_level(rule_set)
        after_for[shop.id] = before_for[shop.id] if shadowed else draft_compiled

    rows = session.execute(
        select(Order.id, Order.shop_id, Order.platform, Order.shop_code, Order.order_no, Order.document)
        .where(Order.shop_id.in_(list(shops))).order_by(Order.id.desc()).limit(limit)
    ).all()
    sellers: dict[tuple[int, str | None], dict[str, Any] | None] = {}
    for order_pk, shop_id, platform, shop_code, order_no, document in rows:
        shop = shops[shop_id]
        key = f"{platform}:{shop_code}:{order_no}"
        before_rs, after_rs = before_for[shop_id], after_for[shop_id]
        try:
            parsed = parse_order(document, validate=False)  # stored orders passed validation at intake
        except ValidationFailed as exc:  # a stored document the contract no longer accepts
            before = _error_outcome(before_rs.label, exc)
            after = before if after_rs is before_rs else _error_outcome(after_rs.label, exc)
        else:
            before = _outcome(session, parsed, shop, before_rs, now, sellers)
            after = (before if after_rs is before_rs
                     else _outcome(session, parsed, shop, after_rs, now, sellers))
        if after_rs is before_rs:
            result.unaffected += 1
        result.orders += 1
        result.before_labels[before.label] += 1
        result.matrix[(before.action, after.action)] += 1
        result.before.add(before)
        result.after.add(after)
        if not before.same_as(after):
            result.changed += 1
            if len(result.rows) < rows_shown:
                result.rows.append(ReplayRow(order_pk, key, before, after))
    # Belt and braces: the replay added nothing, and nothing it loaded may be flushed later.
    session.rollback()
    result.seconds = time.monotonic() - started
    return result

"""What applies to an order of a configured shop: its seller entity, the shop's invoice-face
options, the rule set published for it, the catalogue and SKU mappings, and the tax gateway of
its seller entity.

The decide job, the preview and the rules dry-run all compose through ``compose_for``, so a
preview shows exactly what would be issued. A newly published rule-set version decides the
next order in every process: the published version is looked up per decision batch (one
indexed query, ``rules_epoch``) and compiled once per process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.engine.compose import compose_draft
from app.engine.contract import Order
from app.integrations.tax.base import TaxGateway
from app.integrations.tax.instrumented import instrumented
from app.integrations.tax.registry import get_gateway
from app.models import RuleSetVersion, SellerEntity, Shop
from app.rules import Decision, compile_ruleset, decide
from app.rules.ruleset import RuleSet
from app.services.rule_versions import published_version
from app.services.tax_catalogue import catalogue_for, mappings_for
from app.settings import Settings

# ------------------------------------------------------------------------------- shop and seller


def find_shop(session: Session, order: Mapping[str, Any]) -> Shop | None:
    platform, shop_code = order.get("platform"), order.get("shop_id")
    if not isinstance(platform, str) or not isinstance(shop_code, str):
        return None
    return session.scalar(select(Shop).where(Shop.platform == platform, Shop.shop_code == shop_code))


def seller_for(session: Session, shop: Shop | None, code: str | None = None) -> SellerEntity | None:
    """``route_seller`` code first, then the shop's seller entity, then the merchant's default."""
    if shop is None:
        return None
    if code:
        seller = session.scalar(select(SellerEntity).where(SellerEntity.merchant_id == shop.merchant_id,
                                                           SellerEntity.code == code))
        if seller is not None:
            return seller
    if shop.seller_entity_id:
        return session.get(SellerEntity, shop.seller_entity_id)
    return session.scalar(select(SellerEntity).where(SellerEntity.merchant_id == shop.merchant_id)
                          .order_by(SellerEntity.is_default.desc(), SellerEntity.id))


def seller_party(seller: SellerEntity, shop: Shop | None) -> dict[str, Any]:
    party = seller.as_party()
    if shop is not None:
        party["shop_name"] = shop.name
    return party


# ------------------------------------------------------------------------------- rules

_compiled: dict[int, RuleSet] = {}
# (merchant, shop) -> (epoch, version id or None); the epoch is the newest version id, so any
# save, publish or rollback (all append a version) invalidates every entry at once.
_published: dict[tuple[int, int], tuple[int, int | None]] = {}
_lock = threading.Lock()


def rules_epoch(session: Session) -> int:
    """The newest rule-set version id: read once per decision batch, so a version published
    meanwhile applies from the next batch."""
    return session.scalar(select(func.max(RuleSetVersion.id))) or 0


def ruleset_for(session: Session, shop: Shop | None, epoch: int | None = None) -> RuleSet | None:
    """The compiled rule set published for ``shop``; None = the shipped default. ``epoch``
    (``rules_epoch``) is read here when the caller has not read it for its batch."""
    if shop is None:
        return None
    epoch = rules_epoch(session) if epoch is None else epoch
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
        compiled = compile_ruleset(version.document, label=version.label)
        with _lock:
            _compiled[version.id] = compiled
    return compiled


def decide_for(session: Session | None, order: Order, shop: Shop | None, now: datetime | None = None) -> Decision:
    """The decision for ``order``: its shop's published rules, else the shipped default."""
    return decide(order, ruleset=ruleset_for(session, shop) if session is not None else None, now=now)


# ------------------------------------------------------------------------------- composition


def compose_for(session: Session | None, order: Mapping[str, Any] | Order, shop: Shop | None, decision: Any, *,
                seller: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compose the draft for ``order``: the decision's options < shop options < explicit ``options``;
    explicit ``seller`` beats the routed seller entity. ``order`` is a contract document or an
    already parsed ``Order`` (stored orders, validated at intake). Raises ``ValidationFailed``."""
    decision_doc = decision.as_dict()
    # From general to specific: the rule set's options, then the options the merchant set on
    # the shop, then options given explicitly (a preview call).
    decision_doc["options"] = {**(decision.options or {}), **((shop.options or {}) if shop else {})}
    party = seller
    if party is None and shop is not None and session is not None:
        entity = seller_for(session, shop, decision.seller_code)
        party = seller_party(entity, shop) if entity is not None else None
    catalogue = catalogue_for(session) if session is not None else None  # None: shipped catalogue
    mappings = mappings_for(session, shop) if session is not None else None
    draft = compose_draft(order, party, options, decision_doc, catalogue=catalogue, mappings=mappings)
    if decision.rules_version:
        draft["rules_version"] = decision.rules_version
    return draft


# ------------------------------------------------------------------------------- tax gateway
# One client per provider account per process (gateways are thread-safe and keep no
# per-invoice state). Credentials live encrypted in ``seller_entity.tax_credentials`` (JSON:
# provider, url, app_key, app_secret, user_tax …); the settings give the defaults.
_gateway_lock = threading.Lock()
_cache: dict[str, TaxGateway] = {}
_override: TaxGateway | None = None


def use_gateway(gateway: TaxGateway | None) -> None:
    """Route every seller through ``gateway`` (tests, benchmarks); None restores normal routing."""
    global _override
    _override = gateway
    _cache.clear()


def credentials_for(seller: SellerEntity | None, settings: Settings) -> dict[str, Any]:
    creds: dict[str, Any] = {
        "tax_gateway": settings.tax_gateway,
        "tax_gateway_url": settings.tax_gateway_url,
        "app_key": settings.extra.get("TAX_APP_KEY"),
        "app_secret": settings.extra.get("TAX_APP_SECRET"),
    }
    if seller is not None:
        creds["user_tax"] = seller.tax_id
        creds["seller_name"] = seller.name
        if seller.tax_credentials:
            stored = json.loads(seller.tax_credentials)
            if "provider" in stored:
                stored["tax_gateway"] = stored.pop("provider")
            if "url" in stored:
                stored["tax_gateway_url"] = stored.pop("url")
            creds.update({k: v for k, v in stored.items() if v not in (None, "")})
    return creds


def gateway_for(seller: SellerEntity | None, settings: Settings) -> TaxGateway:
    if _override is not None:
        return _override
    creds = credentials_for(seller, settings)
    key = json.dumps({k: creds.get(k) for k in ("tax_gateway", "tax_gateway_url", "app_key", "user_tax")},
                     sort_keys=True)
    with _gateway_lock:
        gateway = _cache.get(key)
        if gateway is None:
            # Every provider call is timed and its errors counted there (app/metrics.py).
            gateway = _cache[key] = instrumented(get_gateway(creds))
        return gateway

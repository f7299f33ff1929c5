"""What applies to an order of a configured shop: its seller entity, the invoice-face
options of the shop, the published rules' decision, the catalogue and SKU mappings.

The pipeline and the preview both compose through ``compose_for`` so a preview shows
exactly what would be issued.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.engine.catalogue import catalogue_for, mappings_for
from app.engine.compose import compose_draft
from app.engine.contract import Order
from app.models import SellerEntity, Shop


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


def decide_for(session: Session | None, order: Order, shop: Shop | None, now: datetime | None = None):
    from app.engine.decisions import decide_order

    if session is None:
        from app.rules import decide

        return decide(order, now=now)
    return decide_order(session, order, shop, now=now)

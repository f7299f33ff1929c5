"""The tax-code catalogue and SKU/category mappings as stored in the database (lookups with a short cache, and import).

The engine works on in-memory ``Catalogue`` / ``TaxMappings``; this module fills them from
the ``tax_code`` and ``sku_tax_mapping`` tables (with a short per-process cache so a
specialist's edit is live within seconds, without restarting anything). An empty table
falls back to the shipped seed catalogue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.engine.taxcodes import Catalogue, TaxMapping, TaxMappings, catalogue_from_rows, default_catalogue
from app.models import Shop, SkuTaxMapping, TaxCode

TTL_SECONDS = 10.0
_lock = threading.Lock()
_cache: dict[Any, tuple[float, Any]] = {}


def _cached(key: Any, build):
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < TTL_SECONDS:
            return hit[1]
    value = build()
    with _lock:
        _cache[key] = (now, value)
    return value


def invalidate() -> None:
    with _lock:
        _cache.clear()


def catalogue_for(session: Session) -> Catalogue:
    def build() -> Catalogue:
        rows = session.scalars(select(TaxCode).where(TaxCode.active.is_(True))).all()
        if not rows:
            return default_catalogue()
        return catalogue_from_rows(
            [{"code": r.code, "name": r.name, "short_name": r.short_name, "rates": r.rates,
              "treatments": r.treatments or ["taxable"]} for r in rows],
            version=rows[0].catalogue_version,
        )

    return _cached("catalogue", build)


def mappings_for(session: Session, shop: Shop | None) -> TaxMappings | None:
    if shop is None:
        return None

    def build() -> TaxMappings:
        mappings = TaxMappings()
        for row in session.scalars(select(SkuTaxMapping).where(SkuTaxMapping.merchant_id == shop.merchant_id)):
            mapping = TaxMapping(row.tax_code, row.tax_rate, row.invoice_name)
            if row.match_kind == "sku":
                mappings.set_sku(row.match_value, mapping)
            else:
                mappings.set_category(row.match_value, mapping)
        return mappings

    return _cached(("mappings", shop.merchant_id), build)


def import_catalogue(session: Session, catalogue: Iterable, version: str | None = None) -> int:
    """Upsert catalogue entries into ``tax_code`` (codes missing from the file stay, inactive
    codes are reactivated). Returns how many rows were written."""
    count = 0
    for code in catalogue:
        row = session.get(TaxCode, code.code) or TaxCode(code=code.code)
        row.name, row.short_name = code.name, code.short_name
        row.rates = [str(r) for r in code.rates]
        row.treatments = list(code.treatments)
        row.catalogue_version = version or getattr(catalogue, "version", None)
        row.active = True
        session.add(row)
        count += 1
    session.flush()
    invalidate()
    return count


def seed_catalogue(session: Session) -> int:
    """Load the shipped catalogue once (first start)."""
    if session.scalar(select(func.count()).select_from(TaxCode)):
        return 0
    return import_catalogue(session, default_catalogue(), version="seed")



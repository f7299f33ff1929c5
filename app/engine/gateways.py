"""Which tax gateway issues for a seller entity, with what credentials.

Credentials live encrypted in ``seller_entity.tax_credentials`` (JSON: provider, url,
app_key, app_secret, user_tax …); settings (``KAIPIAO_TAX_GATEWAY``, ``KAIPIAO_TAX_GATEWAY_URL``,
``KAIPIAO_TAX_APP_KEY``, ``KAIPIAO_TAX_APP_SECRET``) give the defaults. One client per
account per process (gateways are thread-safe and keep no per-invoice state).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from app.integrations.tax.base import TaxGateway
from app.integrations.tax.registry import get_gateway
from app.models import SellerEntity
from app.settings import Settings

_lock = threading.Lock()
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
    with _lock:
        gateway = _cache.get(key)
        if gateway is None:
            gateway = _cache[key] = get_gateway(creds)
        return gateway

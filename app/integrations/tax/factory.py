"""Choose and build the tax gateway. Credentials are passed in (they come from encrypted DB
columns); nothing here has a default secret."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.integrations.tax.base import TaxGateway
from app.integrations.tax.nuonuo import NuonuoGateway, TokenStore
from app.integrations.tax.sandbox_gateway import SandboxGateway

GATEWAYS = ("sandbox", "nuonuo")


def _get(source: Any, *names: str) -> Any:
    for name in names:
        if isinstance(source, Mapping):
            if source.get(name) not in (None, ""):
                return source[name]
        elif getattr(source, name, None) not in (None, ""):
            return getattr(source, name)
    return None


def get_gateway(settings_like: Any, *, token_store: TokenStore | None = None, **credentials: Any) -> TaxGateway:
    """Build the gateway named by ``tax_gateway`` (or ``name``) in a Settings-like object or mapping.

    Recognised keys (attributes or mapping keys; keyword arguments win): ``tax_gateway_url``/``url``,
    ``app_key``, ``app_secret``, ``user_tax`` (Nuonuo seller tax id), ``token_url``, ``clerk``,
    ``seller_name``, ``connect_timeout``, ``read_timeout``. For Nuonuo, ``url`` is the base of both
    ``/open/v1/services`` and ``/accessToken`` unless ``services_url``/``token_url`` are given.
    """
    def value(*names: str) -> Any:
        for name in names:
            if credentials.get(name) not in (None, ""):
                return credentials[name]
        return _get(settings_like, *names)

    name = value("tax_gateway", "name")
    if name not in GATEWAYS:
        raise ValueError(f"unknown tax gateway {name!r}; known: {', '.join(GATEWAYS)}")
    app_key, app_secret = value("app_key"), value("app_secret")
    if not app_key or not app_secret:
        raise ValueError(f"the {name} gateway needs app_key and app_secret")
    timeouts = {k: float(v) for k in ("connect_timeout", "read_timeout") if (v := value(k)) is not None}
    url = value("tax_gateway_url", "url")
    if name == "sandbox":
        if not url:
            raise ValueError("the sandbox gateway needs tax_gateway_url")
        return SandboxGateway(str(url), str(app_key), str(app_secret), **timeouts)
    user_tax = value("user_tax")
    if not user_tax:
        raise ValueError("the nuonuo gateway needs user_tax (the seller's tax id)")
    options: dict[str, Any] = dict(timeouts)
    base = str(url).rstrip("/") if url else None
    services_url = value("services_url") or (f"{base}/open/v1/services" if base else None)
    token_url = value("token_url") or (f"{base}/accessToken" if base else None)
    if services_url:
        options["services_url"] = str(services_url)
    if token_url:
        options["token_url"] = str(token_url)
    for key in ("clerk", "seller_name"):
        if value(key):
            options[key] = str(value(key))
    return NuonuoGateway(app_key=str(app_key), app_secret=str(app_secret), user_tax=str(user_tax),
                         token_store=token_store, **options)

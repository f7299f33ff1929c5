"""Tax gateways by name: each adapter module registers a factory under its provider name, and
``get_gateway`` builds the one a seller's credentials name. Adding a provider is one new module
(plus its tests) and one line in the registry's module list. Credentials are passed in (they come from
encrypted DB columns); nothing here has a default secret."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from app.integrations.registry import Registry
from app.integrations.tax.base import TaxGateway


class Lookup(Protocol):
    """``value("url", "tax_gateway_url")``: the first of these credential keys that is set."""

    def __call__(self, *names: str) -> Any: ...


GatewayFactory = Callable[[Lookup, Any], TaxGateway]
gateways: Registry[GatewayFactory] = Registry(
    "tax gateway", ("app.integrations.tax.sandbox", "app.integrations.tax.nuonuo"))
register = gateways.register


def _get(source: Any, *names: str) -> Any:
    for name in names:
        if isinstance(source, Mapping):
            if source.get(name) not in (None, ""):
                return source[name]
        elif getattr(source, name, None) not in (None, ""):
            return getattr(source, name)
    return None


def get_gateway(settings_like: Any, *, token_store: Any = None, **credentials: Any) -> TaxGateway:
    """Build the gateway named by ``tax_gateway`` (or ``name``) in a Settings-like object or mapping.

    Keys are read as attributes or mapping keys; keyword arguments win. Common ones:
    ``tax_gateway_url``/``url``, ``app_key``, ``app_secret``, ``connect_timeout``,
    ``read_timeout``; each adapter documents its own (e.g. Nuonuo's ``user_tax``).
    """

    def value(*names: str) -> Any:
        for name in names:
            if credentials.get(name) not in (None, ""):
                return credentials[name]
        return _get(settings_like, *names)

    name = value("tax_gateway", "name")
    factory = gateways.get(str(name))
    app_key, app_secret = value("app_key"), value("app_secret")
    if not app_key or not app_secret:
        raise ValueError(f"the {name} gateway needs app_key and app_secret")
    return factory(value, token_store)


def timeouts(value: Lookup) -> dict[str, float]:
    return {k: float(v) for k in ("connect_timeout", "read_timeout") if (v := value(k)) is not None}

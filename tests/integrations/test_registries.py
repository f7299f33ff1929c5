"""Adapters are found by name through one registry per integration."""

from __future__ import annotations

import pytest

from app.integrations.delivery import channels
from app.integrations.platforms import platforms
from app.integrations.registry import Registry
from app.integrations.tax.registry import gateways


def test_tax_gateways_are_registered_by_their_modules() -> None:
    assert gateways.names() == ("nuonuo", "sandbox")


def test_interfaces_exist_before_their_adapters() -> None:
    assert platforms.names() == () and channels.names() == ()
    with pytest.raises(ValueError, match="unknown shop platform 'jd'; known: none"):
        platforms.get("jd")


def test_a_name_is_registered_once_and_unknown_names_are_named() -> None:
    registry: Registry[object] = Registry("widget", ())
    first = registry.register("a")(object())
    assert registry.get("a") is first
    assert registry.register("a")(first) is first  # the same entry again (a module re-imported)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(object())
    with pytest.raises(ValueError, match="unknown widget 'b'; known: a"):
        registry.get("b")

"""Stateless preview: what the CLI (`kaipiao preview`) and the API's preview endpoint share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.compose import compose_draft
from app.engine.taxcodes import Catalogue, TaxMappings
from app.errors import Problem, ValidationFailed


def preview(
    order: Any,
    seller: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None = None,
    *,
    decision: Mapping[str, Any] | None = None,
    catalogue: Catalogue | None = None,
    mappings: TaxMappings | None = None,
) -> dict[str, Any]:
    """The invoice draft for ``order``; raises ``ValidationFailed`` (never another error) on bad input.

    The caller resolves a configured shop's seller and rules first; with neither, ``seller``
    must be given and the stand-in default decision applies.
    """
    if not isinstance(order, Mapping):
        raise ValidationFailed(Problem("order", "invalid", "an order must be a JSON object"))
    if options is not None and not isinstance(options, Mapping):
        raise ValidationFailed(Problem("options", "invalid", "options must be an object"))
    return compose_draft(order, seller, options, decision, catalogue, mappings)

"""Preview an order exactly as it would be issued (the API, the CLI and the web page share it).

- Configured shop, caller allowed to see it: the merchant's seller entity, shop options and
  published rules apply (``seller`` / ``options`` given in the call override them).
- Configured shop of another merchant, merchant-scoped caller (merchant, cs_agent): refused
  (``Forbidden``), nothing of that merchant is read.
- Otherwise (unknown shop, anonymous caller, no database yet): stateless — ``seller`` is
  required and the shipped default rules decide.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.exc import OperationalError, ProgrammingError

from app.engine.json_input import structure_problems
from app.errors import Forbidden, Problem, ValidationFailed
from app.rules.engine import RuleEngineError

log = logging.getLogger(__name__)


def _may_see(user: Any, shop) -> bool:
    """Whether ``user`` may use ``shop``'s stored data; a merchant-scoped user naming another
    merchant's shop is refused outright (a clear answer, where anonymous callers silently get
    the stateless preview)."""
    if user is None:
        return True  # the local CLI operator owns the database
    if not getattr(user, "is_authenticated", False):
        return False
    scope = user.merchant_scope()
    if scope is not None and scope != shop.merchant_id:
        raise Forbidden(Problem("order.shop_id", "forbidden",
                                f"{shop.platform} shop {shop.shop_code!r} is not a shop of your merchant: your "
                                "account previews only its own merchant's orders"))
    return True


def preview_order(order: Any, seller: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
                  *, user: Any = None, session=None, use_database: bool = True,
                  now: datetime | None = None) -> dict[str, Any]:
    """The draft for ``order``; raises ``ValidationFailed`` on bad input (never another error)."""
    from app.engine.contract import parse_order
    from app.services.context import compose_for, decide_for, find_shop

    if not isinstance(order, Mapping):
        raise ValidationFailed(Problem("order", "invalid", "an order must be a JSON object"))
    if seller is not None and not isinstance(seller, Mapping):
        raise ValidationFailed(Problem("seller", "invalid", "seller must be an object"))
    if options is not None and not isinstance(options, Mapping):
        raise ValidationFailed(Problem("options", "invalid", "options must be an object"))
    problems = [p for name, value in (("seller", seller), ("options", options)) if value is not None
                for p in structure_problems(value, name)]
    if problems:
        raise ValidationFailed(problems)
    try:
        parsed = parse_order(dict(order))
    except ValidationFailed as exc:
        raise ValidationFailed([Problem(f"order.{p.path}" if p.path else "order", p.code, p.message)
                                for p in exc.problems]) from None
    shop = None
    if use_database and (user is None or getattr(user, "is_authenticated", False)):
        if session is None:
            from app import db

            session = db.session
        try:
            shop = find_shop(session, order)
        except (OperationalError, ProgrammingError):
            session.rollback()  # no database yet: stateless preview
            session = None
        if shop is not None and not _may_see(user, shop):
            shop = None
    else:
        session = None
    if shop is None:
        if seller is None:
            raise ValidationFailed(Problem("seller", "required",
                                           "required when the order's shop is not configured in Kaipiao"))
        session_for_rules = None
    else:
        session_for_rules = session
    try:
        decision = decide_for(session_for_rules, parsed, shop, now=now)
        return compose_for(session_for_rules, parsed, shop, decision, seller=seller, options=options)
    except (RuleEngineError, ArithmeticError, ValueError) as exc:  # this order's data, said plainly
        log.warning("preview of %s failed", parsed.key, exc_info=True)
        raise ValidationFailed(Problem("order", "cannot_compose", f"cannot compose this order: {exc}"[:300])) from None

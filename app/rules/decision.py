"""Turning the rules that matched an order into a Decision, in plain Python.

Conflict policy (docs/rules.md): matched rules are applied in ascending priority (ties: document
order). The verdict is the strongest one any matched rule gives: skip > hold > wait > issue;
a setter's first value wins (the lowest priority number), list actions accumulate in that order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.engine.clock import BEIJING
from app.rules.actions import VERDICTS, Action
from app.rules.facts import OrderTimes
from app.rules.validate import ParsedRule

_ZERO = timedelta(0)
_EVENT_TEXT = {"received": "receipt", "shipped": "shipment", "paid": "payment"}
_SETTERS = {
    "set_kind": ("kind", "kind"),
    "set_gift_mode": ("gift_mode", "mode"),
    "set_discount_mode": ("discount_mode", "mode"),
    "set_platform_discount": ("platform_discount", "mode"),
}


@dataclass
class Decision:
    action: str  # issue | wait | hold | skip
    reasons: list[dict[str, str]]
    rules_fired: list[str]
    rules_version: str
    issue_after: datetime | None = None  # aware, Asia/Shanghai; for "wait" when a time is known
    options: dict[str, Any] = field(default_factory=dict)  # compose options (docs/architecture.md)
    seller_code: str | None = None
    required: list[str] = field(default_factory=list)  # fields the buyer's title must carry

    def as_dict(self, full: bool = False) -> dict[str, Any]:
        """The invoice-draft schema's ``decision`` object; ``full`` adds the other fields."""
        out: dict[str, Any] = {
            "action": self.action,
            "reasons": [dict(r) for r in self.reasons],
            "rules_fired": list(self.rules_fired),
        }
        if self.issue_after is not None:
            out["issue_after"] = self.issue_after.isoformat()
        if full:
            out.update(
                rules_version=self.rules_version,
                options=self.options,
                seller_code=self.seller_code,
                required=list(self.required),
            )
        return out


def _reason(code: str, message: str, rule: str) -> dict[str, str]:
    return {"code": code, "message": message, "rule": rule}


def _when(dt: datetime) -> str:
    return dt.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def build_decision(
    fired: Iterable[ParsedRule],
    *,
    default: Action,
    rules_version: str,
    times: OrderTimes,
    deadline: datetime | None,
    now: datetime,
) -> Decision:
    ordered = sorted(fired, key=lambda r: (r.priority, r.index))
    verdicts: dict[str, list[dict[str, str]]] = {v: [] for v in VERDICTS}
    waits: list[tuple[ParsedRule, Action]] = []
    options: dict[str, Any] = {}
    decided: set[str] = set()  # option keys already set by a higher-priority rule
    seller_code: str | None = None
    required: list[str] = []

    for rule in ordered:
        for action in rule.actions:
            name, p = action.name, action.params
            if name in ("skip", "hold", "wait"):
                verdicts[name].append(_reason(p.get("code", rule.id), p["reason"], rule.id))
            elif name == "issue":
                verdicts["issue"].append(_reason(p.get("code", rule.id), p.get("reason", "issue"), rule.id))
            elif name == "wait_for":
                waits.append((rule, action))
            elif name in _SETTERS:
                key, param = _SETTERS[name]
                if key not in decided:
                    decided.add(key)
                    options[key] = p[param]
            elif name == "set_shipping":
                if "shipping" not in decided:
                    decided.add("shipping")
                    if not p.get("same_as_goods"):  # absent = the engine's default: the goods' code and rate
                        options["shipping"] = {"tax_code": p["code"], "tax_rate": p["rate"]}
                        if "name" in p:
                            options["shipping"]["name"] = p["name"]
            elif name == "add_remark":
                if p.get("mode", "append") == "replace":
                    if "remark_template" not in decided:
                        decided.add("remark_template")
                        options["remark_template"] = p["template"]
                elif p["template"] not in options.setdefault("extra_remarks", []):
                    options["extra_remarks"].append(p["template"])
            elif name == "map_tax_code":
                entry = {**p["match"], "tax_code": p["code"], "tax_rate": p["rate"]}
                options.setdefault("tax_code_map", []).append(entry)
            elif name == "require":
                if p["field"] not in required:
                    required.append(p["field"])
            elif name == "route_seller":
                if seller_code is None:
                    seller_code = p["entity"]
            else:  # pragma: no cover - validation refuses unknown actions
                raise AssertionError(f"unhandled action {name}")

    issue_after = _resolve_waits(waits, verdicts, times, deadline, now) if waits else None
    verdict = next((v for v in VERDICTS if verdicts[v]), None)
    if verdict is None:
        verdict = default.name
        reasons = [
            _reason(
                default.params.get("code", "no_rule"),
                default.params.get("reason", "no rule decided this order"),
                "default",
            )
        ]
    else:
        reasons = verdicts[verdict]
    return Decision(
        action=verdict,
        reasons=reasons,
        rules_fired=[r.id for r in ordered],
        rules_version=rules_version,
        issue_after=issue_after if verdict == "wait" else None,
        options=options,
        seller_code=seller_code,
        required=required,
    )


def _resolve_waits(
    waits: list[tuple[ParsedRule, Action]],
    verdicts: dict[str, list[dict[str, str]]],
    times: OrderTimes,
    deadline: datetime | None,
    now: datetime,
) -> datetime | None:
    """Several wait_for actions are alternatives: the order is released at the earliest of
    them, and never later than the platform deadline minus the action's margin."""
    # (release time, why, rule id); "why" is formatted only for the winner: strftime is costly.
    best: tuple[datetime, tuple[Any, ...], str] | None = None
    waiting: list[dict[str, str]] = []
    for rule, action in waits:
        event = action.params["event"]
        delay = action.params.get("delay", _ZERO)
        margin = action.params.get("deadline_margin", _ZERO)
        happened, at = times.happened(event)
        candidates: list[tuple[datetime, tuple[Any, ...]]] = []
        if happened and at is not None:
            candidates.append((at + delay, ("event", event, at, delay)))
        elif happened and not delay:
            candidates.append((now, ("unknown", event)))
        if deadline is not None:
            candidates.append((deadline - margin, ("deadline", deadline, margin)))
        for release, why in candidates:
            if best is None or release < best[0]:
                best = (release, why, rule.id)
        later = f" + {_span(delay)}" if delay else ""
        waiting.append(_reason(f"wait_for_{event}", f"waiting for {_EVENT_TEXT[event]}{later}", rule.id))
    if best is not None and best[0] <= now:
        verdicts["issue"].append(_reason("wait_over", f"released: {_why(best[1])}", best[2]))
        return None
    verdicts["wait"].extend(waiting)
    if best is None:
        return None  # released by an event that has not happened: re-evaluated when the order changes
    verdicts["wait"].append(
        _reason("issue_after", f"at the latest {_when(best[0])} ({_why(best[1])})", best[2])
    )
    return best[0].astimezone(BEIJING)


def _why(why: tuple[Any, ...]) -> str:
    if why[0] == "event":
        _, event, at, delay = why
        return f"{_EVENT_TEXT[event]} {_when(at)}" + (f" + {_span(delay)}" if delay else "")
    if why[0] == "unknown":
        return f"{_EVENT_TEXT[why[1]]} happened (time unknown)"
    _, deadline, margin = why
    return f"platform deadline {_when(deadline)} − {_span(margin)} margin"


def _span(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    if hours and hours % 24 == 0:
        return f"{hours // 24} d"
    return f"{hours} h" if hours else f"{int(delta.total_seconds() // 60)} min"

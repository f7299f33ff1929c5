"""Rule sets for tax specialists: list, edit drafts, diff, publish / roll back, dry-run, replay.

Everything that changes state goes through app.rules.store (save_draft, publish, rollback), which
only ever *appends* versions; each change writes the admin audit log in the same transaction.
Dry-run and replay are read-only: they compile a version, decide and compose exactly as the
pipeline does (app.engine.shop_context.compose_for) and never flush anything.

Publishing changes new decisions only: invoices and requests already decided keep the rules
version they were decided with (nothing here touches them).
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import yaml
from flask import abort, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.admin.base import SecureView, audit
from app.admin.operations import local_time
from app.auth import user_may
from app.engine.clock import BEIJING
from app.engine.contract import parse_order
from app.engine.shop_context import compose_for, find_shop, seller_for, seller_party
from app.errors import KaipiaoError, Problem, ValidationFailed
from app.models import Merchant, Order, Shop
from app.models.rules import RuleSet, RuleSetVersion
from app.render import render_html
from app.rules import compile_ruleset, decide, default_ruleset, load_ruleset_file, rules_dir
from app.rules import ruleset as ruleset_module
from app.rules.actions import ACTIONS, REMARK_PLACEHOLDERS, TAX_RATES, VERDICTS, WAIT_EVENTS
from app.rules.engine import RuleEngineError
from app.rules.facts import FACT_FIELDS, LINE_FIELDS
from app.rules.ruleset import RuleSet as CompiledRuleSet
from app.rules.store import (
    current_version,
    diff,
    get_or_create_rule_set,
    publish,
    published_version,
    rollback,
    save_draft,
)

EDIT_ROLES = ("tax_specialist",)
REPLAY_DEFAULT = 200
REPLAY_CAP = 5000
REPLAY_ROWS_SHOWN = 500
RECENT_ORDERS = 50
# Orders whose composed draft ends in one of these are (or will be) invoiced with that draft.
INVOICED_ACTIONS = ("issue", "wait")
ACTION_ORDER = ("issue", "wait", "hold", "skip", "error")


# ------------------------------------------------------------------------- the document


def parse_document(text: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """A rule-set document from the editor: JSON when it starts with ``{``, else YAML.

    YAML turns some unquoted values into dates or non-string keys that JSON cannot store;
    those are refused with their path instead of failing when the version is written."""
    text = (text or "").strip()
    if not text:
        return None, [Problem("document", "empty", "the document is empty")]
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [Problem("document", "bad_json", f"line {exc.lineno}, column {exc.colno}: {exc.msg}")]
    else:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            what = getattr(exc, "problem", None) or str(exc)
            return None, [Problem("document", "bad_yaml", f"{where}{what}")]
    if not isinstance(doc, dict):
        return None, [Problem("document", "not_object", "a rule set is one object (name, rules, ...)")]
    problems = list(_not_json(doc, ""))
    return (None, problems) if problems else (doc, [])


def _not_json(value: Any, path: str) -> Iterable[Problem]:
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                yield Problem(sub, "bad_key", f"keys must be text; YAML read {key!r} as {type(key).__name__}: quote it")
            yield from _not_json(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _not_json(item, f"{path}[{i}]")
    elif isinstance(value, date | datetime):
        yield Problem(path, "not_json", f"YAML read {value} as a date: quote it")
    elif isinstance(value, float) and not math.isfinite(value):
        yield Problem(path, "not_json", "not a finite number")
    elif value is not None and not isinstance(value, str | int | float | bool):
        yield Problem(path, "not_json", f"{type(value).__name__} cannot be stored as JSON")


def as_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=110)


def as_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2)


def shipped_default_document(session: Session) -> dict[str, Any]:
    """What a new rule set starts from: the live shipped default in the database, else the file."""
    version = published_version(session, None, None)
    if version is not None:
        return copy.deepcopy(version.document)
    return load_ruleset_file(rules_dir() / ruleset_module.DEFAULT_FILE)


# ------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class FieldRef:
    name: str
    type: str
    values: tuple[str, ...]
    doc: str


@dataclass(frozen=True)
class ParamRef:
    name: str
    required: bool
    accepts: str


@dataclass(frozen=True)
class ActionRef:
    name: str
    params: tuple[ParamRef, ...]


def _rates() -> str:
    return ", ".join(f'"{r}"' for r in TAX_RATES)


# Checks that are plain functions in app.rules.actions (the closures describe themselves).
_NAMED_CHECKS: dict[str, Callable[[], str]] = {
    "_duration": lambda: 'duration: hours (72), "72h", "7d", "P7D", "PT12H"',
    "_rate": lambda: f"rate as a decimal string: {_rates()}",
    "_true": lambda: "true",
    "_template": lambda: "text; placeholders " + ", ".join(f"{{{p}}}" for p in REMARK_PLACEHOLDERS),
    "_match": lambda: 'one of {"sku": ...}, {"category": ...}, {"name_contains": ...}',
}


def describe_check(check: Callable[[Any], Any]) -> str | None:
    """What a parameter check of app.rules.actions.ACTIONS accepts, read from the check itself
    (its closure values), so the reference cannot drift from what the validator accepts.
    None for a kind of check this function does not know (a test keeps that list empty)."""
    code = getattr(check, "__code__", None)
    cells = {}
    if code is not None and check.__closure__:
        cells = dict(zip(code.co_freevars, (c.cell_contents for c in check.__closure__), strict=True))
    if "values" in cells:
        return "one of: " + " / ".join(cells["values"])
    if "what" in cells:
        return str(cells["what"])
    if "max_len" in cells:
        return f"text, at most {cells['max_len']} characters"
    named = _NAMED_CHECKS.get(getattr(check, "__name__", ""))
    return named() if named else None


def field_reference() -> tuple[list[FieldRef], list[FieldRef]]:
    """The order fact's fields and the line fields, from app.rules.facts."""

    def refs(specs: dict) -> list[FieldRef]:
        return [FieldRef(name, spec.type, tuple(spec.values), spec.doc) for name, spec in specs.items()]

    return refs(FACT_FIELDS), refs(LINE_FIELDS)


def action_reference() -> list[ActionRef]:
    """Every action and its parameters, from app.rules.actions.ACTIONS."""
    out = []
    for name, spec in ACTIONS.items():
        params = tuple(
            ParamRef(param, required, describe_check(check) or getattr(check, "__name__", "?"))
            for param, (required, check) in spec.items()
        )
        out.append(ActionRef(name, params))
    return out


# ------------------------------------------------------------------------- scopes


def scope_level(rule_set: RuleSet) -> int:
    """How specific a rule set is: 2 per shop, 1 per merchant, 0 shipped (published_version's order)."""
    if rule_set.shop_id is not None:
        return 2
    return 1 if rule_set.merchant_id is not None else 0


def covers(rule_set: RuleSet, shop: Shop) -> bool:
    """Whether published_version would consider ``rule_set`` for ``shop`` at all."""
    level = scope_level(rule_set)
    if level == 2:
        return rule_set.shop_id == shop.id and rule_set.merchant_id == shop.merchant_id
    if level == 1:
        return rule_set.merchant_id == shop.merchant_id
    return True


def applies_to(session: Session, shops: Iterable[Shop]) -> dict[int, list[Shop]]:
    """rule_set.id -> the shops whose orders it decides now (its live version wins for them)."""
    out: dict[int, list[Shop]] = {}
    for shop in shops:
        version = published_version(session, shop.merchant_id, shop.id)
        if version is not None:
            out.setdefault(version.rule_set_id, []).append(shop)
    return out


# ------------------------------------------------------------------------- dry-run


@dataclass
class DryRun:
    decision: dict[str, Any]
    options: dict[str, Any]
    draft: dict[str, Any]
    face: str
    shop: Shop | None
    note: str | None = None

    @property
    def final_action(self) -> str:
        return self.draft.get("decision", {}).get("action", self.decision["action"])


def compile_version(version: RuleSetVersion) -> CompiledRuleSet:
    return compile_ruleset(version.document, label=version.label)


def fallback_shop(session: Session, rule_set: RuleSet) -> Shop | None:
    """The shop whose seller and options compose a pasted order whose own shop is unknown."""
    if rule_set.shop_id is not None:
        return session.get(Shop, rule_set.shop_id)
    query = select(Shop).where(Shop.active.is_(True)).order_by(Shop.id).limit(1)
    if rule_set.merchant_id is not None:
        query = query.where(Shop.merchant_id == rule_set.merchant_id)
    return session.scalar(query)


def dry_run(session: Session, version: RuleSetVersion, order: Any, shop: Shop | None, *,
            now: datetime, note: str | None = None) -> DryRun:
    """Decide ``order`` with ``version`` and compose it as the pipeline would.
    Raises ValidationFailed (with paths) for a bad order or a version that no longer compiles."""
    if not isinstance(order, dict):
        raise ValidationFailed(Problem("order", "invalid", "an order must be a JSON object"))
    try:
        parsed = parse_order(order)
    except ValidationFailed as exc:
        raise ValidationFailed([Problem(f"order.{p.path}" if p.path else "order", p.code, p.message)
                                for p in exc.problems]) from None
    compiled = compile_version(version)
    try:
        decision = decide(parsed, ruleset=compiled, now=now)
    except RuleEngineError as exc:  # the engine failed for this order: shown, never a 500
        raise ValidationFailed(Problem("rules", "engine_error", str(exc)[:300])) from exc
    options = {**(decision.options or {}), **((shop.options or {}) if shop else {})}  # as compose_for merges
    draft = compose_for(session, parsed, shop, decision)
    return DryRun(decision=decision.as_dict(full=True), options=options, draft=draft,
                  face=render_html(draft, standalone=False), shop=shop, note=note)


# ------------------------------------------------------------------------- replay


@dataclass
class Outcome:
    action: str  # the composed draft's final action (composition may hold what rules issued), or "error"
    rules_action: str | None
    reasons: list[str]
    fired: list[str]
    options: dict[str, Any]
    seller_code: str | None
    required: list[str]
    amount: Decimal
    tax: Decimal
    total: Decimal
    label: str
    error: str | None = None

    def same_as(self, other: Outcome) -> bool:
        keys = ("action", "rules_action", "fired", "options", "seller_code", "required", "amount", "tax", "reasons")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass
class ReplayRow:
    order_pk: int
    key: str
    before: Outcome
    after: Outcome

    @property
    def changed_options(self) -> list[str]:
        keys = self.before.options.keys() | self.after.options.keys()
        return sorted(k for k in keys if self.before.options.get(k) != self.after.options.get(k))

    @property
    def fired_added(self) -> list[str]:
        return [r for r in self.after.fired if r not in self.before.fired]

    @property
    def fired_removed(self) -> list[str]:
        return [r for r in self.before.fired if r not in self.after.fired]


@dataclass
class Totals:
    count: int = 0
    amount: Decimal = Decimal("0.00")
    tax: Decimal = Decimal("0.00")
    total: Decimal = Decimal("0.00")

    def add(self, outcome: Outcome) -> None:
        if outcome.action in INVOICED_ACTIONS:
            self.count += 1
            self.amount += outcome.amount
            self.tax += outcome.tax
            self.total += outcome.total


@dataclass
class Replay:
    requested: int
    orders: int = 0
    changed: int = 0
    unaffected: int = 0  # orders of shops where a more specific published rule set still wins
    matrix: Counter = field(default_factory=Counter)  # (before action, after action) -> orders
    before: Totals = field(default_factory=Totals)
    after: Totals = field(default_factory=Totals)
    rows: list[ReplayRow] = field(default_factory=list)
    before_labels: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    now: datetime | None = None

    @property
    def actions(self) -> list[str]:
        seen = {a for pair in self.matrix for a in pair}
        return [a for a in ACTION_ORDER if a in seen]

    @property
    def capped(self) -> bool:
        return self.changed > len(self.rows)


def _outcome(session: Session, parsed: Any, shop: Shop, compiled: CompiledRuleSet,
             now: datetime, sellers: dict[tuple[int, str | None], dict[str, Any] | None]) -> Outcome:
    try:
        decision = decide(parsed, ruleset=compiled, now=now)
    except (KaipiaoError, RuleEngineError) as exc:
        return _error_outcome(compiled.label, exc)
    # The seller party per (shop, routed code) is looked up once: compose_for would query it per order.
    key = (shop.id, decision.seller_code)
    if key not in sellers:
        entity = seller_for(session, shop, decision.seller_code)
        sellers[key] = seller_party(entity, shop) if entity is not None else None
    base = dict(action="", rules_action=decision.action, reasons=[r["code"] for r in decision.reasons],
                fired=list(decision.rules_fired), options=dict(decision.options or {}),
                seller_code=decision.seller_code, required=list(decision.required), label=compiled.label)
    try:
        # ``parsed`` (parsed once, without the schema pass) takes compose_draft's fast path: schema
        # validation was ~70 % of a replay when both compositions validated the document again.
        draft = compose_for(session, parsed, shop, decision, seller=sellers[key])
    except KaipiaoError as exc:
        return Outcome(**{**base, "action": "error"}, amount=Decimal("0.00"), tax=Decimal("0.00"),
                       total=Decimal("0.00"), error=str(exc)[:300])
    invoices = draft.get("invoices") or []
    final = draft.get("decision", {})
    return Outcome(
        **{**base, "action": final.get("action", decision.action),
           "reasons": [r.get("code", "") for r in final.get("reasons") or []] or base["reasons"]},
        amount=sum((Decimal(i["total_amount"]) for i in invoices), Decimal("0.00")),
        tax=sum((Decimal(i["total_tax"]) for i in invoices), Decimal("0.00")),
        total=sum((Decimal(i["total"]) for i in invoices), Decimal("0.00")),
    )


def _error_outcome(label: str, exc: Exception) -> Outcome:
    zero = Decimal("0.00")
    return Outcome("error", None, [], [], {}, None, [], zero, zero, zero, label, error=str(exc)[:300])


def replay(session: Session, version: RuleSetVersion, limit: int, *, now: datetime | None = None,
           rows_shown: int = REPLAY_ROWS_SHOWN) -> Replay:
    """Decide and compose the newest ``limit`` stored orders of the shops ``version``'s rule set
    covers, with what is published for each shop now (before) and with ``version`` as if it
    were published (after). Reads only: nothing is added, changed or flushed."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    limit = max(1, min(int(limit), REPLAY_CAP))
    rule_set = version.rule_set
    result = Replay(requested=limit, now=now)
    draft_compiled = compile_version(version)

    shops = {s.id: s for s in session.scalars(select(Shop)) if covers(rule_set, s)}
    if not shops:
        result.seconds = time.monotonic() - started
        return result
    # Per shop: what decides it now, and what would after publishing (compiled once per version).
    compiled_by_version: dict[int, CompiledRuleSet] = {}
    before_for: dict[int, CompiledRuleSet] = {}
    after_for: dict[int, CompiledRuleSet] = {}
    for shop in shops.values():
        live = published_version(session, shop.merchant_id, shop.id)
        if live is None:
            before_for[shop.id] = default_ruleset()
        else:
            if live.id not in compiled_by_version:
                compiled_by_version[live.id] = compile_version(live)
            before_for[shop.id] = compiled_by_version[live.id]
        # Publishing wins for the shop unless a more specific rule set is live there.
        shadowed = live is not None and scope_level(live.rule_set) > scope_level(rule_set)
        after_for[shop.id] = before_for[shop.id] if shadowed else draft_compiled

    rows = session.execute(
        select(Order.id, Order.shop_id, Order.platform, Order.shop_code, Order.order_no, Order.document)
        .where(Order.shop_id.in_(list(shops))).order_by(Order.id.desc()).limit(limit)
    ).all()
    sellers: dict[tuple[int, str | None], dict[str, Any] | None] = {}
    for order_pk, shop_id, platform, shop_code, order_no, document in rows:
        shop = shops[shop_id]
        key = f"{platform}:{shop_code}:{order_no}"
        before_rs, after_rs = before_for[shop_id], after_for[shop_id]
        try:
            parsed = parse_order(document, validate=False)  # stored orders passed validation at intake
        except ValidationFailed as exc:  # a stored document the contract no longer accepts
            before = _error_outcome(before_rs.label, exc)
            after = before if after_rs is before_rs else _error_outcome(after_rs.label, exc)
        else:
            before = _outcome(session, parsed, shop, before_rs, now, sellers)
            after = (before if after_rs is before_rs
                     else _outcome(session, parsed, shop, after_rs, now, sellers))
        if after_rs is before_rs:
            result.unaffected += 1
        result.orders += 1
        result.before_labels[before.label] += 1
        result.matrix[(before.action, after.action)] += 1
        result.before.add(before)
        result.after.add(after)
        if not before.same_as(after):
            result.changed += 1
            if len(result.rows) < rows_shown:
                result.rows.append(ReplayRow(order_pk, key, before, after))
    # Belt and braces: the replay added nothing, and nothing it loaded may be flushed later.
    session.rollback()
    result.seconds = time.monotonic() - started
    return result


# ------------------------------------------------------------------------- diff


@dataclass
class DiffLine:
    kind: str  # "add" | "del" | "ctx" | "hunk"
    text: str


def text_diff(a: dict[str, Any], b: dict[str, Any], a_label: str, b_label: str, context: int = 3) -> list[DiffLine]:
    """A unified diff of the two documents' pretty JSON (sorted keys: only real changes show)."""
    def pretty(doc: dict[str, Any]) -> list[str]:
        return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True).splitlines()

    out = []
    for line in difflib.unified_diff(pretty(a), pretty(b), a_label, b_label, n=context, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        kind = "hunk" if line.startswith("@@") else "add" if line[:1] == "+" else "del" if line[:1] == "-" else "ctx"
        out.append(DiffLine(kind, line))
    return out


# ------------------------------------------------------------------------- the view


def _may_edit() -> bool:
    return user_may(current_user, EDIT_ROLES)


def _actor() -> str:
    return getattr(current_user, "username", "?")


def scope_text(rule_set: RuleSet, merchants: dict[int, Merchant], shops: dict[int, Shop]) -> str:
    if rule_set.shop_id is not None:
        shop = shops.get(rule_set.shop_id)
        return _("Shop %(shop)s", shop=f"{shop.name} ({shop.platform}:{shop.shop_code})" if shop else rule_set.shop_id)
    if rule_set.merchant_id is not None:
        merchant = merchants.get(rule_set.merchant_id)
        return _("Merchant %(merchant)s", merchant=merchant.name if merchant else rule_set.merchant_id)
    return _("Shipped default (all merchants)")


def _parse_now(raw: str | None) -> datetime:
    """A datetime-local value is Beijing time (the business clock); empty = now."""
    if not raw:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(Problem("now", "invalid", f"not a date and time: {raw!r}")) from None
    return value if value.tzinfo else value.replace(tzinfo=BEIJING)


class RulesView(SecureView):
    """Tax specialists edit and publish rule sets; auditors read lists, versions and diffs."""

    roles = ("tax_specialist", "auditor")

    # ----------------------------------------------------------------------------- helpers

    def _edit_guard(self) -> None:
        if not _may_edit():
            abort(403)

    def _rule_set(self, set_id: int) -> RuleSet:
        found = db.session.get(RuleSet, set_id)
        if found is None:
            abort(404)
        return found

    def _version(self, rule_set: RuleSet, number: int) -> RuleSetVersion:
        found = db.session.scalar(select(RuleSetVersion).where(RuleSetVersion.rule_set_id == rule_set.id,
                                                               RuleSetVersion.number == number))
        if found is None:
            abort(404)
        return found

    def _names(self) -> tuple[dict[int, Merchant], dict[int, Shop]]:
        session = db.session()
        return ({m.id: m for m in session.scalars(select(Merchant))},
                {s.id: s for s in session.scalars(select(Shop).order_by(Shop.id))})

    def _common(self, rule_set: RuleSet | None = None) -> dict[str, Any]:
        merchants, shops = self._names()
        ctx: dict[str, Any] = dict(may_edit=_may_edit(), local_time=local_time, merchants=merchants, shops=shops,
                                   pretty=lambda v: json.dumps(v, ensure_ascii=False, indent=1))
        if rule_set is not None:
            ctx.update(rule_set=rule_set, scope=scope_text(rule_set, merchants, shops),
                       live=current_version(db.session(), rule_set),
                       versions=sorted(rule_set.versions, key=lambda v: v.number, reverse=True),
                       applies=applies_to(db.session(), shops.values()).get(rule_set.id, []))
        return ctx

    # ----------------------------------------------------------------------------- pages

    @expose("/")
    def index(self) -> Any:
        session = db.session()
        merchants, shops = self._names()
        sets = list(session.scalars(select(RuleSet).order_by(RuleSet.id)))
        applies = applies_to(session, shops.values())
        groups: list[tuple[str, list[RuleSet]]] = [
            (_("Shipped defaults"), [s for s in sets if scope_level(s) == 0]),
            (_("Per merchant"), [s for s in sets if scope_level(s) == 1]),
            (_("Per-shop overrides"), [s for s in sets if scope_level(s) == 2]),
        ]
        return self.render(
            "admin/rules/index.html", groups=groups, applies=applies, merchants=merchants, shops=shops,
            live={s.id: current_version(session, s) for s in sets}, may_edit=_may_edit(), local_time=local_time,
            scope_text=lambda s: scope_text(s, merchants, shops),
        )

    @expose("/<int:set_id>/")
    def detail(self, set_id: int) -> Any:
        rule_set = self._rule_set(set_id)
        return self.render("admin/rules/detail.html", **self._common(rule_set))

    @expose("/<int:set_id>/v/<int:number>/")
    def version(self, set_id: int, number: int) -> Any:
        rule_set = self._rule_set(set_id)
        version = self._version(rule_set, number)
        return self.render("admin/rules/version.html", version=version, document=as_json(version.document),
                           **self._common(rule_set))

    @expose("/<int:set_id>/diff")
    def diff_view(self, set_id: int) -> Any:
        rule_set = self._rule_set(set_id)
        ctx = self._common(rule_set)
        versions = ctx["versions"]
        if not versions:
            return self.render("admin/rules/diff.html", a=None, b=None, summary=None, lines=[], **ctx)
        newest, live = versions[0], ctx["live"]
        default_a = (live if live is not None and live.number != newest.number
                     else versions[1] if len(versions) > 1 else newest)
        a = self._version(rule_set, request.args.get("a", type=int) or default_a.number)
        b = self._version(rule_set, request.args.get("b", type=int) or newest.number)
        return self.render("admin/rules/diff.html", a=a, b=b, summary=diff(a.document, b.document),
                           lines=text_diff(a.document, b.document, a.label, b.label), **ctx)

    # ----------------------------------------------------------------------------- edit

    @expose("/<int:set_id>/edit", methods=("GET", "POST"))
    def edit(self, set_id: int) -> Any:
        self._edit_guard()
        rule_set = self._rule_set(set_id)
        ctx = self._common(rule_set)
        versions = ctx["versions"]
        problems: list[Problem] = []
        if request.method == "POST":
            text = request.form.get("document", "")
            comment = (request.form.get("comment") or "").strip() or None
            base = request.form.get("base", type=int)
            doc, problems = parse_document(text)
            if doc is not None:
                try:
                    version = save_draft(db.session(), rule_set, doc, _actor(), comment)
                    audit("rules.save_draft", f"RuleSet:{rule_set.id}",
                          {"version": version.number, "label": version.label, "comment": comment})
                    db.session.commit()
                except ValidationFailed as exc:
                    db.session.rollback()
                    problems = exc.problems
                except IntegrityError:
                    db.session.rollback()
                    problems = [Problem("document", "conflict",
                                        "someone saved a version of this rule set at the same moment; save again")]
                else:
                    flash(_("Draft %(label)s saved. It is not live: publish it to use it for new decisions.",
                            label=version.label), "success")
                    if base and versions and versions[0].number != base:
                        flash(_("Note: version %(n)s was added by someone else while you were editing; compare "
                                "the versions before publishing.", n=versions[0].number), "warning")
                    return redirect(url_for(".diff_view", set_id=rule_set.id, b=version.number))
            fmt = "json" if text.strip().startswith("{") else "yaml"
            source = versions[0] if versions else None
            base_number = base
        else:
            source = (self._version(rule_set, request.args.get("from", type=int))
                      if request.args.get("from") else (versions[0] if versions else None))
            doc = source.document if source else shipped_default_document(db.session())
            fmt = "json" if request.args.get("format") == "json" else "yaml"
            text = as_json(doc) if fmt == "json" else as_yaml(doc)
            base_number = versions[0].number if versions else None
        facts, line_fields = field_reference()
        html = self.render(
            "admin/rules/edit.html", text=text, fmt=fmt, source=source, base=base_number, problems=problems,
            comment=request.form.get("comment", "") if request.method == "POST" else "",
            facts=facts, line_fields=line_fields, actions=action_reference(), verdicts=VERDICTS,
            wait_events=WAIT_EVENTS, placeholders=REMARK_PLACEHOLDERS, rates=_rates(), **ctx,
        )
        return (html, 422) if problems else html

    @expose("/create", methods=("POST",))
    def create(self) -> Any:
        self._edit_guard()
        session = db.session()
        name = (request.form.get("name") or "").strip()
        scope = request.form.get("scope") or ""
        merchant_id: int | None = None
        shop_id: int | None = None
        try:
            kind, _sep, raw_id = scope.partition(":")
            if kind == "shop":
                shop = session.get(Shop, int(raw_id))
                if shop is None:
                    raise ValueError
                merchant_id, shop_id = shop.merchant_id, shop.id
            elif kind == "merchant":
                merchant = session.get(Merchant, int(raw_id))
                if merchant is None:
                    raise ValueError
                merchant_id = merchant.id
            else:
                raise ValueError
        except ValueError:
            flash(_("Choose a merchant or a shop for the new rule set."), "error")
            return redirect(url_for(".index"))
        exists = session.scalar(select(RuleSet).where(
            RuleSet.name == name, RuleSet.merchant_id == merchant_id,
            RuleSet.shop_id.is_(None) if shop_id is None else RuleSet.shop_id == shop_id))
        if exists is not None:
            flash(_("A rule set named %(name)s already exists there.", name=name), "error")
            return redirect(url_for(".detail", set_id=exists.id))
        doc = shipped_default_document(session)
        doc["name"] = name  # the validator checks the name like any document name
        try:
            rule_set = get_or_create_rule_set(session, name, merchant_id=merchant_id, shop_id=shop_id)
            version = save_draft(session, rule_set, doc, _actor(), _("copied from the shipped default"))
            audit("rules.create", f"RuleSet:{rule_set.id}",
                  {"name": name, "merchant_id": merchant_id, "shop_id": shop_id, "version": version.number})
            session.commit()
        except ValidationFailed as exc:
            session.rollback()
            for problem in exc.problems:
                flash(str(problem), "error")
            return redirect(url_for(".index"))
        flash(_("Rule set %(name)s created with a draft copied from the shipped default. Edit it, then publish.",
                name=name), "success")
        return redirect(url_for(".detail", set_id=rule_set.id))

    # ----------------------------------------------------------------------------- publish / rollback

    def _comment(self) -> str | None:
        comment = (request.form.get("comment") or "").strip()
        if not comment:
            flash(_("A comment is required: say why (it is kept with the version and in the audit log)."), "error")
            return None
        return comment

    def _append(self, rule_set: RuleSet, action: str, number: int | None,
                do: Callable[[Session, RuleSet, int, str, str], RuleSetVersion]) -> Any:
        comment = self._comment()
        if comment is None or number is None:
            if number is None:
                flash(_("Choose a version."), "error")
            return redirect(url_for(".detail", set_id=rule_set.id))
        session = db.session()
        try:
            version = do(session, rule_set, number, _actor(), comment)
            audit(f"rules.{action}", f"RuleSet:{rule_set.id}",
                  {"from_version": number, "version": version.number, "label": version.label, "comment": comment})
            session.commit()
        except KaipiaoError as exc:
            session.rollback()
            flash(_("%(name)s: %(message)s", name=rule_set.name, message=str(exc)), "error")
        except IntegrityError:
            session.rollback()
            flash(_("Someone changed this rule set at the same moment; reload and try again."), "error")
        else:
            flash(_("%(label)s is live now: it decides new orders from now on. Invoices already issued and "
                    "requests already decided keep their rules version.", label=version.label), "success")
        return redirect(url_for(".detail", set_id=rule_set.id))

    @expose("/<int:set_id>/publish", methods=("POST",))
    def publish_version(self, set_id: int) -> Any:
        self._edit_guard()
        rule_set = self._rule_set(set_id)
        return self._append(rule_set, "publish", request.form.get("version", type=int), publish)

    @expose("/<int:set_id>/rollback", methods=("POST",))
    def rollback_version(self, set_id: int) -> Any:
        self._edit_guard()
        rule_set = self._rule_set(set_id)
        return self._append(rule_set, "rollback", request.form.get("version", type=int), rollback)

    # ----------------------------------------------------------------------------- dry-run / replay

    def _recent_orders(self, rule_set: RuleSet) -> list[Order]:
        session = db.session()
        shop_ids = [s.id for s in session.scalars(select(Shop)) if covers(rule_set, s)]
        if not shop_ids:
            return []
        return list(session.scalars(select(Order).where(Order.shop_id.in_(shop_ids))
                                    .order_by(Order.id.desc()).limit(RECENT_ORDERS)))

    def _stored_order(self, raw: str) -> Order | None:
        session = db.session()
        raw = raw.strip()
        if raw.isdigit():
            return session.get(Order, int(raw))
        parts = raw.split(":", 2)
        if len(parts) == 3:
            return session.scalar(select(Order).where(Order.platform == parts[0], Order.shop_code == parts[1],
                                                      Order.order_no == parts[2]))
        return None

    @expose("/<int:set_id>/v/<int:number>/dry-run", methods=("GET", "POST"))
    def dry_run_view(self, set_id: int, number: int) -> Any:
        self._edit_guard()
        session = db.session()
        rule_set = self._rule_set(set_id)
        version = self._version(rule_set, number)
        form = {k: request.form.get(k, "") for k in ("source", "order_json", "stored", "recent", "now")}
        form["source"] = form["source"] or "stored"
        result: DryRun | None = None
        problems: list[Problem] = []
        if request.method == "POST":
            try:
                now = _parse_now(form["now"])
                if form["source"] == "paste":
                    try:
                        order = json.loads(form["order_json"] or "")
                    except json.JSONDecodeError as exc:
                        raise ValidationFailed(Problem("order", "bad_json",
                                                       f"line {exc.lineno}, column {exc.colno}: {exc.msg}")) from None
                    shop = find_shop(session, order) if isinstance(order, dict) else None
                    note = None
                    if shop is None and isinstance(order, dict):
                        shop = fallback_shop(session, rule_set)
                        if shop is not None:
                            note = _("The order's shop is not configured; composed with the seller and options "
                                     "of %(shop)s.", shop=f"{shop.name} ({shop.platform}:{shop.shop_code})")
                else:
                    stored = self._stored_order(form["stored"] or form["recent"])
                    if stored is None:
                        raise ValidationFailed(Problem("stored", "not_found",
                                                       "no stored order with that id or platform:shop:order no"))
                    order, shop, note = stored.document, session.get(Shop, stored.shop_id), None
                result = dry_run(session, version, order, shop, now=now, note=note)
            except KaipiaoError as exc:
                problems = exc.problems
            finally:
                session.rollback()  # read-only: nothing the dry run touched is kept
        html = self.render("admin/rules/dry_run.html", version=version, form=form, result=result,
                           problems=problems, recent=self._recent_orders(rule_set), **self._common(rule_set))
        return (html, 422) if problems else html

    @expose("/<int:set_id>/v/<int:number>/replay", methods=("GET", "POST"))
    def replay_view(self, set_id: int, number: int) -> Any:
        self._edit_guard()
        rule_set = self._rule_set(set_id)
        version = self._version(rule_set, number)
        limit = request.form.get("n", type=int) or REPLAY_DEFAULT
        result: Replay | None = None
        problems: list[Problem] = []
        if request.method == "POST":
            try:
                result = replay(db.session(), version, limit)
            except KaipiaoError as exc:
                db.session.rollback()
                problems = exc.problems
        html = self.render("admin/rules/replay.html", version=version, n=min(max(limit, 1), REPLAY_CAP),
                           cap=REPLAY_CAP, result=result, problems=problems, rows_shown=REPLAY_ROWS_SHOWN,
                           **self._common(rule_set))
        return (html, 422) if problems else html

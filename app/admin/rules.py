"""Rule sets for tax specialists: list, edit drafts, diff, publish / roll back, dry-run, replay.

A thin view over the services: versions (app.services.rule_versions: save_draft, publish,
rollback, which only ever *append* versions), dry-run and replay (app.services.rule_dry_run,
app.services.rule_replay: read-only). Each change writes the admin audit log in the same
transaction.

Publishing changes new decisions only: invoices and requests already decided keep the rules
version they were decided with (nothing here touches them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import abort, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.admin.base import SecureView, audit, local_time
from app.auth import user_may
from app.engine.clock import BEIJING
from app.engine.json_input import load_json
from app.errors import KaipiaoError, Problem, ValidationFailed
from app.models import Merchant, Order, Shop
from app.models.rules import RuleSet, RuleSetVersion
from app.rules.actions import REMARK_PLACEHOLDERS, VERDICTS, WAIT_EVENTS
from app.rules.document import as_json, as_yaml, diff, parse_document, text_diff
from app.rules.reference import action_reference, field_reference, rates_text
from app.services.context import find_shop
from app.services.rule_dry_run import DryRun, dry_run, fallback_shop, recent_orders, stored_order
from app.services.rule_replay import REPLAY_CAP, REPLAY_ROWS_SHOWN, Replay, replay
from app.services.rule_versions import (
    applies_to,
    current_version,
    get_or_create_rule_set,
    publish,
    rollback,
    save_draft,
    scope_level,
    shipped_default_document,
)

EDIT_ROLES = ("tax_specialist",)
REPLAY_DEFAULT = 200
RECENT_ORDERS = 50


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
        raise ValidationFailed(Problem("now", "invalid", f"not a date and time: {raw[:40]!r}")) from None
    if not 1970 <= value.year <= 2099:
        raise ValidationFailed(Problem("now", "out_of_range", "must be between 1970 and 2099"))
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
                    audit(db.session(), "rules.save_draft", f"RuleSet:{rule_set.id}",
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
            number = request.args.get("from", type=int)
            source = self._version(rule_set, number) if number is not None else (versions[0] if versions else None)
            doc = source.document if source else shipped_default_document(db.session())
            fmt = "json" if request.args.get("format") == "json" else "yaml"
            text = as_json(doc) if fmt == "json" else as_yaml(doc)
            base_number = versions[0].number if versions else None
        facts, line_fields = field_reference()
        html = self.render(
            "admin/rules/edit.html", text=text, fmt=fmt, source=source, base=base_number, problems=problems,
            comment=request.form.get("comment", "") if request.method == "POST" else "",
            facts=facts, line_fields=line_fields, actions=action_reference(), verdicts=VERDICTS,
            wait_events=WAIT_EVENTS, placeholders=REMARK_PLACEHOLDERS, rates=rates_text(), **ctx,
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
            audit(db.session(), "rules.create", f"RuleSet:{rule_set.id}",
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
            audit(db.session(), f"rules.{action}", f"RuleSet:{rule_set.id}",
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
        return recent_orders(db.session(), rule_set, RECENT_ORDERS, merchant_id=current_user.merchant_scope())

    def _stored_order(self, raw: str) -> Order | None:
        return stored_order(db.session(), raw, merchant_id=current_user.merchant_scope())

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
                    if not form["order_json"].strip():
                        raise ValidationFailed(Problem("order", "required", "paste an order (JSON)"))
                    order = load_json(form["order_json"], "order")
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

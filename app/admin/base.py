"""Base classes for the back office: role-guarded, audited, ledgers read-only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import abort, redirect, request, url_for
from flask_admin import AdminIndexView, BaseView, expose
from flask_admin.contrib.sqla import ModelView
from flask_admin.model import typefmt
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy.orm import Session

from app import db
from app.auth import user_may
from app.engine.clock import BEIJING
from app.errors import Refused
from app.models.audit import AdminAuditLog
from app.models.types import MAX_ROW_ID


class SecureMixin:
    """``roles`` says who may open the view (admin always may); empty means nobody else."""

    roles: tuple[str, ...] = ()

    def is_accessible(self) -> bool:
        return user_may(current_user, self.roles)

    def inaccessible_callback(self, name: str, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path))
        abort(403)


class SecureIndexView(SecureMixin, AdminIndexView):
    roles = ("tax_specialist", "operations", "auditor", "merchant", "cs_agent")

    @expose("/")
    def index(self) -> Any:
        return self.render("admin/kaipiao_index.html")


class SecureView(SecureMixin, BaseView):
    pass


def audit(session: Session, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """An admin audit row, in the transaction of the change it records."""
    session.add(
        AdminAuditLog(
            username=getattr(current_user, "username", "?"),
            action=action,
            target=target,
            details=details or {},
            ip=request.remote_addr if request else None,
        )
    )


def local_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Beijing wall-clock time of a stored instant (naive = UTC, as SQLite gives it back)."""
    if value is None:
        return ""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(BEIJING).strftime(fmt)


# What a refused action (app.errors.Refused) says, by its code, in the user's language.
REFUSALS = {
    "not_found": _l("%(kind)s %(id)s does not exist"),
    "not_failed": _l("invoice %(id)s is %(status)s; only failed invoices are retried"),
    "not_held": _l("request %(id)s is %(status)s; only held requests are skipped here"),
    "not_awaiting": _l("invoice %(id)s is %(status)s; only unknown, pending or stuck issuing invoices are queried"),
    "not_paused": _l("issuing is not paused"),
    "seller_not_paused": _l("issuing is not paused for %(seller)s"),
    "already_resolved": _l("job failure %(id)s is already resolved"),
    "no_job": _l("no job id given"),
    "not_in_registry": _l("job %(job)s is not in RQ's failed registry"),
    "not_recreatable": _l("%(func)s cannot be re-created from its arguments (periodic jobs run again on their "
                          "own schedule); mark it resolved instead"),
    "unknown_queue": _l("unknown queue %(queue)s"),
}


def refusal_text(exc: Refused) -> str:
    template = REFUSALS.get(exc.code)
    return str(template) % exc.params if template is not None else str(exc)


def _beijing(view: Any, value: datetime, name: str | None = None) -> str:
    # Stored in UTC; business time is Asia/Shanghai.
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S") if value.tzinfo else str(value)


COLUMN_LABELS = {
    "id": _l("ID"), "name": _l("Name"), "merchant": _l("Merchant"), "merchant_id": _l("Merchant"),
    "platform": _l("Platform"), "shop_code": _l("Shop code"), "order_no": _l("Order no."), "status": _l("Status"),
    "paid_amount": _l("Paid"), "invoice_amount": _l("Invoice amount"), "paid_at": _l("Paid at"),
    "updated_at": _l("Updated"), "created_at": _l("Created"), "order": _l("Order"), "title_type": _l("Title type"),
    "kind": _l("Kind"), "title": _l("Title"), "tax_id": _l("Tax id"), "status_reason": _l("Reason"),
    "rules_version": _l("Rules version"), "issue_after": _l("Issue after"), "color": _l("Blue/red"),
    "number": _l("Invoice number"), "serial_no": _l("Serial"), "total": _l("Total incl. tax"),
    "total_tax": _l("Tax"), "total_amount": _l("Amount excl. tax"), "issued_at": _l("Issued at"),
    "red_of_id": _l("Reverses"), "failure_reason": _l("Failure reason"), "chain_seq": _l("Chain no."),
    "occurred_at": _l("Time"), "order_pk": _l("Order"), "request_id": _l("Request"), "invoice_id": _l("Invoice"),
    "from_state": _l("From"), "to_state": _l("To"), "actor": _l("Actor"), "hash": _l("Hash"),
    "code": _l("Code"), "short_name": _l("Short name"), "rates": _l("Rates"), "treatments": _l("Treatments"),
    "active": _l("Active"), "username": _l("Username"), "display_name": _l("Display name"), "roles": _l("Roles"),
    "last_login_at": _l("Last login"), "sync_cursor": _l("Sync cursor"), "match_kind": _l("Match by"),
    "match_value": _l("Match value"), "tax_code": _l("Tax code"), "tax_rate": _l("Tax rate"),
    "invoice_name": _l("Name on invoice"), "queue": _l("Queue"), "func": _l("Function"), "job_id": _l("Job"),
    "exc_type": _l("Error"), "message": _l("Message"), "failed_at": _l("Failed at"), "resolution": _l("Resolution"),
    "at": _l("Time"), "action": _l("Action"), "target": _l("Target"), "details": _l("Details"), "ip": _l("IP"),
}


class SecureModelView(SecureMixin, ModelView):
    """Every create/edit/delete is written to the admin audit log in the same transaction."""

    page_size = 50
    can_view_details = True
    column_labels = COLUMN_LABELS
    column_type_formatters = {**typefmt.BASE_FORMATTERS, datetime: _beijing}
    column_type_formatters_detail = {**typefmt.DETAIL_FORMATTERS, datetime: _beijing}
    # Roles that may change rows (others in ``roles`` only read).
    edit_roles: tuple[str, ...] = ()
    # What the view allows at all, for ``edit_roles`` (and admin); ordinary class attributes,
    # so a base class (LedgerView) decides for its subclasses unless they say otherwise.
    allow_create: bool = True
    allow_edit: bool = True
    allow_delete: bool = False

    # The endpoints a permission guards; a refused one answers 403 (Flask-Admin itself would
    # only redirect from some and not check others). ``action_view`` is guarded per action
    # and ``ajax_lookup`` (it feeds the create and edit forms) by those permissions, in
    # ``_refused``.
    GUARDED_ENDPOINTS = {"create_view": "can_create", "edit_view": "can_edit", "ajax_update": "can_edit",
                         "delete_view": "can_delete", "details_view": "can_view_details", "export": "can_export"}

    def __init__(self, model: type, **kwargs: Any) -> None:
        super().__init__(model, db.session, **kwargs)

    def _may_edit(self) -> bool:
        return user_may(current_user, self.edit_roles)

    @property
    def can_create(self) -> bool:
        return self.allow_create and self._may_edit()

    @property
    def can_edit(self) -> bool:
        return self.allow_edit and self._may_edit()

    @property
    def can_delete(self) -> bool:
        return self.allow_delete and self._may_edit()

    def _handle_view(self, name: str, **kwargs: Any) -> Any:
        refused = super()._handle_view(name, **kwargs)
        if refused is not None:
            return refused
        if self._refused(name):
            abort(403)
        if name == "export" and kwargs.get("export_type") not in self.export_types:
            abort(404)
        return None

    def _refused(self, endpoint: str) -> bool:
        if endpoint == "action_view":
            action = request.form.get("action", "")
            return action not in self._actions_data or not self.is_action_allowed(action)
        if endpoint == "ajax_lookup":
            return not (self.can_create or self.can_edit)
        permission = self.GUARDED_ENDPOINTS.get(endpoint)
        return permission is not None and not getattr(self, permission)

    def on_model_change(self, form: Any, model: Any, is_created: bool) -> None:
        changed = {f.name: str(f.data)[:200] for f in form if f.name != "csrf_token" and f.name not in self._secret_fields()}
        audit(db.session(), "create" if is_created else "edit", f"{self.model.__name__}:{getattr(model, 'id', '')}",
              changed)

    def on_model_delete(self, model: Any) -> None:
        audit(db.session(), "delete", f"{self.model.__name__}:{getattr(model, 'id', '')}")

    def _secret_fields(self) -> set[str]:
        return set(getattr(self, "secret_fields", ()))

    def row_key(self, id: Any) -> int | str | None:
        """The primary key ``?id=`` names, typed like the column, or None when it can name no
        row. It is typed by whoever sends the URL: a 30-digit id is not a PostgreSQL integer,
        and a text compared with an integer column is an error there."""
        text = str(id).strip()
        if self.model.__table__.c.get("id") is not None:
            digits = text.isascii() and text.isdigit() and len(text) <= 20
            return int(text) if digits and 0 < int(text) <= MAX_ROW_ID else None
        if len(text) > 200 or "\x00" in text:  # a text key (tax codes): nothing that long, never NUL
            return None
        return text

    def get_one(self, id: Any) -> Any:
        key = self.row_key(id)
        return None if key is None else super().get_one(str(key))


class LedgerView(SecureModelView):
    """Read-only for every role, admin included; the database refuses edits too (app/guards.py)."""

    allow_create = False
    allow_edit = False
    allow_delete = False
    can_export = True
    column_default_sort = ("id", True)

    # Behind the 403 of the endpoints (SecureModelView._handle_view): nothing reaches a write.
    def create_model(self, form: Any) -> Any:
        abort(403)

    def update_model(self, form: Any, model: Any) -> Any:
        abort(403)

    def delete_model(self, model: Any) -> Any:
        abort(403)

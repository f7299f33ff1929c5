"""Base classes for the back office: role-guarded, audited, ledgers read-only."""

from __future__ import annotations

from typing import Any

from flask import abort, redirect, request, url_for
from flask_admin import AdminIndexView, BaseView, expose
from flask_admin.contrib.sqla import ModelView
from flask_login import current_user

from app import db
from app.auth import user_may
from app.models.audit import AdminAuditLog


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


def audit(action: str, target: str, details: dict[str, Any] | None = None) -> None:
    db.session.add(
        AdminAuditLog(
            username=getattr(current_user, "username", "?"),
            action=action,
            target=target,
            details=details or {},
            ip=request.remote_addr if request else None,
        )
    )


class SecureModelView(SecureMixin, ModelView):
    """Every create/edit/delete is written to the admin audit log in the same transaction."""

    page_size = 50
    can_view_details = True
    # Roles that may change rows (others in ``roles`` only read).
    edit_roles: tuple[str, ...] = ()

    def __init__(self, model: type, **kwargs: Any) -> None:
        super().__init__(model, db.session, **kwargs)

    def _may_edit(self) -> bool:
        return user_may(current_user, self.edit_roles)

    @property
    def can_create(self) -> bool:  # type: ignore[override]
        return self._may_edit() and self.__class__.__dict__.get("allow_create", True)

    @property
    def can_edit(self) -> bool:  # type: ignore[override]
        return self._may_edit() and self.__class__.__dict__.get("allow_edit", True)

    @property
    def can_delete(self) -> bool:  # type: ignore[override]
        return self._may_edit() and self.__class__.__dict__.get("allow_delete", False)

    def on_model_change(self, form: Any, model: Any, is_created: bool) -> None:
        changed = {f.name: str(f.data)[:200] for f in form if f.name != "csrf_token" and f.name not in self._secret_fields()}
        audit("create" if is_created else "edit", f"{self.model.__name__}:{getattr(model, 'id', '')}", changed)

    def on_model_delete(self, model: Any) -> None:
        audit("delete", f"{self.model.__name__}:{getattr(model, 'id', '')}")

    def _secret_fields(self) -> set[str]:
        return set(getattr(self, "secret_fields", ()))


class LedgerView(SecureModelView):
    """Read-only; the database refuses edits too (app/guards.py)."""

    allow_create = False
    allow_edit = False
    allow_delete = False
    can_export = True
    column_default_sort = ("id", True)

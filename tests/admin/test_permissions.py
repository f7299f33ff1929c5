"""Who may create, edit and delete in each model view: the endpoints refuse, not only the buttons."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.models import AdminAuditLog, InvoiceEvent

# endpoint -> (create, edit, delete) for an admin; ledgers and the pipeline's rows are read-only.
ADMIN = {
    "merchants": (True, True, False),
    "sellers": (True, True, False),
    "shops": (True, True, False),
    "tax_codes": (True, True, False),
    "sku_mappings": (True, True, False),
    "users": (True, True, False),
    "orders": (False, False, False),
    "requests": (False, False, False),
    "invoices": (False, False, False),
    "job_failures": (False, False, False),
    "invoice_log": (False, False, False),
    "audit_log": (False, False, False),
}


def _allowed(client, endpoint: str) -> tuple[bool, bool, bool]:
    def ok(response) -> bool:
        assert response.status_code in (200, 302, 403), (endpoint, response.status_code)
        return response.status_code != 403

    return (ok(client.get(f"/admin/{endpoint}/new/")),
            ok(client.get(f"/admin/{endpoint}/edit/?id=999999")),
            ok(client.post(f"/admin/{endpoint}/delete/", data={"id": "999999"})))


@pytest.mark.parametrize("endpoint", sorted(ADMIN))
def test_admin_permissions_per_view(client, login, endpoint):
    login("admin")
    assert _allowed(client, endpoint) == ADMIN[endpoint]


def test_tax_specialist_edits_tax_codes_only(client, login):
    login("tax_specialist")
    assert _allowed(client, "tax_codes") == (True, True, False)
    assert _allowed(client, "sku_mappings") == (True, True, False)
    assert _allowed(client, "merchants") == (False, False, False)


def test_forged_invoice_event_is_refused_for_admin(client, login, db_session):
    login("admin")
    form = {"kind": "transition", "from_state": "issuing", "to_state": "issued", "actor": "system",
            "data": "{}", "occurred_at": "2026-11-30 10:00:00"}
    for url in ("/admin/invoice_log/new/", "/admin/invoice_log/new/?url=/admin/invoice_log/"):
        assert client.post(url, data=form).status_code == 403
    assert client.post("/admin/invoice_log/action/", data={"action": "delete", "rowid": "1"}).status_code == 403
    assert client.post("/admin/invoice_log/ajax/update/", data={"list_form_pk": "1", "kind": "x"}).status_code == 403
    db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(InvoiceEvent)) == 0


def test_audit_rows_cannot_be_forged_or_edited(client, login, db_session):
    user = login("admin")
    assert client.post("/admin/audit_log/new/", data={"username": user.username, "action": "x",
                                                      "target": "y", "details": "{}"}).status_code == 403
    assert client.get("/admin/audit_log/").status_code == 200  # reading stays open
    db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(AdminAuditLog)) == 0


def test_every_model_endpoint_answers_403_for_what_the_view_does_not_allow(client, login, monkeypatch):
    """Export, lookups, actions and details are refused with 403 like create/edit/delete (Flask-Admin
    alone redirects from some and does not check others)."""
    from app.admin.views import JobFailureView

    login("admin")
    assert client.get("/admin/orders/export/csv/").status_code == 403  # no export here
    assert client.get("/admin/invoice_log/export/csv/").status_code == 200  # the ledgers export
    assert client.get("/admin/invoice_log/export/nope/").status_code == 404
    assert client.get("/admin/orders/ajax/lookup/?name=shop&query=a").status_code == 403  # no form, no lookup
    assert client.get("/admin/merchants/ajax/lookup/?name=nope").status_code == 404  # a form, no such lookup
    for action in ("delete", "nope", ""):  # delete is allowed nowhere; unknown actions never
        assert client.post("/admin/merchants/action/", data={"action": action, "rowid": "1"}).status_code == 403
    monkeypatch.setattr(JobFailureView, "can_view_details", False)
    assert client.get("/admin/job_failures/details/?id=1").status_code == 403


def test_ledger_subclasses_inherit_no_writes(app):
    """A view derived from LedgerView writes nothing even for admin, without repeating the settings."""
    from flask_login import login_user

    from app.admin.base import LedgerView
    from app.admin.views import AdminAuditLogView, InvoiceEventView
    from app.models import User

    with app.test_request_context():
        login_user(User(id=1, username="a", roles=["admin"], active=True))
        for view_class in (InvoiceEventView, AdminAuditLogView):
            assert issubclass(view_class, LedgerView)
            view = next(v for v in app.extensions["kaipiao_admin"]._views if type(v) is view_class)
            assert (view.can_create, view.can_edit, view.can_delete) == (False, False, False)
            assert not any(view.is_action_allowed(name) for name in view._actions_data)

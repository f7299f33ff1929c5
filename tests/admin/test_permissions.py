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

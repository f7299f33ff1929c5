"""The ledger check for auditors (/admin/ledger_check/): the same check as ``kaipiao verify-log``
(app.services.log_verification), each ledger's state, its first bad row, and when the last
check ran. Running it is a POST; the result is kept in the instance folder."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, flash, redirect, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from app import db
from app.admin.base import SecureView, local_time
from app.services.log_verification import last_report, save_report, verify_all

SECTIONS = {
    "ledger-checkpoints.jsonl": _l("Checkpoint file"),
    "invoice_event": _l("Invoice log"),
    "admin_audit_log": _l("Admin audit log"),
    "rule_set_version": _l("Rule-set versions"),
    "sales_order": _l("Order documents"),
}

# What a finding's code means, in the user's language (its message gives the detail in English).
PROBLEMS = {
    "hash_mismatch": _l("the row was edited: it does not match its hash"),
    "broken_link": _l("the link to the row before it is broken"),
    "missing_rows": _l("rows before it were deleted"),
    "unchained": _l("a hash but no place in the chain"),
    "rows_deleted": _l("rows recorded by a checkpoint were deleted"),
    "chain_rewritten": _l("the chain was edited and hashed again after a checkpoint"),
    "no_checkpoints": _l("no checkpoint file: deleted or rewritten rows cannot be detected"),
    "document_hash": _l("the stored document hash does not match the document"),
    "unreadable": _l("a checkpoint line cannot be read"),
    "renumbered": _l("checkpoint lines were renumbered"),
    "no_hmac": _l("a checkpoint line has no HMAC"),
    "bad_hmac": _l("a checkpoint line's HMAC does not match"),
}


class LedgerCheckView(SecureView):
    roles = ("auditor",)

    @expose("/")
    def index(self) -> Any:
        report = last_report(current_app.config["KAIPIAO"].instance_path)
        checked_at = datetime.fromisoformat(report["checked_at"]) if report else None
        return self.render("admin/ledger/index.html", report=report, checked_at=checked_at, sections=SECTIONS,
                           problems=PROBLEMS, local_time=local_time)

    @expose("/run", methods=("POST",))
    def run(self) -> Any:
        settings = current_app.config["KAIPIAO"]
        report = verify_all(db.session(), settings.instance_path, settings.ledger_hmac_key)
        db.session.rollback()
        save_report(report, settings.instance_path)
        if report.ok:
            flash(_("All ledgers verified."), "success")
        else:
            flash(_("The ledgers have been tampered with: see the first bad row of each below."), "error")
        return redirect(url_for(".index"))

"""The ledger check that ``kaipiao verify-log`` and the auditors' admin page share.

Checks every hash chain (app/ledger.py), the chains against the checkpoint file (deleted newest
rows, a rewritten and re-hashed chain), the checkpoint file itself (its line chain and, with
``KAIPIAO_LEDGER_HMAC_KEY``, each line's HMAC), and every stored document hash: orders
(``sales_order.document_hash`` as app/services/intake.py computes it) and rule versions
(``rule_set_version.document_hash`` as app/rules/ruleset.py computes it). Each section names
its first bad row. The last result is kept in the instance folder for the page to show.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import ledger
from app.engine.clock import utcnow
from app.ledger import Finding
from app.models.order import Order
from app.rules.ruleset import document_hash as ruleset_document_hash
from app.services.intake import document_hash as order_document_hash

LAST_CHECK_FILE = "ledger-last-check.json"
ORDERS = "sales_order"
CHECKPOINTS = ledger.CHECKPOINT_FILE


@dataclass
class Section:
    """One ledger (or the orders' documents, or the checkpoint file): its state and what is wrong."""

    name: str
    rows: int = 0  # sealed rows (orders: documents checked; checkpoints: lines)
    unsealed: int = 0
    head_seq: int = 0
    checkpoint_seq: int | None = None  # the newest checkpoint's seq for this chain
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None


@dataclass
class Report:
    checked_at: datetime
    sections: list[Section]
    hmac_checked: bool
    checkpoint_path: str

    @property
    def ok(self) -> bool:
        return all(section.ok for section in self.sections)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat(),
            "ok": self.ok,
            "hmac_checked": self.hmac_checked,
            "checkpoint_path": self.checkpoint_path,
            "sections": [{**asdict(s), "ok": s.ok, "first": asdict(s.first) if s.first else None}
                         for s in self.sections],
        }


def verify_all(session: Session, instance_path: Path, hmac_key: str | None = None) -> Report:
    path = ledger.checkpoint_path(instance_path)
    file = ledger.read_checkpoints(path, hmac_key)
    sections = [_checkpoint_section(file)]
    for chain in ledger.LEDGERS:
        check = ledger.verify_chain(session, chain, ledger.wanted_seqs(file.lines, chain.name))
        findings = check.findings + ledger.against_checkpoints(check, file.lines)
        if chain is ledger.RULE_VERSIONS:
            findings += _rule_documents(session)
        if not file.exists and check.sealed:
            findings.append(Finding(chain.name, None, None, "no_checkpoints",
                                    f"{chain.name}: {check.sealed} sealed rows but no checkpoint file at {path}: "
                                    "deleted newest rows or a re-hashed chain could not be seen"))
        findings.sort(key=lambda f: (f.chain_seq is None, f.chain_seq or 0))
        newest = file.lines[-1].heads.get(chain.name, {}) if file.lines else {}
        sections.append(Section(chain.name, check.sealed, check.unsealed, check.head_seq,
                                newest.get("seq"), findings))
    sections.append(_order_documents(session))
    return Report(utcnow(), sections, file.hmac_checked, str(path))


def _checkpoint_section(file: ledger.CheckpointFile) -> Section:
    section = Section(CHECKPOINTS, rows=len(file.lines), findings=list(file.findings))
    if file.lines:
        section.head_seq = file.lines[-1].n
    return section


def _rule_documents(session: Session) -> list[Finding]:
    table = ledger.RULE_VERSIONS.table
    out = []
    for row in session.execute(select(table.c.id, table.c.chain_seq, table.c.document, table.c.document_hash)
                               .order_by(table.c.id)):
        if ruleset_document_hash(row.document) != row.document_hash:
            out.append(Finding(table.name, row.id, row.chain_seq, "document_hash",
                               f"rule_set_version row {row.id}: its document_hash is not the hash of its document "
                               "(the document was edited)"))
            if len(out) >= ledger.MAX_FINDINGS:
                break
    return out


def _order_documents(session: Session) -> Section:
    section = Section(ORDERS)
    rows = session.execute(select(Order.id, Order.document, Order.document_hash).order_by(Order.id)
                           .execution_options(yield_per=2000))
    for row in rows:
        section.rows += 1
        if order_document_hash(row.document) != row.document_hash and len(section.findings) < ledger.MAX_FINDINGS:
            section.findings.append(Finding(ORDERS, row.id, None, "document_hash",
                                            f"sales_order row {row.id}: its document_hash is not the hash of its "
                                            "document (the document was edited)"))
    return section


# ------------------------------------------------------------------------------ the last check


def save_report(report: Report, instance_path: Path) -> None:
    """Keep the result for the admin page (written whole, then renamed into place)."""
    instance_path.mkdir(parents=True, exist_ok=True)
    target = instance_path / LAST_CHECK_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, target)


def last_report(instance_path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((instance_path / LAST_CHECK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def summary(report: Report) -> list[str]:
    """What the command prints: one line per section, then one overall."""
    lines = []
    for s in report.sections:
        if s.name == CHECKPOINTS:
            state = f"{s.rows} checkpoint lines" + (", HMAC checked" if report.hmac_checked else ", no HMAC key")
        elif s.name == ORDERS:
            state = f"{s.rows} order documents"
        else:
            cp = f", last checkpoint at seq {s.checkpoint_seq}" if s.checkpoint_seq is not None else ""
            state = f"{s.rows} sealed, {s.unsealed} awaiting sealing{cp}"
        if s.first is None:
            lines.append(f"{s.name}: ok ({state})")
        else:
            more = f" (+{len(s.findings) - 1} more)" if len(s.findings) > 1 else ""
            lines.append(f"{s.name}: BAD ({state}); first bad row: {s.first.message}{more}")
    bad = [s.name for s in report.sections if not s.ok]
    lines.append("ledger check: all ledgers verified" if not bad else f"ledger check FAILED: {', '.join(bad)}")
    return lines

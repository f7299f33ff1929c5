"""The tamper-evident ledgers: the invoice log, the admin audit log and rule-set versions.

Rows are appended inside the business transaction with no hash (so concurrent workers never
contend for a chain head): services record invoice events through their unit of work
(app/services/unit_of_work.py), which inserts them with ``insert_rows``; the admin writes audit
rows, the rule services versions. ``seal`` — run by one writer at a time — links each ledger's
unsealed rows into its own chain in id order: ``hash = sha256(prev_hash + canonical row)``,
``chain_seq`` 1, 2, …, the first ``prev_hash`` being ``GENESIS``. ``verify_chain`` recomputes a
chain; an edit that slipped past the database guards (app/guards.py) breaks it.

Canonical form of a row (``canonical``): the JSON object of the ledger's ``columns`` plus
``chain_seq``, keys sorted, no spaces, UTF-8 (``ensure_ascii=False``), times as ISO 8601 UTC
with microseconds. The columns are every column that matters (all but the three chain
columns), so each is covered:

- ``invoice_event``: id, occurred_at, order_pk, request_id, invoice_id, kind, from_state,
  to_state, actor, data
- ``admin_audit_log``: id, at, username, action, target, details, ip
- ``rule_set_version``: id, rule_set_id, number, action, published, based_on, document,
  document_hash, comment, author, created_at

A chain alone does not stop someone who can write the database from deleting its newest rows
or editing a row and hashing the rest again. Checkpoints do: ``write_checkpoint`` appends each
chain's head (seq, id, hash) to a file in the instance folder, one JSON line per checkpoint,
each line carrying the SHA-256 of the line before it and, when ``KAIPIAO_LEDGER_HMAC_KEY`` is
set, an HMAC-SHA256 of itself under that key (kept out of the database).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from app.db import table_of
from app.engine.clock import utcnow
from app.models.audit import AdminAuditLog
from app.models.event_log import InvoiceEvent
from app.models.rules import RuleSetVersion

GENESIS = "0" * 64
CHECKPOINT_FILE = "ledger-checkpoints.jsonl"


@dataclass(frozen=True)
class Ledger:
    name: str  # its table
    model: type
    columns: tuple[str, ...]  # the canonical form's columns (besides chain_seq)
    noun: str  # what verify's message counts

    @property
    def table(self) -> Table:
        return table_of(self.model)


INVOICE_EVENTS = Ledger("invoice_event", InvoiceEvent,
                        ("id", "occurred_at", "order_pk", "request_id", "invoice_id", "kind", "from_state",
                         "to_state", "actor", "data"), "events")
AUDIT_LOG = Ledger("admin_audit_log", AdminAuditLog,
                   ("id", "at", "username", "action", "target", "details", "ip"), "audit rows")
RULE_VERSIONS = Ledger("rule_set_version", RuleSetVersion,
                       ("id", "rule_set_id", "number", "action", "published", "based_on", "document",
                        "document_hash", "comment", "author", "created_at"), "rule versions")
LEDGERS: tuple[Ledger, ...] = (INVOICE_EVENTS, AUDIT_LOG, RULE_VERSIONS)
BY_NAME = {ledger.name: ledger for ledger in LEDGERS}


def event_row(
    kind: str,
    *,
    order_pk: int | None = None,
    request_id: int | None = None,
    invoice_id: int | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    actor: str = "system",
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event as a row to insert (no hash yet: ``seal`` chains it later)."""
    return {"occurred_at": utcnow(), "kind": kind, "order_pk": order_pk, "request_id": request_id,
            "invoice_id": invoice_id, "from_state": from_state, "to_state": to_state, "actor": actor,
            "data": data or {}}


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert events made by ``event_row`` in one statement, in order (ids keep each story's order)."""
    session.connection().execute(table_of(InvoiceEvent).insert(), rows)


def _plain(value: Any) -> Any:
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else value


def canonical(ledger: Ledger, row: Any, chain_seq: int | None = None) -> bytes:
    """``row``: a model object or a row with the ledger's columns as attributes; ``chain_seq``
    overrides the row's own (a row being sealed has none yet)."""
    payload = {name: _plain(getattr(row, name)) for name in ledger.columns}
    payload["chain_seq"] = row.chain_seq if chain_seq is None else chain_seq
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def row_hash(ledger: Ledger, prev_hash: str, row: Any, chain_seq: int | None = None) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(ledger, row, chain_seq)).hexdigest()


def event_hash(prev_hash: str, event: Any, chain_seq: int | None = None) -> str:
    return row_hash(INVOICE_EVENTS, prev_hash, event, chain_seq)


def _lock_chain(session: Session) -> None:
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # One sealer (or checkpointer) at a time across hosts; released at commit. SQLite:
        # the sealing transaction holds the write lock (app.db.transaction).
        session.execute(text("SELECT pg_advisory_xact_lock(7411001)"))


def _head(session: Session, ledger: Ledger) -> tuple[int, int | None, str]:
    """(chain_seq, id, hash) of the newest sealed row; (0, None, GENESIS) for an empty chain."""
    table = ledger.table
    row = session.execute(
        select(table.c.chain_seq, table.c.id, table.c.hash)
        .where(table.c.chain_seq.is_not(None)).order_by(table.c.chain_seq.desc()).limit(1)
    ).first()
    if row is None or row[2] is None:
        return 0, None, GENESIS
    return int(row[0]), int(row[1]), str(row[2])


def seal_chain(session: Session, ledger: Ledger, limit: int = 5000) -> int:
    """Chain up to ``limit`` unsealed rows of one ledger (the caller holds the chain lock)."""
    seq, _id, prev = _head(session, ledger)
    # Plain rows and one executemany UPDATE: sealing keeps pace with ~10 events per invoice
    # at full load (ORM objects cost several times more per event).
    table = ledger.table
    columns = [table.c[name] for name in ledger.columns]
    pending = session.execute(select(*columns).where(table.c.hash.is_(None)).order_by(table.c.id).limit(limit)).all()
    updates = []
    for row in pending:
        seq += 1
        digest = row_hash(ledger, prev, row, chain_seq=seq)
        updates.append({"b_id": row.id, "b_seq": seq, "b_prev": prev, "b_hash": digest})
        prev = digest
    if updates:
        session.connection().execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(chain_seq=bindparam("b_seq"), prev_hash=bindparam("b_prev"), hash=bindparam("b_hash")),
            updates)
    return len(pending)


def seal(session: Session, limit: int = 5000) -> int:
    """Chain up to ``limit`` unsealed rows of each ledger; returns how many were sealed. Commit after."""
    _lock_chain(session)
    session.flush()
    return sum(seal_chain(session, ledger, limit) for ledger in LEDGERS)


# ------------------------------------------------------------------------------ verification


@dataclass
class Finding:
    """One thing wrong, about one row when it can be named."""

    table: str
    row_id: int | None
    chain_seq: int | None
    code: str
    message: str


@dataclass
class ChainCheck:
    ledger: str
    sealed: int = 0
    unsealed: int = 0
    head_seq: int = 0
    head_id: int | None = None
    findings: list[Finding] = field(default_factory=list)
    # chain_seq -> (id, hash) of the rows asked for (the checkpointed ones)
    at: dict[int, tuple[int, str | None]] = field(default_factory=dict)


MAX_FINDINGS = 100  # per ledger: the first is what matters, the count says how bad


def verify_chain(session: Session, ledger: Ledger, want: set[int] | None = None) -> ChainCheck:
    """Walk one chain in ``chain_seq`` order, recomputing every link; goes on past a bad row
    (from its stored hash) so one edit is one finding. ``want``: seqs whose (id, hash) to keep."""
    table = ledger.table
    check = ChainCheck(ledger.name)
    wanted = want or set()
    columns = [table.c[name] for name in ledger.columns] + [table.c.chain_seq, table.c.prev_hash, table.c.hash]
    rows = session.execute(select(*columns).where(table.c.chain_seq.is_not(None))
                           .order_by(table.c.chain_seq).execution_options(yield_per=2000))
    prev, expected = GENESIS, 1

    def found(row: Any, code: str, message: str) -> None:
        if len(check.findings) < MAX_FINDINGS:
            check.findings.append(Finding(ledger.name, row.id, row.chain_seq, code, message))

    for row in rows:
        seq = row.chain_seq
        if seq != expected:
            missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
            found(row, "missing_rows", f"{ledger.name} row {row.id} (seq {seq}): {missing} missing before it "
                                       "(rows were deleted)")
        elif row.prev_hash != prev:
            found(row, "broken_link", f"{ledger.name} row {row.id} (seq {seq}): prev_hash does not match the "
                                      "hash of the row before it")
        elif row.hash is None or row_hash(ledger, prev, row) != row.hash:
            found(row, "hash_mismatch", f"{ledger.name} row {row.id} (seq {seq}) does not match its hash "
                                        "(the row was edited)")
        if seq in wanted:
            check.at[seq] = (row.id, row.hash)
        prev, expected = row.hash or "", seq + 1
        check.sealed += 1
        check.head_seq, check.head_id = seq, row.id
    check.unsealed = session.scalar(select(func.count()).select_from(table).where(table.c.hash.is_(None))) or 0
    stray = session.execute(select(table.c.id).where(table.c.chain_seq.is_(None), table.c.hash.is_not(None))
                            .order_by(table.c.id).limit(1)).scalar()
    if stray is not None:
        check.findings.append(Finding(ledger.name, stray, None, "unchained",
                                      f"{ledger.name} row {stray} has a hash but no place in the chain"))
    return check


def verify(session: Session, ledger: Ledger = INVOICE_EVENTS) -> tuple[bool, str]:
    """Recompute one chain (the invoice log by default). Returns (ok, message naming the first
    broken link). Checkpoints and documents: app/services/log_verification.py."""
    check = verify_chain(session, ledger)
    if check.findings:
        return False, check.findings[0].message
    return True, f"{check.sealed} {ledger.noun} verified, {check.unsealed} awaiting sealing"


# ------------------------------------------------------------------------------- checkpoints


def checkpoint_path(instance_path: Path) -> Path:
    return instance_path / CHECKPOINT_FILE


def heads(session: Session) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for ledger in LEDGERS:
        seq, row_id, digest = _head(session, ledger)
        out[ledger.name] = {"seq": seq, "id": row_id, "hash": digest}
    return out


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _mac(key: str, body: dict[str, Any]) -> str:
    return hmac.new(key.encode(), _dump(body).encode(), hashlib.sha256).hexdigest()


def line_hash(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def _last_line(fh: Any) -> str | None:
    """The last non-empty line of a binary file opened for reading, read from the end."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    chunk, data = 4096, b""
    pos = end
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
        stripped = data.rstrip(b"\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1].decode()
    stripped = data.rstrip(b"\n")
    return stripped.decode() if stripped else None


def write_checkpoint(session: Session, path: Path, hmac_key: str | None = None,
                     now: datetime | None = None) -> dict[str, Any] | None:
    """Append the chains' heads to the checkpoint file, unless they are what its last line says.
    Call in a transaction of its own after the sealing one committed: heads read under the chain
    lock are committed and cannot move until this transaction ends. Returns the line written."""
    _lock_chain(session)
    current = heads(session)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "r+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one writer per host
        last = _last_line(fh)
        previous = json.loads(last) if last else None
        if previous is not None and previous.get("heads") == current:
            return None
        body: dict[str, Any] = {
            "n": (previous["n"] + 1) if previous else 1,
            "at": (now or utcnow()).isoformat(timespec="microseconds"),
            "heads": current,
            "prev": line_hash(last) if last else GENESIS,
        }
        if hmac_key:
            body["hmac"] = _mac(hmac_key, body)
        fh.write((_dump(body) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())
    return body


@dataclass
class Checkpoint:
    n: int
    at: str
    heads: dict[str, dict[str, Any]]


@dataclass
class CheckpointFile:
    path: str
    exists: bool
    lines: list[Checkpoint] = field(default_factory=list)
    hmac_checked: bool = False
    findings: list[Finding] = field(default_factory=list)


def read_checkpoints(path: Path, hmac_key: str | None = None) -> CheckpointFile:
    """Parse and check the checkpoint file: lines numbered 1, 2, …, each carrying the hash of
    the line before it and, with a key, a valid HMAC (a line without one is a finding)."""
    result = CheckpointFile(str(path), path.exists(), hmac_checked=bool(hmac_key))
    if not result.exists:
        return result
    prev = GENESIS

    def bad(number: int, code: str, message: str) -> None:
        if len(result.findings) < MAX_FINDINGS:
            result.findings.append(Finding(CHECKPOINT_FILE, number, None, code, message))

    for number, raw in enumerate(_lines(path), start=1):
        try:
            body = json.loads(raw)
            entry = Checkpoint(int(body["n"]), str(body["at"]), dict(body["heads"]))
        except (ValueError, KeyError, TypeError):
            bad(number, "unreadable", f"checkpoint line {number} is not a checkpoint")
            prev = line_hash(raw)
            continue
        if entry.n != number:
            bad(number, "renumbered", f"checkpoint line {number} says it is number {entry.n}")
        if body.get("prev") != prev:
            bad(number, "broken_link", f"checkpoint line {number} does not carry the hash of the line before it "
                                       "(lines were edited, removed or inserted)")
        if hmac_key:
            mac = body.pop("hmac", None)
            if mac is None:
                bad(number, "no_hmac", f"checkpoint line {number} has no HMAC")
            elif not hmac.compare_digest(str(mac), _mac(hmac_key, body)):
                bad(number, "bad_hmac", f"checkpoint line {number}: its HMAC does not match (written without "
                                        "the key, or edited)")
        prev = line_hash(raw)
        result.lines.append(entry)
    return result


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            raw = raw.rstrip("\n")
            if raw:
                yield raw


def against_checkpoints(check: ChainCheck, checkpoints: list[Checkpoint]) -> list[Finding]:
    """Findings where a chain is not what the checkpoints recorded of it: the rows at the
    checkpointed seqs must still be there with the same id and hash (else the chain was
    rewritten), and the chain must reach the newest checkpointed seq (else rows were deleted)."""
    findings: list[Finding] = []
    last_good = 0
    newest: tuple[int, Any, Checkpoint] | None = None
    for cp in checkpoints:
        head = cp.heads.get(check.ledger)
        if not head or not head.get("seq"):
            continue
        seq, row_id, digest = int(head["seq"]), head.get("id"), head.get("hash")
        if newest is None or seq >= newest[0]:
            newest = (seq, row_id, cp)
        stored = check.at.get(seq)
        if seq > check.head_seq or stored is None or findings:
            continue
        if stored != (row_id, digest):
            findings.append(Finding(
                check.ledger, stored[0], seq, "chain_rewritten",
                f"{check.ledger} row {stored[0]} (seq {seq}) is not what checkpoint {cp.n} ({cp.at}) recorded: the "
                f"chain was rewritten between seq {last_good + 1} and seq {seq} (rows edited and hashed again)"))
        else:
            last_good = seq
    if newest is not None and newest[0] > check.head_seq:
        seq, row_id, cp = newest
        after = f"after row {check.head_id} " if check.head_id is not None else ""
        findings.append(Finding(
            check.ledger, row_id, check.head_seq + 1, "rows_deleted",
            f"{check.ledger} seq {check.head_seq + 1}..{seq} (ids {after}up to {row_id}) are missing: the chain ends "
            f"at seq {check.head_seq} but checkpoint {cp.n} ({cp.at}) recorded seq {seq} (rows were deleted)"))
    return findings


def wanted_seqs(checkpoints: list[Checkpoint], ledger: str) -> set[int]:
    return {int(cp.heads[ledger]["seq"]) for cp in checkpoints
            if cp.heads.get(ledger) and cp.heads[ledger].get("seq")}

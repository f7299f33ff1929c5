"""Re-encrypt every encrypted column with the newest key (``kaipiao keys rotate``).

The columns are found, not listed: every column of type ``EncryptedText`` in the metadata,
so a new encrypted column is rotated too. Rows go in batches by primary key, each batch its
own transaction; a value already encrypted with the newest key is left alone, so running it
again (or after an interruption) only finishes the rest. Values are read and written as the
stored text (no decrypting type on the way), and each write is guarded by the value read: a
row the application changed meanwhile is left as the application wrote it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Column, Table, Text, select, type_coerce, update
from sqlalchemy.orm import Session

from app import crypto
from app.db import Base
from app.models.audit import AdminAuditLog
from app.models.types import EncryptedText

BATCH_SIZE = 500


@dataclass
class ColumnRotation:
    table: str
    column: str
    rotated: int = 0  # re-encrypted with the newest key
    current: int = 0  # already encrypted with it
    changed: int = 0  # rewritten by the application meanwhile: left as it is
    unreadable: list[int] = field(default_factory=list)  # ids no configured key opens

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def as_dict(self) -> dict[str, object]:
        return {"rotated": self.rotated, "current": self.current, "changed": self.changed,
                "unreadable": len(self.unreadable)}


def encrypted_columns() -> Iterator[tuple[Table, Column]]:
    import app.models  # noqa: F401  (every table in the metadata)

    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedText):
                yield table, column


def rotate_column(session: Session, table: Table, column: Column, batch_size: int = BATCH_SIZE) -> ColumnRotation:
    [pk] = table.primary_key.columns
    raw = type_coerce(column, Text)  # the stored token, not the decrypted value
    report = ColumnRotation(table.name, column.name)
    last = None
    while True:
        query = select(pk, raw).where(column.is_not(None)).order_by(pk).limit(batch_size)
        if last is not None:
            query = query.where(pk > last)
        rows = session.execute(query).all()
        if not rows:
            return report
        for row_id, token in rows:
            if crypto.is_current(token):
                report.current += 1
                continue
            try:
                fresh = crypto.rotate(token)
            except crypto.UndecryptableSecret:
                report.unreadable.append(row_id)
                continue
            written = session.execute(update(table).where(pk == row_id, raw == token)
                                      .values({column.name: type_coerce(fresh, Text)}))
            if written.rowcount == 1:  # type: ignore[attr-defined]
                report.rotated += 1
            else:
                report.changed += 1
        session.commit()
        last = rows[-1][0]


def rotate_all(session: Session, actor: str, batch_size: int = BATCH_SIZE) -> list[ColumnRotation]:
    """Every encrypted column rotated; the admin audit log records who rotated what."""
    reports = [rotate_column(session, table, column, batch_size) for table, column in encrypted_columns()]
    if any(r.rotated for r in reports):
        session.add(AdminAuditLog(username=actor[:80], action="keys.rotate", target="encrypted columns",
                                  details={r.name: r.as_dict() for r in reports}))
        session.commit()
    return reports

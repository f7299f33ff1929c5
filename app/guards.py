"""Database-level append-only guards (triggers), on SQLite and PostgreSQL.

Views can be read-only, but scripts and psql bypass views; the database itself refuses
edits to the ledgers. Alembic batch mode on SQLite drops triggers when it rebuilds a table,
so every migration that batch-alters a guarded table calls ``create_guards`` again.
"""

from __future__ import annotations

# table -> columns that only the sealer may set once (None: no update at all)
GUARDED: dict[str, tuple[list[str], list[str] | None]] = {
    # immutable columns, sealing columns
    "invoice_event": (
        ["id", "occurred_at", "order_pk", "request_id", "invoice_id", "kind", "from_state", "to_state",
         "actor", "data"],
        ["chain_seq", "prev_hash", "hash"],
    ),
    "admin_audit_log": ([], None),
    "rule_set_version": ([], None),
}


def _sqlite(table: str, immutable: list[str], sealing: list[str] | None) -> list[str]:
    stmts = [
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
    ]
    if sealing is None:
        cond = ""
    else:
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in immutable)
        cond = f"WHEN OLD.hash IS NOT NULL OR {changed} "
    stmts.append(
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} {cond}"
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
    )
    return stmts


def _postgresql(table: str, immutable: list[str], sealing: list[str] | None) -> list[str]:
    if sealing is None:
        body = f"RAISE EXCEPTION '{table} is append-only';"
    else:
        changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in immutable if c != "data")
        # json has no equality operator in PostgreSQL; compare its text form.
        changed += " OR NEW.data::text IS DISTINCT FROM OLD.data::text"
        body = (
            f"IF TG_OP = 'DELETE' OR OLD.hash IS NOT NULL OR {changed} THEN "
            f"RAISE EXCEPTION '{table} is append-only'; END IF; RETURN NEW;"
        )
    return [
        f"CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$ "
        f"BEGIN {body} END; $$ LANGUAGE plpgsql",
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
    ]


def guard_statements(dialect: str) -> list[str]:
    build = _sqlite if dialect == "sqlite" else _postgresql
    out: list[str] = []
    for table, (immutable, sealing) in GUARDED.items():
        out.extend(build(table, immutable, sealing))
    return out


def create_guards(op) -> None:
    """Call from a migration's upgrade()."""
    for stmt in guard_statements(op.get_bind().dialect.name):
        op.execute(stmt)


def drop_guards(op) -> None:
    dialect = op.get_bind().dialect.name
    for table in GUARDED:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")

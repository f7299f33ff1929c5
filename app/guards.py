"""Database-level append-only guards (triggers) on SQLite and PostgreSQL, and the app role's rights.

Views can be read-only, but scripts and psql bypass views; the database itself refuses
edits to the ledgers: no DELETE, no TRUNCATE (PostgreSQL: a statement-level trigger), and
no UPDATE but the one that seals an unsealed row (sets ``chain_seq``, ``prev_hash``,
``hash`` once, every other column unchanged). Alembic batch mode on SQLite drops triggers
when it rebuilds a table, so every migration that batch-alters a guarded table calls
``create_guards`` again.

Triggers stop the application and anyone without DDL rights; the owner of the tables can
disable them. So on PostgreSQL the application connects as a role that owns nothing
(``grant_app_role``, run after every upgrade by migrations/env.py): it cannot TRUNCATE,
ALTER, DISABLE or DROP a trigger, and on the ledgers it may only SELECT, INSERT and UPDATE
the three sealing columns. What even the owner can do is caught by the hash chains and the
checkpoints (app/ledger.py).
"""

from __future__ import annotations

from dataclasses import dataclass

SEALING = ("chain_seq", "prev_hash", "hash")


@dataclass(frozen=True)
class Guard:
    immutable: tuple[str, ...]  # columns no UPDATE may change
    json: tuple[str, ...] = ()  # of those, JSON columns (PostgreSQL compares their text)
    sealed: bool = True  # False: no UPDATE at all (a ledger without a hash chain)


_EVENT = Guard(("id", "occurred_at", "order_pk", "request_id", "invoice_id", "kind", "from_state", "to_state",
                "actor", "data"), json=("data",))

# Revisions 0001–0004: only the invoice log was chained. Those migrations use this frozen copy.
GUARDED_V1: dict[str, Guard] = {
    "invoice_event": _EVENT,
    "admin_audit_log": Guard((), sealed=False),
    "rule_set_version": Guard((), sealed=False),
}

# From revision 0005 every ledger is hash-chained and sealed once by the sealer.
GUARDED_V2: dict[str, Guard] = {
    "invoice_event": _EVENT,
    "admin_audit_log": Guard(("id", "at", "username", "action", "target", "details", "ip"), json=("details",)),
    "rule_set_version": Guard(("id", "rule_set_id", "number", "action", "published", "based_on", "document",
                               "document_hash", "comment", "author", "created_at"), json=("document",)),
}
GUARDED = GUARDED_V2  # the head's guards


def _sqlite(table: str, guard: Guard) -> list[str]:
    stmts = [
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
    ]
    if not guard.sealed:
        cond = ""
    else:
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in guard.immutable)
        cond = f"WHEN OLD.hash IS NOT NULL OR {changed} "
    stmts.append(
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} {cond}"
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
    )
    return stmts


TRUNCATE_FUNCTION = "kaipiao_refuse_truncate"


def _postgresql(table: str, guard: Guard) -> list[str]:
    if not guard.sealed:
        body = f"RAISE EXCEPTION '{table} is append-only';"
    else:
        # json has no equality operator in PostgreSQL; compare its text form.
        changed = " OR ".join(f"NEW.{c}::text IS DISTINCT FROM OLD.{c}::text" if c in guard.json
                              else f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in guard.immutable)
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
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {TRUNCATE_FUNCTION}()",
    ]


def guard_statements(dialect: str, guarded: dict[str, Guard] | None = None) -> list[str]:
    out: list[str] = []
    if dialect == "postgresql":
        # TRUNCATE fires no row trigger: a statement-level one refuses it (SQLite has no TRUNCATE).
        out.append(f"CREATE OR REPLACE FUNCTION {TRUNCATE_FUNCTION}() RETURNS trigger AS $$ "
                   "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql")
    build = _sqlite if dialect == "sqlite" else _postgresql
    for table, guard in (guarded or GUARDED).items():
        out.extend(build(table, guard))
    return out


def create_guards(op, guarded: dict[str, Guard] | None = None) -> None:
    """Call from a migration's upgrade(); a migration passes the guards of its own revision."""
    for stmt in guard_statements(op.get_bind().dialect.name, guarded):
        op.execute(stmt)


def drop_guards(op, guarded: dict[str, Guard] | None = None) -> None:
    dialect = op.get_bind().dialect.name
    for table in guarded or GUARDED:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
    if dialect == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {TRUNCATE_FUNCTION}()")


# ------------------------------------------------------------------------ the app role (PostgreSQL)


def grant_statements(role: str, tables: list[str], sequences: list[str],
                     chained: set[str] | None = None) -> list[str]:
    """What the application role may do, from nothing: read and write the business tables,
    only read, append and seal the ledgers, use the sequences; no TRUNCATE, no DDL (it owns
    nothing, so it cannot ALTER, DISABLE or DROP a trigger either). ``chained``: the ledgers
    that have the sealing columns at this revision (default: all)."""
    who = _quote(role)
    out = [f"GRANT USAGE ON SCHEMA public TO {who}", f"REVOKE CREATE ON SCHEMA public FROM {who}"]
    for table in tables:
        name = _quote(table)
        out.append(f"REVOKE ALL ON {name} FROM {who}")
        if table == "alembic_version":
            out.append(f"GRANT SELECT ON {name} TO {who}")
        elif table in GUARDED:
            out.append(f"GRANT SELECT, INSERT ON {name} TO {who}")
            if chained is None or table in chained:
                out.append(f"GRANT UPDATE ({', '.join(SEALING)}) ON {name} TO {who}")
        else:
            out.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {name} TO {who}")
    for sequence in sequences:
        out.append(f"GRANT USAGE, SELECT ON SEQUENCE {_quote(sequence)} TO {who}")
    return out


def grant_app_role(connection, role: str) -> None:
    """Give ``role`` exactly its rights on every table of the schema (run by the owner after
    each upgrade, so tables added later are covered). PostgreSQL only."""
    from sqlalchemy import text

    tables = list(connection.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")).scalars())
    sequences = list(connection.execute(text(
        "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema() ORDER BY sequencename")).scalars())
    chained = set(connection.execute(text(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND column_name = 'hash'")).scalars())
    for stmt in grant_statements(role, tables, sequences, chained):
        connection.execute(text(stmt))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

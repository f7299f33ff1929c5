"""ledger chains: the admin audit log and rule-set versions are hash-chained

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

from app.guards import GUARDED_V1, GUARDED_V2, create_guards, drop_guards

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

TABLES = ('admin_audit_log', 'rule_set_version')


def upgrade() -> None:
    # The same chain as invoice_event (app/ledger.py). Existing rows stay unsealed (hash NULL)
    # and are chained, in id order, by the next sealing run.
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('chain_seq', sa.BigInteger(), nullable=True))
            batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
            batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))
            batch_op.create_unique_constraint(batch_op.f(f'uq_{table}_chain_seq'), ['chain_seq'])
    # Their triggers now allow the sealing UPDATE of an unsealed row; every ledger refuses
    # TRUNCATE on PostgreSQL. (SQLite batch mode dropped the triggers of rebuilt tables.)
    create_guards(op, GUARDED_V2)


def downgrade() -> None:
    drop_guards(op, GUARDED_V2)
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f(f'uq_{table}_chain_seq'), type_='unique')
            batch_op.drop_column('hash')
            batch_op.drop_column('prev_hash')
            batch_op.drop_column('chain_seq')
    create_guards(op, GUARDED_V1)

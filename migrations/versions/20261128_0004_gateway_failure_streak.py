"""gateway failure streak

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

from app.guards import GUARDED_V1, create_guards

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Consecutive failed provider calls across jobs and workers: with batch calls one job
    # makes one call, so an outage is only visible across jobs.
    with op.batch_alter_table('gateway_status', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failure_streak', sa.Integer(), nullable=False, server_default='0'))
    create_guards(op, GUARDED_V1)


def downgrade() -> None:
    with op.batch_alter_table('gateway_status', schema=None) as batch_op:
        batch_op.drop_column('failure_streak')

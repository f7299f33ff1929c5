"""outbox origin request id

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The request id (web request, or the job that queued it) a queued job carries into the
    # worker's log lines (app/logging_setup.py). Nullable: rows queued outside any request.
    with op.batch_alter_table('job_outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin_request_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job_outbox', schema=None) as batch_op:
        batch_op.drop_column('origin_request_id')

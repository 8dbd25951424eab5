"""Item claims and workers (issue 23): a `worker` row per process working on an experiment, and on each item the
worker that claimed it. The `run_lease` table (one runner per experiment) they replace is dropped; a process of
an older release that still holds a lease there is not seen by this one.

Revision 0008, after 0007. Runs on SQLite and PostgreSQL: dialect-neutral `op.`
operations; anything but adding a column or table on SQLite goes through `op.batch_alter_table`.
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('worker',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('experiment_id', sa.String(), nullable=False),
    sa.Column('host', sa.String(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.String(), nullable=False),
    sa.Column('heartbeat_at', sa.Float(), nullable=False),
    sa.Column('reserved_usd', sa.Float(), server_default='0.0', nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiment.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('worker', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_worker_experiment_id'), ['experiment_id'], unique=False)

    op.drop_table('run_lease')
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', sa.String(), nullable=True))
        batch_op.create_index(batch_op.f('ix_item_claimed_by'), ['claimed_by'], unique=False)


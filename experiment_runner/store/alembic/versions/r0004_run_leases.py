"""One lease per running experiment (owner, host, pid, heartbeat); result conversations name their experiment (was m004).

The backfill orders an experiment's items by creation, then insertion: `rowid` on SQLite, the id on PostgreSQL
(which never held a store of this version, so there it runs on empty tables).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_lease",
        sa.Column("experiment_id", sa.String(), sa.ForeignKey("experiment.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.String(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
    )
    op.add_column("conversation", sa.Column("experiment_id", sa.String()))
    op.create_index("ix_conversation_experiment_id", "conversation", ["experiment_id"])
    tiebreak = "i.rowid" if op.get_bind().dialect.name == "sqlite" else "i.id"
    op.execute(
        "UPDATE conversation SET experiment_id = (SELECT i.experiment_id FROM item i WHERE i.result_conversation_id = conversation.id"
        f" ORDER BY i.created_at, {tiebreak} LIMIT 1) WHERE type = 'result'"
    )

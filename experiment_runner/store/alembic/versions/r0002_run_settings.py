"""Experiment settings that `resume` needs again: endpoints, evaluator, labels, re-evaluation source (was m002)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("api_base", "evaluator_model", "evaluator_api_base"):
        op.add_column("experiment", sa.Column(name, sa.String()))
    op.add_column("experiment", sa.Column("labels", sa.JSON()))
    op.add_column("experiment", sa.Column("source_experiment_id", sa.String()))

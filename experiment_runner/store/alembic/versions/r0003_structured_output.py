"""Structured-output settings and the mode each model used; per evaluation: dropped annotations, cost, mode (was m003)."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("experiment", sa.Column("structured_output", sa.JSON()))
    op.add_column("evaluation", sa.Column("dropped", sa.JSON()))
    op.add_column("evaluation", sa.Column("cost_usd", sa.Float()))
    op.add_column("evaluation", sa.Column("response_format", sa.String()))

"""Why a run stopped and who runs it, the stored budget, settings changed by resume (was m005)."""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("stop_reason", "stop_detail", "stopped_at", "runner"):
        op.add_column("experiment", sa.Column(name, sa.String()))
    op.add_column("experiment", sa.Column("max_cost_usd", sa.Float()))
    op.add_column("experiment", sa.Column("setting_changes", sa.JSON()))

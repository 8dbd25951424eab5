"""A source conversation's tool definitions (declared to the target on replay) and its metadata object (was m006)."""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversation", sa.Column("tools", sa.JSON()))
    op.add_column("conversation", sa.Column("metadata", sa.JSON()))

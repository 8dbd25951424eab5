"""${message}

Revision ${up_revision}, after ${down_revision | comma,n}. Runs on SQLite and PostgreSQL: dialect-neutral `op.`
operations; anything but adding a column or table on SQLite goes through `op.batch_alter_table`.
"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}

"""The response cache; provider batch jobs and their requests; per evaluation: calls served from the cache (was m007)."""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "response_cache",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("api_base", sa.String()),
        sa.Column("parts", sa.JSON(), nullable=False),
        sa.Column("generation", sa.JSON(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("saved_usd", sa.Float(), nullable=False, server_default="0"),
        sa.Column("last_hit_at", sa.String()),
    )
    op.create_index("ix_response_cache_created_at", "response_cache", ["created_at"])
    op.create_table(
        "batch_job",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("experiment_id", sa.String(), sa.ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False),
        *(sa.Column(name, sa.String(), nullable=False) for name in ("role", "model")),
        sa.Column("api_base", sa.String()),
        *(sa.Column(name, sa.String(), nullable=False) for name in ("provider", "provider_batch_id", "input_file_id", "status")),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.Column("updated_at", sa.String(), nullable=False),
        sa.Column("collected_at", sa.String()),
        sa.Column("error_message", sa.String()),
    )
    op.create_index("ix_batch_job_experiment_id", "batch_job", ["experiment_id"])
    op.create_table(
        "batch_request",
        sa.Column("batch_id", sa.String(), sa.ForeignKey("batch_job.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("custom_id", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), sa.ForeignKey("item.id", ondelete="CASCADE"), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("cache_key", sa.String(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False, server_default="submitted"),
    )
    op.create_index("ix_batch_request_item_id", "batch_request", ["item_id"])
    op.add_column("evaluation", sa.Column("cached_calls", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("evaluation", sa.Column("cost_saved_usd", sa.Float()))

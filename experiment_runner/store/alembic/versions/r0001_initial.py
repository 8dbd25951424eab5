"""Conversations, messages, experiments, items, evaluations and annotations (was m001_initial)."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "conversation",
        _id(),
        sa.Column("type", sa.String(), nullable=False, server_default="source"),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.String(), nullable=False),
    )
    op.create_index("ix_conversation_type", "conversation", ["type"])
    op.create_table(
        "message",
        _id(),
        sa.Column("conversation_id", sa.String(), sa.ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sequence_number", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("parts", sa.JSON(), nullable=False),
        sa.Column("generation", sa.JSON()),
        sa.UniqueConstraint("conversation_id", "sequence_number"),
    )
    op.create_index("ix_message_conversation_id", "message", ["conversation_id"])
    op.create_table(
        "experiment",
        _id(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("pass_through", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("conversation_ids", sa.JSON(), nullable=False),
        sa.Column("reasoning_config", sa.JSON()),
        sa.Column("system_prompt_override", sa.String()),
        sa.Column("output_schema", sa.JSON()),
        *(sa.Column(f"created_by_{who}_{what}", sa.String()) for who in ("user", "service_account") for what in ("id", "name")),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.Column("completed_at", sa.String()),
    )
    op.create_index("ix_experiment_created_at", "experiment", ["created_at"])
    op.create_table(
        "item",
        _id(),
        sa.Column("experiment_id", sa.String(), sa.ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source_conversation_id", sa.String(), sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("result_conversation_id", sa.String(), sa.ForeignKey("conversation.id")),
        sa.Column("status", sa.String(), nullable=False, server_default="pending"),
        sa.Column("error_message", sa.String()),
        sa.Column("evaluations_expected", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.Column("updated_at", sa.String(), nullable=False),
    )
    op.create_index("ix_item_experiment_position", "item", ["experiment_id", "position"])
    op.create_index("ix_item_experiment_status", "item", ["experiment_id", "status"])
    op.create_index("ix_item_source_conversation_id", "item", ["source_conversation_id"])
    op.create_index("ix_item_result_conversation_id", "item", ["result_conversation_id"])
    op.create_table(
        "evaluation",
        _id(),
        sa.Column("item_id", sa.String(), sa.ForeignKey("item.id", ondelete="CASCADE"), nullable=False),
        sa.Column("message_id", sa.String(), sa.ForeignKey("message.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("input_tokens", sa.Integer()),
        sa.Column("output_tokens", sa.Integer()),
        sa.Column("detection_duration_ms", sa.Float()),
        sa.Column("total_duration_ms", sa.Float()),
        sa.Column("error_message", sa.String()),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.UniqueConstraint("item_id", "message_id"),
    )
    op.create_index("ix_evaluation_item_id", "evaluation", ["item_id"])
    op.create_index("ix_evaluation_message_id", "evaluation", ["message_id"])
    op.create_table(
        "annotation",
        _id(),
        sa.Column("evaluation_id", sa.String(), sa.ForeignKey("evaluation.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.Column("explanation", sa.String()),
        sa.Column("message_part_index", sa.Integer(), nullable=False),
        sa.Column("start_offset", sa.Integer(), nullable=False),
        sa.Column("end_offset", sa.Integer(), nullable=False),
        sa.Column("tool_name", sa.String()),
        sa.Column("parameter_name", sa.String()),
    )
    op.create_index("ix_annotation_evaluation_id", "annotation", ["evaluation_id"])

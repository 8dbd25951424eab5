"""The store's tables, as SQLModel classes: the schema, defined once.

The Alembic revisions (`alembic/versions/`, see `migrations.py`) build these tables step by step on SQLite and
PostgreSQL; a test has Alembic compare a migrated store with these classes. A column's `server_default` is
the database's own default (what a row inserted without it, or an existing row when the column is added, gets).
Conversation parts, generation metadata and experiment settings are JSON columns because the export carries
them as JSON objects verbatim. Times are ISO 8601 UTC strings (see `timeutil`).
"""

from typing import Any

from sqlalchemy import JSON, Column, Dialect, ForeignKey, Index, String, TypeDecorator, UniqueConstraint, false
from sqlmodel import Field, SQLModel

from experiment_runner import jsonlimits
from experiment_runner.conversation import Generation, JSONObject, Part, ToolDefinition


class StoredJSON(TypeDecorator[Any]):
    """A JSON column. PostgreSQL's driver hands JSON over as text (as SQLite does: `postgres.make_engine`), so the
    ORM decodes it here; on SQLite SQLAlchemy's JSON type has decoded it already."""

    impl = JSON
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" and isinstance(value, str):
            return jsonlimits.loads_stored(value)
        return value


def _default(value: Any) -> Any:
    """A field whose column has a server default too (`value` as the database writes it)."""
    return Field(default=value, sa_column_kwargs={"server_default": false() if value is False else str(value)})


def _fk(target: str, on_delete: str | None = None) -> Any:
    return Column(String, ForeignKey(target, ondelete=on_delete), nullable=False, index=True)


class Conversation(SQLModel, table=True):
    """A chat conversation: imported (`type="source"`) or produced by an experiment (`"result"`)."""

    id: str = Field(primary_key=True)
    type: str = Field(default="source", index=True, sa_column_kwargs={"server_default": "source"})
    content_hash: str
    created_at: str
    # Added by migration 4: the experiment whose run created a result conversation (NULL for sources).
    experiment_id: str | None = Field(default=None, index=True)
    # Added by migration 6: a source's OpenAI tool definitions (declared on replay) and its metadata object.
    tools: list[ToolDefinition] | None = Field(default=None, sa_column=Column(StoredJSON))
    metadata_: JSONObject | None = Field(default=None, sa_column=Column("metadata", StoredJSON))


class Message(SQLModel, table=True):
    """One message of a conversation; `parts` are OpenTelemetry GenAI parts, `generation` its metadata."""

    __table_args__ = (UniqueConstraint("conversation_id", "sequence_number"),)

    id: str = Field(primary_key=True)
    conversation_id: str = Field(sa_column=_fk("conversation.id", "CASCADE"))
    sequence_number: int
    role: str
    parts: list[Part] = Field(sa_column=Column(StoredJSON, nullable=False))
    generation: Generation | None = Field(default=None, sa_column=Column(StoredJSON))


class Experiment(SQLModel, table=True):
    """An experiment: which conversations, which target model and settings, which evaluator."""

    id: str = Field(primary_key=True)
    name: str
    model: str
    pass_through: bool = _default(False)
    conversation_ids: list[str] = Field(sa_column=Column(StoredJSON, nullable=False))
    reasoning_config: dict[str, Any] | None = Field(default=None, sa_column=Column(StoredJSON))
    system_prompt_override: str | None = None
    output_schema: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(StoredJSON))
    created_by_user_id: str | None = None
    created_by_user_name: str | None = None
    created_by_service_account_id: str | None = None
    created_by_service_account_name: str | None = None
    created_at: str = Field(index=True)
    completed_at: str | None = None
    # Added by migration 2: where to send calls and how to evaluate (needed again by `resume`).
    api_base: str | None = None
    evaluator_model: str | None = None
    evaluator_api_base: str | None = None
    labels: dict[str, Any] | None = Field(default=None, sa_column=Column(StoredJSON))
    source_experiment_id: str | None = None
    # {"target"|"evaluator": {"setting": auto|json_schema|json_object|prompt, "used": mode, "max_tokens"?: N}}
    structured_output: dict[str, Any] | None = Field(default=None, sa_column=Column(StoredJSON))
    # Added by migration 5: the run state. `stop_reason` is why the last run ended early (interrupted | budget |
    # systematic | failed | shutdown; NULL while running, once complete, or after a crash), `runner` who started
    # it (cli | server: a server resumes only its own), `max_cost_usd` the experiment's budget, honoured by every
    # run, and `setting_changes` what `resume` changed: [{"at", "field", "from", "to"}].
    stop_reason: str | None = None
    stop_detail: str | None = None
    stopped_at: str | None = None
    runner: str | None = None
    max_cost_usd: float | None = None
    setting_changes: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(StoredJSON))


class Item(SQLModel, table=True):
    """One source conversation's run inside an experiment."""

    __table_args__ = (
        Index("ix_item_experiment_position", "experiment_id", "position"),
        Index("ix_item_experiment_status", "experiment_id", "status"),
    )

    id: str = Field(primary_key=True)
    experiment_id: str = Field(sa_column=Column(String, ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False))
    position: int
    source_conversation_id: str = Field(sa_column=_fk("conversation.id"))
    result_conversation_id: str | None = Field(
        default=None, sa_column=Column(String, ForeignKey("conversation.id"), index=True)
    )
    status: str = _default("pending")
    error_message: str | None = None
    evaluations_expected: int = _default(0)
    created_at: str
    updated_at: str
    # Added by revision 0008: the worker (`worker.id`) that claimed the item, and when; NULL when nobody holds it.
    claimed_by: str | None = Field(default=None, index=True)
    claimed_at: str | None = None


class Evaluation(SQLModel, table=True):
    """The evaluator's verdict on one message (the final assistant message of an item's result)."""

    __table_args__ = (UniqueConstraint("item_id", "message_id"),)

    id: str = Field(primary_key=True)
    item_id: str = Field(sa_column=_fk("item.id", "CASCADE"))
    message_id: str = Field(sa_column=_fk("message.id", "CASCADE"))
    status: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    detection_duration_ms: float | None = None
    total_duration_ms: float | None = None
    error_message: str | None = None
    created_at: str
    dropped: dict[str, int] | None = Field(default=None, sa_column=Column(StoredJSON))  # {reason kind: count}
    cost_usd: float | None = None
    response_format: str | None = None
    # Added by migration 7: how many of its calls the response cache answered, and what they cost when first made.
    cached_calls: int = _default(0)
    cost_saved_usd: float | None = None


class Annotation(SQLModel, table=True):
    """A labelled span of an evaluated message: `parts[message_part_index]`'s text[start:end]."""

    id: str = Field(primary_key=True)
    evaluation_id: str = Field(sa_column=_fk("evaluation.id", "CASCADE"))
    position: int
    label: str
    text: str
    explanation: str | None = None
    message_part_index: int
    start_offset: int
    end_offset: int
    tool_name: str | None = None
    parameter_name: str | None = None


class Worker(SQLModel, table=True):
    """A process working on an experiment (revision 0008, which dropped the `run_lease` table it replaces): one row per run of `run`, `resume`, `worker` or a server's
    background run; its items carry its id in `item.claimed_by`. Stale once `heartbeat_at` is old."""

    __tablename__ = "worker"

    id: str = Field(primary_key=True)  # a random id per process and experiment
    experiment_id: str = Field(sa_column=Column(String, ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False, index=True))
    host: str
    pid: int
    started_at: str  # ISO 8601 UTC
    heartbeat_at: float  # Unix seconds of the last renewal
    reserved_usd: float = _default(0.0)  # the budget this worker has reserved for its items under way


class ResponseCache(SQLModel, table=True):
    """A model reply kept for reuse, keyed by a hash of everything the request sent (`engine.cache.cache_key`)."""

    __tablename__ = "response_cache"

    key: str = Field(primary_key=True)
    model: str
    api_base: str | None = None
    parts: list[Part] = Field(sa_column=Column(StoredJSON, nullable=False))
    generation: Generation = Field(sa_column=Column(StoredJSON, nullable=False))  # as first recorded (tokens, latency, cost)
    duration_ms: float
    cost_usd: float | None = None  # what the call cost when it was made (None: litellm had no price)
    created_at: str = Field(index=True)
    hits: int = _default(0)
    saved_usd: float = _default(0)  # summed cost of the calls its hits replaced
    last_hit_at: str | None = None


class BatchJob(SQLModel, table=True):
    """A provider batch job of one run's requests for one role (target or evaluator)."""

    __tablename__ = "batch_job"

    id: str = Field(primary_key=True)
    experiment_id: str = Field(sa_column=Column(String, ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False, index=True))
    role: str  # target | evaluator
    model: str
    api_base: str | None = None
    provider: str  # litellm's custom_llm_provider
    provider_batch_id: str
    input_file_id: str
    status: str  # the provider's status (validating, in_progress, finalizing, completed, failed, expired, cancelled) or collected
    request_count: int
    created_at: str
    updated_at: str
    collected_at: str | None = None
    error_message: str | None = None


class BatchRequest(SQLModel, table=True):
    """One request of a batch job: the item it belongs to, the body sent, and whether its answer was collected."""

    __tablename__ = "batch_request"

    batch_id: str = Field(sa_column=Column(String, ForeignKey("batch_job.id", ondelete="CASCADE"), primary_key=True))
    custom_id: str = Field(primary_key=True)
    item_id: str = Field(sa_column=_fk("item.id", "CASCADE"))
    mode: str  # the structured-output mode of the body
    cache_key: str
    body: JSONObject = Field(sa_column=Column(StoredJSON, nullable=False))  # messages and arguments, without the model
    status: str = _default("submitted")  # submitted | done | failed | resubmitted

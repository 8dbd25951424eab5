"""The rows the store's insert and update statements take, one `TypedDict` per statement's named parameters.

Callers build them (the writer, the importer, the cache, batch jobs, the lease); the query functions run them,
usually as one `executemany`. JSON columns are values here unless a field says it is already encoded.
"""

from typing import NotRequired, TypedDict

from experiment_runner.conversation import Annotation, EvaluationStatus, Generation, ItemStatus, JSONObject, Part, Role, ToolDefinition


class StartRow(TypedDict):
    item: str
    stamp: str


class ItemUpdate(TypedDict):
    """An item's new status and error; `result` (when not None) its new result conversation."""

    item: str
    status: ItemStatus
    error: str | None
    result: str | None
    stamp: str


class ItemRow(TypedDict):
    id: str
    experiment_id: str
    position: int
    source_conversation_id: str
    result_conversation_id: str | None
    status: ItemStatus
    evaluations_expected: int
    created_at: str
    updated_at: str


class ConversationRow(TypedDict):
    id: str
    type: str  # source | result
    content_hash: str
    created_at: str
    experiment_id: NotRequired[str | None]  # the experiment that created a result
    tools: NotRequired[list[ToolDefinition] | None]
    metadata: NotRequired[JSONObject | None]


class MessageRow(TypedDict):
    id: str
    conversation_id: str
    sequence_number: int
    role: Role
    parts: list[Part]
    generation: Generation | None


class EvaluationColumns(TypedDict):
    """An evaluation's columns that the export shows (`results.documents.ExportEvaluation` adds its annotations)."""

    id: str
    message_id: str
    status: EvaluationStatus
    model: str
    input_tokens: int | None
    output_tokens: int | None
    detection_duration_ms: float | None
    total_duration_ms: float | None
    error_message: str | None


class EvaluationRow(EvaluationColumns):
    item_id: str
    created_at: str
    dropped: str | None  # encoded JSON: {drop reason: count}
    cost_usd: float | None
    response_format: str | None
    cached_calls: int
    cost_saved_usd: float | None


class AnnotationRow(Annotation):
    evaluation_id: str
    position: int


class CacheEntryRow(TypedDict):
    key: str
    model: str
    api_base: str | None
    parts: str | None  # encoded JSON
    generation: str | None  # encoded JSON
    duration_ms: float
    cost_usd: float | None
    created_at: str


class CacheHitRow(TypedDict):
    key: str
    stamp: str


class BatchJobRow(TypedDict):
    id: str
    experiment_id: str
    role: str  # target | evaluator
    model: str
    api_base: str | None
    provider: str
    provider_batch_id: str
    input_file_id: str
    status: str
    request_count: int
    created_at: str
    updated_at: str


class BatchRequestRow(TypedDict):
    custom_id: str
    item_id: str
    mode: str
    cache_key: str
    body: str | None  # encoded JSON


class RequestOutcome(TypedDict):
    custom_id: str
    status: str  # done | failed | resubmitted


class WorkerRow(TypedDict):
    """A `worker` row as `claims.register` inserts it."""

    id: str
    experiment: str
    host: str
    pid: int
    started_at: str
    heartbeat: float

"""The documents `results` hands out: the export (`export.schema.json`), its pages, and the summary `show` prints.

One `TypedDict` per object, in the order the export writes its keys. The export's `metrics` stay the
metric vocabulary's (`results/metrics.py`); JSON settings the experiment stores as given are `JSONObject`s.
"""

from typing import Any, Generic, TypeVar

from typing_extensions import TypedDict  # a generic TypedDict on Python 3.11

from experiment_runner.conversation import Annotation, Conversation, ItemStatus, JSONObject
from experiment_runner.engine.spec import HostedSettings
from experiment_runner.store.queries.rows import EvaluationColumns

T = TypeVar("T")


class PageQuery(TypedDict):
    limit: int
    cursor: str | None


class Page(TypedDict, Generic[T]):
    """One page of a listing, the hosted API's list-experiments shape."""

    next_page_cursor: str | None
    query: PageQuery
    has_more: bool
    items: list[T]


class ExperimentObject(HostedSettings):
    """The export's `experiment`: its id, the hosted settings (`engine.spec.HostedSettings`), counts, status
    summary and metrics (the export writes the keys in the schema's order, not this class's)."""

    id: str
    created_by_user_id: str | None
    created_by_user_name: str | None
    created_by_service_account_id: str | None
    created_by_service_account_name: str | None
    created_at: str
    completed_at: str | None
    total_items_count: int
    completed_items_count: int
    evaluations_expected: int
    evaluations_received: int
    status_summary: dict[str, int]  # one key per item status, and `total`
    metrics: dict[str, Any]  # the metric vocabulary's (`results/metrics.py`, `export.METRIC_KEYS`)
    evaluator_cost_usd: float | None
    unpriced_items_count: int


class ExportItem(TypedDict):
    id: str
    status: ItemStatus
    error_message: str | None
    evaluations_expected: int
    evaluations_received: int
    created_at: str
    updated_at: str
    source_conversation: Conversation
    result_conversation: Conversation | None


class ExportEvaluation(EvaluationColumns):
    annotations: list[Annotation]


class ExportDocument(TypedDict):
    """`experiment-runner export ID`: the experiment, its items, and the evaluations by message id."""

    experiment: ExperimentObject
    items: list[ExportItem]
    evaluations: dict[str, ExportEvaluation]


class RecentError(TypedDict):
    item_id: str
    position: int
    error_message: str | None


class EvaluationSummary(TypedDict):
    """What the evaluator did: evaluations by status, tokens and cost, drops by reason, modes, latest errors."""

    by_status: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    dropped: dict[str, int]  # by drop reason (`conversation.DROP_REASONS`)
    response_formats: dict[str, int]
    recent_errors: list[RecentError]


class CacheSummary(TypedDict):
    calls: int
    target_calls: int
    evaluator_calls: int
    saved_usd: float


class BatchView(TypedDict):
    role: str
    model: str
    batch_id: str
    status: str
    requests: int
    created_at: str
    age_seconds: float
    collected_at: str | None
    error_message: str | None


class RunState(TypedDict):
    """Where an experiment's runs stand (`catalog.run_state`)."""

    state: str  # running | complete | stopped | crashed | not running
    runner: str | None
    stop_reason: str | None
    stop_detail: str | None
    stopped_at: str | None
    max_cost_usd: float | None
    spent_usd: float
    setting_changes: list[JSONObject]  # [{"at", "field", "from", "to"}]


class ExperimentSummary(ExperimentObject):
    """What `show` prints: the experiment object, its evaluator settings, run state and latest errors."""

    api_base: str | None
    evaluator_model: str | None
    evaluator_api_base: str | None
    labels: list[str]
    rules: list[JSONObject]
    source_experiment_id: str | None
    structured_output: JSONObject
    recent_errors: list[RecentError]
    evaluation_summary: EvaluationSummary
    cache: CacheSummary
    batches: list[BatchView]
    run: RunState

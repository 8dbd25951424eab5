"""The UI's read-only pages and the JSON their live parts poll: experiments, one experiment, compare, conversations.

Each route parses its query, reads through `results/` in a worker thread, and renders a template with
values shaped by `views` (pure). The live endpoints return the same `ExperimentRow` values as the page.
"""

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Annotated, Any, TypedDict

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from experiment_runner.engine.lease import leased_experiments
from experiment_runner.errors import BadInputError, ExperimentBusyError, ExperimentRunnerError, NotFoundError
from experiment_runner.report.highlight import label_colour
from experiment_runner.report.html import METRIC_CARDS, history_view, item_side, load_document, render_report
from experiment_runner.results import browse
from experiment_runner.results.catalog import experiment_summary
from experiment_runner.results.compare import compare_experiments
from experiment_runner.results.documents import ExperimentObject, ExperimentSummary
from experiment_runner.results.vocabulary import ISSUE_METRICS, known
from experiment_runner.server.ui import comparing, views
from experiment_runner.server.ui.rendering import SECURITY_HEADERS, page

ITEMS_PER_PAGE = 20
CONVERSATIONS_PER_PAGE = 50
NOTICES = {
    "deleted": "The experiment was deleted.",
    "resumed": "The run was resumed: the items not finished run now.",
    "started": "The experiment was created and runs now.",
}
SHOW_CHOICES = {
    "": "all items", "completed": "completed", "failed": "failed", "evaluation_failed": "evaluation failed",
    "with_issues": "with issues", "issue_free": "without issues", "in_progress": "in progress", "pending": "pending",
}

router = APIRouter(include_in_schema=False)
Handler = Callable[..., Awaitable[Response]]


def ui_errors(handler: Handler) -> Handler:
    """Our errors as an HTML page (404 for an unknown id, 400 for bad input, 409 for an experiment another
    process runs) instead of the API's JSON."""

    @wraps(handler)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(request, *args, **kwargs)
        except ExperimentRunnerError as exc:
            status, title = _error_status(exc)
            return page(request, "message.html.j2", status_code=status, title=title, message=str(exc))

    return wrapper


def _error_status(exc: ExperimentRunnerError) -> tuple[int, str]:
    """The HTTP status and page title of one of our errors, as the API answers it (409 when another runner holds it)."""
    if isinstance(exc, NotFoundError):
        return 404, "Not found"
    if isinstance(exc, ExperimentBusyError):
        return 409, "Being run elsewhere"
    return (400 if isinstance(exc, BadInputError) else 500), "Error"


async def running_ids(request: Request) -> set[str]:
    """Experiments a runner holds now: this server's background runs and any other process's lease."""
    leased = await anyio.to_thread.run_sync(leased_experiments, request.app.state.store)
    return leased | set(request.app.state.runs.running())


async def _rows(request: Request, ids: list[str] | None = None, since: str | None = None) -> list[views.ExperimentRow]:
    """The list's rows: every experiment, or those named in `ids`; with `since`, also the ones a live list
    must see (created after `since`, or with items open)."""
    store = request.app.state.store
    if since is None:
        entries = await anyio.to_thread.run_sync(browse.experiment_entries, store, ids)
    else:
        entries = await anyio.to_thread.run_sync(browse.live_entries, store, ids or [], since)
    running = await running_ids(request)
    return [views.experiment_row(entry, entry.experiment["id"] in running) for entry in entries]


@router.get("/", response_class=HTMLResponse)
@ui_errors
async def experiments(
    request: Request,
    q: str = "",
    state: Annotated[str, Query(pattern="^(|running|unfinished|completed|failures)$")] = "",
    sort: Annotated[str, Query(pattern="^(" + "|".join(views.SORT_KEYS) + ")$")] = "created",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    notice: str = "",
) -> Response:
    """The experiments list: filter by name and state, sort by any column; progress updates live."""
    rows = await _rows(request)
    shown = views.select_rows(rows, name=q, state=state, sort=sort, descending=order == "desc")
    newest = max((row.created_at for row in rows), default="")
    return page(
        request, "experiments.html.j2", rows=shown, total=len(rows), q=q, state=state, sort=sort, order=order,
        notice=NOTICES.get(notice), newest=newest,
    )


@router.get("/ui/live/experiments")
async def live_experiments(
    request: Request, id: Annotated[list[str] | None, Query()] = None, since: Annotated[str | None, Query(max_length=40)] = None
) -> JSONResponse:
    """The list rows of the named experiments now; with `since` (the newest creation time the page shows),
    also those created later and every one with items open, so a run started or resumed after the page
    loaded shows up (the list page polls this all the time)."""
    rows = await _rows(request, (id or [])[:200], since)
    return JSONResponse({"rows": [row.as_dict() for row in rows]}, headers=SECURITY_HEADERS)


def _metric_cards(experiment: ExperimentObject, latency_known: bool, per_1k: str) -> list[dict[str, str]]:
    """The metric cards, issue rate first; metrics the UI has no title for yet come last, as they are.

    Issue figures show `–` until an evaluation is received, latencies until a reply reports one; the cost
    per 1k items is `per_1k` (`unknown`, `at least $…` when replies had no price)."""
    metrics = experiment["metrics"]
    evaluated = bool(experiment["evaluations_received"])
    extra = [k for k in metrics if not known(k)]
    cards = []
    for key in [*METRIC_CARDS, *extra]:
        title, kind = views.metric_title(key)
        value = metrics.get(key)
        unknown = (kind in ("ms", "s") and not latency_known) or (key in ISSUE_METRICS and not evaluated)
        shown = "–" if unknown else per_1k if key == "cost_per_1k" else views.formatted(value, kind)
        cards.append({"key": key, "title": title, "value": shown})
    return cards


class LiveView(TypedDict):
    """The parts of an experiment's page that its live script refreshes: its row, metric cards and costs."""

    row: views.ExperimentRow
    metrics: list[dict[str, str]]
    cost: dict[str, str]


def _live_view(summary: ExperimentSummary, running: bool) -> LiveView:
    row = views.experiment_row(browse.ExperimentEntry(summary, summary.get("evaluator_model")), running)
    latency_known = bool(summary["metrics"]["avg_response_latency_ms"])
    cost = views.cost_texts(summary)
    return {"row": row, "metrics": _metric_cards(summary, latency_known, cost["per_1k"]), "cost": cost}


@router.get("/ui/experiments/{experiment_id}", response_class=HTMLResponse)
@ui_errors
async def experiment(
    request: Request,
    experiment_id: str,
    show: str = "",
    label: str = "",
    after: Annotated[int, Query(ge=-1)] = -1,
    notice: str = "",
) -> Response:
    """One experiment: progress, metrics, settings, errors, and its items filtered by status and label."""
    store = request.app.state.store
    summary = await anyio.to_thread.run_sync(experiment_summary, store, experiment_id)
    items = await anyio.to_thread.run_sync(
        lambda: browse.filtered_item_page(store, experiment_id, show=show, label=label, after=after, limit=ITEMS_PER_PAGE)
    )
    running = experiment_id in await running_ids(request)
    labels = list(dict.fromkeys([*summary["labels"], *summary["metrics"]["issue_labels"]]))
    cards = [
        {"position": position, "item": item, "side": item_side(item, items.evaluations), "history": history_view(item)}
        for position, item in items.items
    ]
    return page(
        request, "experiment.html.j2", e=summary, live=_live_view(summary, running), items=cards, page_info=items,
        show=show, label=label, after=after, labels=labels, show_choices=SHOW_CHOICES, notice=NOTICES.get(notice),
        label_colours={name: label_colour(name) for name in labels},
    )


@router.get("/ui/experiments/{experiment_id}/live")
async def live_experiment(request: Request, experiment_id: str) -> JSONResponse:
    """The experiment's progress, state and metric cards now (its page polls this while items are open)."""
    summary = await anyio.to_thread.run_sync(experiment_summary, request.app.state.store, experiment_id)
    view = _live_view(summary, experiment_id in await running_ids(request))
    metrics = {card["key"]: card["value"] for card in view["metrics"]}
    return JSONResponse({"row": view["row"].as_dict(), "metrics": metrics, "cost": view["cost"]}, headers=SECURITY_HEADERS)


@router.get("/ui/experiments/{experiment_id}/report.html", response_class=HTMLResponse)
@ui_errors
async def report(request: Request, experiment_id: str) -> Response:
    """The experiment's HTML report, as `experiment-runner report` writes it (self-contained)."""
    store = request.app.state.store
    html = await anyio.to_thread.run_sync(lambda: render_report(load_document(store, experiment_id)))
    return HTMLResponse(html)


@router.get("/ui/compare", response_class=HTMLResponse)
@ui_errors
async def compare(request: Request, a: str = "", b: str = "") -> Response:
    """Pick two experiments; with both, everything `compare` returns for B against A."""
    rows = await _rows(request)
    result = None
    if a and b:
        result = await anyio.to_thread.run_sync(compare_experiments, request.app.state.store, a, b)
    sections = comparing.compare_sections(result) if result else []
    paired = comparing.paired_view(result) if result else None
    return page(request, "compare.html.j2", rows=rows, a=a, b=b, result=result, sections=sections, paired=paired)


@router.get("/ui/conversations", response_class=HTMLResponse)
@ui_errors
async def conversations(request: Request, q: str = "", offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    """Imported conversations, searched by id or message text."""
    found = await anyio.to_thread.run_sync(
        lambda: browse.search_conversations(request.app.state.store, q, limit=CONVERSATIONS_PER_PAGE, offset=offset)
    )
    return page(request, "conversations.html.j2", found=found, q=q)


@router.get("/ui/conversations/{conversation_id}", response_class=HTMLResponse)
@ui_errors
async def conversation(request: Request, conversation_id: str) -> Response:
    """One imported conversation, message by message, and the experiments that ran it."""
    found, used = await anyio.to_thread.run_sync(browse.conversation_detail, request.app.state.store, conversation_id)
    messages = history_view({"source_conversation": found, "result_conversation": None})
    return page(request, "conversation.html.j2", conversation=found, messages=messages, used=used)

"""Running an experiment as provider batch jobs (`run --batch`, and `resume` of an experiment run so).

The target's requests go out as one batch job; once its answers are collected, the evaluator's requests
for those replies follow as a second job (one job per role and run; more only when a job would pass
`BATCH_LIMIT` requests). Requests the response cache answers are not submitted. A job and its
request-to-item mapping are committed as soon as the provider has answered the create call, so the
process may end at any time after (`--detach`, Ctrl-C, a kill): `resume` polls the stored jobs and
collects them, never submitting their requests again. Per-request errors become item failures (or
failed evaluations) with their reasons; the unanswered requests of an expired or cancelled job are
submitted again in a new job. Every write goes through the run's writer (`writer.apply_events`):
results, cache entries and the job's collected mark commit in one transaction.
"""

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from sqlalchemy import Connection

from experiment_runner.conversation import JSONObject
from experiment_runner.engine import writer as w
from experiment_runner.engine.batch import ENDPOINT, BatchState, batch_cost, batch_provider, result_lines, retrieve, submit
from experiment_runner.engine.batch_requests import Prepared, RequestBuilder
from experiment_runner.engine.cache import CacheUsage, ResponseCache, cache_enabled
from experiment_runner.engine.experiments import get_experiment
from experiment_runner.engine.lease import Lease, acquire
from experiment_runner.engine.llm import Completion, completion_from_body
from experiment_runner.engine.runstate import first_error, recorded_run
from experiment_runner.engine.workplan import WorkUnit, load_units, plan_work
from experiment_runner.errors import BadInputError, Field
from experiment_runner.store import Store
from experiment_runner.store.ids import new_id
from experiment_runner.store.queries import batches as q
from experiment_runner.store.queries import runs as runs_q
from experiment_runner.store.queries.rows import BatchJobRow, BatchRequestRow, RequestOutcome
from experiment_runner.store.timeutil import now

logger = logging.getLogger(__name__)
BATCH_LIMIT = 50_000  # requests per job: OpenAI's per-batch limit


def _poll_default() -> float:
    try:
        return max(0.0, float(os.environ.get("EXPERIMENT_RUNNER_BATCH_POLL", 30)))
    except ValueError:
        return 30.0


@dataclass(frozen=True)
class BatchOptions:
    """How to run batch jobs: stop after submitting (`detach`), redo failed items, the cache, the poll interval."""

    detach: bool = False
    retry_failed: bool = False
    use_cache: bool = field(default_factory=cache_enabled)
    poll_seconds: float = field(default_factory=_poll_default)  # env EXPERIMENT_RUNNER_BATCH_POLL, default 30


@dataclass
class JobView:
    """One job as the progress line and `show` name it."""

    role: str
    batch_id: str
    status: str
    requests: int
    created_at: str


@dataclass
class BatchProgress:
    """What this invocation did: jobs created, requests submitted and collected, costs at batch and normal price."""

    batches_created: int = 0
    submitted: int = 0
    collected: int = 0  # answers stored (replies and evaluations)
    failed: int = 0  # requests that came back as errors
    resubmitted: int = 0  # requests of expired/cancelled jobs sent again
    completed_items: int = 0
    failed_items: int = 0
    cost_usd: float = 0.0  # what the collected answers cost at litellm's batch price
    cost_unbatched_usd: float = 0.0  # what the same tokens cost at its normal price
    cache: CacheUsage = field(default_factory=CacheUsage)
    open_jobs: list[JobView] = field(default_factory=list)
    detached: bool = False  # stopped with jobs still at the provider


BatchCallback = Callable[[BatchProgress], None]


def check_batchable(models: list[tuple[str, str]]) -> None:
    """`BadInputError` (one line) unless litellm can batch every `(model, option name)` given."""
    for model, role in models:
        batch_provider(model, role)


def refuse_budget(max_cost_usd: float | None) -> None:
    """A budget cannot be kept by batch jobs (their cost is known only once collected): `BadInputError` when one is given."""
    if max_cost_usd is not None:
        raise BadInputError(
            [Field("max_cost_usd"), " cannot be kept with ", Field("batch"), ": what a batch job costs is known only once it is "
             "collected; run without one of them"],
            field="max_cost_usd",
        )


def run_batches(store: Store, experiment_id: str, options: BatchOptions, on_progress: BatchCallback | None = None) -> BatchProgress:
    """Submit, wait for and collect the experiment's batch jobs (or only submit, with `detach`)."""
    return anyio.run(run_batches_async, store, experiment_id, options, on_progress)


async def run_batches_async(store: Store, experiment_id: str, options: BatchOptions, on_progress: BatchCallback | None = None) -> BatchProgress:
    """`run_batches` inside a running event loop."""
    experiment = get_experiment(store, experiment_id)
    refuse_budget(experiment.max_cost_usd)
    lease = await anyio.to_thread.run_sync(partial(acquire, store, experiment_id, exclusive=True))  # one batch loop at a time
    run = _BatchRun(store, experiment, options, lease, on_progress)
    async with recorded_run(store, lease, "cli", "stopped by Ctrl-C (submitted batch jobs keep running)") as record:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(lease.keep_alive)
                try:
                    await run.execute()
                finally:
                    group.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        record.stop = None  # detached or done: jobs left at the provider are not a stop
    return run.progress


@dataclass
class _JobWrites:
    """A submitted job with its requests, its items marked in progress (a `writer.ExtraWrites`)."""

    job: BatchJobRow
    requests: list[BatchRequestRow]

    def apply(self, conn: Connection) -> None:
        q.insert_job(conn, self.job, self.requests)


@dataclass
class _JobStatus:
    """A job's new status, or its collected mark with each request's outcome (a `writer.ExtraWrites`)."""

    job_id: str
    status: str
    error: str | None = None
    outcomes: list[RequestOutcome] | None = None  # set when the job is collected

    def apply(self, conn: Connection) -> None:
        if self.outcomes is None:
            q.set_status(conn, self.job_id, self.status, now(), self.error)
        else:
            q.mark_collected(conn, self.job_id, self.status, now(), self.error, self.outcomes)


class _BatchRun:
    """One invocation: submit what is due, poll the open jobs, collect the finished ones."""

    def __init__(self, store: Store, experiment: Any, options: BatchOptions, lease: Lease, on_progress: BatchCallback | None):
        self.store, self.experiment, self.options, self.lease = store, experiment, options, lease
        self.on_progress = on_progress
        self.progress = BatchProgress()
        self.cache = ResponseCache(store, read=options.use_cache, usage=self.progress.cache)
        self.builder = RequestBuilder(experiment, self.cache)
        self.settled: dict[str, set[str]] = {"target": set(), "evaluator": set()}  # items answered (or failed) here

    async def execute(self) -> None:
        while True:
            await self._poll_open_jobs()
            if not self.progress.open_jobs and not await self._submit_next():
                break
            if self.progress.open_jobs and self.options.detach:
                self.progress.detached = True
                return
            if self.progress.open_jobs:
                await anyio.sleep(self.options.poll_seconds)

    async def _commit(self, events: list[w.Event]) -> None:
        if writes := self.cache.take_writes():
            events = [*events, writes]
        counts = await anyio.to_thread.run_sync(w.apply_events, self.store, self.experiment.id, events, self.lease)
        self.progress.completed_items += counts.completed
        self.progress.failed_items += counts.failed

    def _read(self, function: Callable[[Connection], Any]) -> Any:
        with self.store.read() as session:
            return function(session.connection())

    async def _poll_open_jobs(self) -> None:
        """Ask the provider about every open job once; collect those that have ended."""
        rows = await anyio.to_thread.run_sync(self._read, lambda c: q.open_jobs(c, self.experiment.id))
        views = []
        for job in rows:
            state = await retrieve(job.provider, job.model, job.api_base, job.provider_batch_id)
            if state.finished:
                await self._collect(job, state)
                continue
            if state.status != job.status:
                await self._commit([_JobStatus(job.id, state.status, state.error)])
            views.append(JobView(job.role, job.provider_batch_id, state.status, job.request_count, job.created_at))
        self.progress.open_jobs = views
        if self.on_progress:
            self.on_progress(self.progress)

    async def _submit_next(self) -> bool:
        """Submit the target's due requests, else the evaluator's; False when nothing is left to do."""
        experiment = self.experiment
        units = await anyio.to_thread.run_sync(plan_work, self.store, experiment, self.options.retry_failed)
        for role in ("target", "evaluator"):
            due = [u for u in units if u.needs_replay == (role == "target") and u.item_id not in self.settled[role]]
            if role == "evaluator" and not self.builder.evaluates:
                due = []
            if due:
                await self._submit(role, due)
                return True
        return False

    async def _submit(self, role: str, units: list[WorkUnit]) -> None:
        """Answer what the cache (or pass-through) can, put the rest in batch jobs of `BATCH_LIMIT` requests."""
        loaded = await anyio.to_thread.run_sync(load_units, self.store, units)
        prepared: list[Prepared] = []
        events: list[w.Event] = []
        for unit, messages in loaded:
            result = await self.builder.prepare(role, unit.item_id, messages, unit.tools)
            if isinstance(result, Prepared):
                prepared.append(result)
            else:
                events.append(result)
                self.settled[role].add(unit.item_id)
        await self._commit(events)
        if not prepared:  # all answered now (the cache, a copy, rules alone): no job
            return
        model, api_base = self.builder.endpoint(role)
        provider, name = batch_provider(model, "--evaluator-model" if role == "evaluator" else "--model")
        for start in range(0, len(prepared), BATCH_LIMIT):
            chunk = prepared[start : start + BATCH_LIMIT]
            lines = [{"custom_id": p.custom_id, "method": "POST", "url": ENDPOINT, "body": {"model": name, **p.body}} for p in chunk]
            input_file, batch_id, status = await submit(provider, model, api_base, lines)
            stamp = now()
            job: BatchJobRow = {"id": new_id(), "experiment_id": self.experiment.id, "role": role, "model": model, "api_base": api_base,
                   "provider": provider, "provider_batch_id": batch_id, "input_file_id": input_file, "status": status,
                   "request_count": len(chunk), "created_at": stamp, "updated_at": stamp}
            await self._commit([*(w.Started(p.item_id) for p in chunk), _JobWrites(job, [p.row() for p in chunk])])
            self.progress.batches_created += 1
            self.progress.submitted += len(chunk)
            self.progress.open_jobs.append(JobView(role, batch_id, status, len(chunk), stamp))
            logger.info("submitted %s batch %s with %d requests", role, batch_id, len(chunk))

    async def _collect(self, job: Any, state: BatchState) -> None:
        """Store the answers of an ended job, fail the requests that came back as errors, resubmit the unanswered."""
        answers: dict[str, JSONObject] = {}
        for line in [*await result_lines(job.provider, job.model, job.api_base, state.output_file_id),
                     *await result_lines(job.provider, job.model, job.api_base, state.error_file_id)]:
            answers[str(line.get("custom_id"))] = line
        requests = await anyio.to_thread.run_sync(self._read, lambda c: q.requests(c, job.id))
        items = await anyio.to_thread.run_sync(self._read, lambda c: {r.id: r for r in runs_q.work_items(c, self.experiment.id)})
        units = [WorkUnit(r.item_id, items[r.item_id].source if job.role == "target" else items[r.item_id].result, job.role == "target")
                 for r in requests if r.status == "submitted" and r.item_id in items]
        conversations = {u.item_id: m for u, m in await anyio.to_thread.run_sync(load_units, self.store, units)}
        events: list[w.Event] = []
        outcomes: list[RequestOutcome] = []
        for request in requests:
            if request.status != "submitted" or request.item_id not in conversations:
                continue
            answer = answers.get(request.custom_id)
            if answer is None and state.status in ("expired", "cancelled"):
                outcomes.append({"custom_id": request.custom_id, "status": "resubmitted"})
                self.progress.resubmitted += 1
                continue
            reply, error = self._reply(job, request, answer, state)
            events.append(self.builder.result(job.role, request.item_id, conversations[request.item_id], reply, request.mode, error))
            self.settled[job.role].add(request.item_id)
            outcomes.append({"custom_id": request.custom_id, "status": "done" if reply is not None else "failed"})
        events.append(_JobStatus(job.id, state.status, state.error, outcomes))
        await self._commit(events)

    def _reply(self, job: Any, request: Any, answer: JSONObject | None, state: BatchState) -> tuple[Completion | None, str | None]:
        """The reply in a result line, priced at the batch price, and kept in the cache; or why there is none."""
        if answer is None:
            return None, f"batch {job.provider_batch_id} {state.status}: {state.error or 'no answer for this request'}"
        response = answer.get("response") or {}
        body = response.get("body")
        if response.get("status_code") != 200 or not isinstance(body, dict) or not body.get("choices"):
            self.progress.failed += 1
            error = (body or {}).get("error") if isinstance(body, dict) else None
            message = (error or {}).get("message") if isinstance(error, dict) else None
            detail = message or (answer.get("error") or {}).get("message") or "no reply"
            return None, f"batch request failed: HTTP {response.get('status_code', '?')}: {' '.join(str(detail).split())[:300]}"
        reply = completion_from_body(job.model, body)
        batched, normal = batch_cost(job.model, reply.generation["input_tokens"], reply.generation["output_tokens"])
        reply.generation.update({"provider": job.provider, "cost_usd": batched, "cost_unbatched_usd": normal, "latency_ms": None,
                                 "batch_id": job.provider_batch_id})
        self.progress.collected += 1
        self.progress.cost_usd += batched or 0.0
        self.progress.cost_unbatched_usd += normal or 0.0
        return self.cache.remember(request.cache_key, reply, job.model, job.api_base), None


def has_batches(store: Store, experiment_id: str) -> bool:
    """Whether the experiment was run with batch jobs (its `resume` goes on with them)."""
    with store.read() as session:
        return q.has_jobs(session.connection(), experiment_id)

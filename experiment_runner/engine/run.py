"""Running an experiment to the end: replay (or pass-through), then evaluation, item by item, concurrently.

Shape of a run (one anyio task group):

- a feeder claims the items still to do, a page at a time (`workplan.claim_work`), and reads the
  conversations they need;
- K workers take items from it: each replays its conversation (one target call, retried with backoff),
  then evaluates the reply at once (one evaluator call) — so at most K model calls are under way;
- one writer owns every database write: workers hand it events, and it commits whatever has arrived
  in one transaction (a thread, off the event loop). A worker waits for the commit of its reply (and of
  its evaluation) before it makes its next call, so a crash (kill -9) loses at most the calls in flight:
  their items are still `pending`/`in_progress`, and `resume` runs them again.

The run is one worker of the experiment (`engine.lease`): a second runner (another `run`/`resume`, a
`worker` process, a server) joins it and claims other items; each writes only the items it still holds.
A runner that dies leaves a worker row that goes stale after the heartbeat timeout, and its items are
taken over. A run records who runs it and, when it ends early, why (`engine.runstate`): its unfinished
items go back to `pending`.

Item states: pending -> in_progress -> completed | failed. An item is completed when its reply is
stored and, if an evaluator is configured, its evaluation is recorded (a failed evaluation still
completes the item). `resume` redoes only what is missing: items without a reply are replayed, items
with a reply but no evaluation are only evaluated.
"""

import logging
import math
import signal
from dataclasses import replace
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from experiment_runner.conversation import Message, ToolDefinition
from experiment_runner.engine import writer as w
from experiment_runner.engine.budget import Budget
from experiment_runner.engine.cache import ResponseCache
from experiment_runner.engine.estimate import ItemPlan, item_bound
from experiment_runner.engine.evaluate import evaluate_reply
from experiment_runner.engine.experiments import get_experiment, reasoning_kwargs, record_response_formats
from experiment_runner.engine.failures import Reachability, endpoint_name
from experiment_runner.engine.lease import Lease, acquire
from experiment_runner.engine.llm import complete
from experiment_runner.engine.output_schema import check_reply, to_json_schema
from experiment_runner.engine.progress import Progress, ProgressCallback, RunOptions
from experiment_runner.engine.replay import (
    replay_request,
    result_messages,
    split_reply,
    target_call,
    with_system_prompt,
)
from experiment_runner.engine.runstate import INTERRUPTED, budget_left, first_error, recorded_run, stop_of
from experiment_runner.engine.shared_budget import POLL_SECONDS, SharedBudget
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.engine.structured import FormatLearner
from experiment_runner.engine.workplan import WorkUnit, claim_work, count_left, held_elsewhere, load_units
from experiment_runner.errors import ModelCallError
from experiment_runner.evaluation.rules import rules_of
from experiment_runner.store import Store
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import now

log = logging.getLogger(__name__)

Envelope = tuple[w.Event, anyio.Event | None]  # an event, and what the writer sets once it is committed
PAGE_MAX = 50  # the most items one claim takes
WAIT_SECONDS = 0.05  # how often a run with nothing to claim looks again while other workers hold the last items


def run_experiment(
    store: Store, experiment_id: str, options: RunOptions | None = None, on_progress: ProgressCallback | None = None
) -> Progress:
    """Run (or resume) an experiment to the end from synchronous code; returns the final counts."""
    return anyio.run(run_experiment_async, store, experiment_id, options or RunOptions(), on_progress)


async def run_experiment_async(
    store: Store, experiment_id: str, options: RunOptions, on_progress: ProgressCallback | None = None
) -> Progress:
    """Run (or resume) an experiment inside a running event loop (the REST server uses this). Joins the
    workers already on it, if any: each claims its own items."""
    experiment = get_experiment(store, experiment_id)
    if options.retry_failed and options.retry_before is None:  # failed before now: never what fails in this run
        options = replace(options, retry_before=now())
    lease = await anyio.to_thread.run_sync(acquire, store, experiment_id)
    lease.claims = True
    async with recorded_run(store, lease, options.runner, resume=options.resume) as record:
        total = await anyio.to_thread.run_sync(count_left, store, experiment, options.retry_before)
        stored = options.max_cost_usd is None
        if stored:  # the stored budget, less what earlier runs spent, shared with every other worker
            budget = await anyio.to_thread.run_sync(budget_left, store, experiment)
            options = replace(options, max_cost_usd=budget.left_usd)
            progress = Progress(total=total, budget_usd=budget.cap_usd, spent_before_usd=budget.spent_usd)
        else:
            progress = Progress(total=total, budget_usd=options.max_cost_usd)
        run = _Run(store, experiment, options, progress, on_progress, lease)
        if stored and run.budget is not None:
            run.shared_budget = SharedBudget(run.budget, lease, progress.spent_before_usd, replayed=not experiment.pass_through)
        if total and options.max_cost_usd is not None and options.max_cost_usd <= 0:
            progress.budget_reached = True  # the stored budget is spent: nothing starts
        else:
            try:
                await run.execute()
            except BaseExceptionGroup as group:  # task groups wrap what failed: report the error itself
                raise first_error(group) from None
        left = await anyio.to_thread.run_sync(count_left, store, experiment, options.retry_before)
        progress.others_done = max(0, progress.total - left - progress.done)
        record.stop = stop_of(progress)
        if record.stop is not None and record.stop.reason == INTERRUPTED and not options.user_stop:
            record.stop = None  # a worker told to leave: the experiment stays runnable for the others
    return progress


class _Run:
    """The state of one run: settings, the writer's channel, the stop flag."""

    def __init__(
        self, store: Store, experiment: Experiment, options: RunOptions, progress: Progress, on_progress: ProgressCallback | None,
        lease: Lease,
    ):
        self.store = store
        self.lease = lease
        self.experiment = experiment
        self.options = options
        self.progress = progress
        self.on_progress = on_progress
        self.evaluator = ExperimentSpec.from_row(experiment).evaluator()
        self.rules = rules_of(experiment.labels)  # rule evaluators: no model call
        self.evaluates = self.evaluator is not None or bool(self.rules)
        self.limiter = anyio.CapacityLimiter(max(1, options.concurrency))
        self.stopping = False
        self.work_scope = anyio.CancelScope()
        self.budget = Budget(options.max_cost_usd) if options.max_cost_usd is not None else None
        self.shared_budget: SharedBudget | None = None  # the stored budget, decided with the other workers
        self.waiting = 0  # workers waiting for an item: how many the next claim takes
        self.policy = replace(options.policy, on_retry=self._retried)
        self.target_kwargs = reasoning_kwargs(experiment.reasoning_config)
        self.cache = ResponseCache(store, read=options.use_cache, usage=progress.cache)
        self.target_schema = to_json_schema(experiment.output_schema) if experiment.output_schema else None
        self.plan = ItemPlan(experiment.model, experiment.pass_through, experiment.system_prompt_override, self.target_schema, self.evaluator)
        settings = experiment.structured_output or {}
        self.endpoints = {"target": (experiment.model, experiment.api_base), "evaluator": (experiment.evaluator_model, experiment.evaluator_api_base)}
        self.reachability = {role: Reachability() for role in self.endpoints}  # unreachable after a silent first wave
        shared: dict[tuple[Any, ...], FormatLearner] = {}  # one learner per endpoint, model and setting
        self.learners: dict[str, FormatLearner] = {}
        for role, endpoint in self.endpoints.items():
            own = settings.get(role) or {}
            key = (*endpoint, own.get("setting") or "auto")
            if key not in shared:
                shared[key] = FormatLearner(key[-1], own.get("used"))
            self.learners[role] = shared[key]

    def _retried(self, reason: str) -> None:
        self.progress.retries += 1

    def _stop_on(self, exc: ModelCallError, role: str) -> None:
        """A systematic failure: take no new items; the first one says why the run stopped."""
        model, api_base = self.endpoints[role]
        if self.progress.stopped_by is None:
            where = "" if str(exc).startswith("cannot reach ") else f" at {endpoint_name(api_base, model or '')}"
            self.progress.stopped_by = f"{role} model {model}{where}: {exc}"
        self.stopping = True

    async def execute(self) -> None:
        events_in, events_out = anyio.create_memory_object_stream[Envelope](math.inf)
        # unbuffered: an item is claimed only when a worker is about to take it, so processes share items evenly
        work_in, work_out = anyio.create_memory_object_stream[tuple[WorkUnit, list[Message]]](0)
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._write, events_out)
            signals = anyio.CancelScope()
            if self.options.handle_signals:
                outer.start_soon(self._watch_signals, signals)
            renewals = anyio.CancelScope()
            outer.start_soon(self._keep_lease, renewals)
            ticks = anyio.CancelScope()
            if self.on_progress is not None and self.options.tick_seconds:
                outer.start_soon(self._tick, ticks)
            try:
                with self.work_scope:
                    async with anyio.create_task_group() as workers:
                        for _ in range(max(1, self.options.concurrency)):
                            workers.start_soon(self._work, work_out.clone(), events_in.clone())
                        workers.start_soon(self._feed, work_in)
                        work_out.close()
            finally:
                events_in.close()
                signals.cancel()
                renewals.cancel()
                ticks.cancel()
        self.progress.interrupted = self.stopping and self.progress.stopped_by is None and not self.progress.budget_reached
        self.progress.response_formats = self._learned()
        if self.progress.response_formats:
            await anyio.to_thread.run_sync(record_response_formats, self.store, self.experiment.id, self.progress.response_formats)

    def _learned(self) -> dict[str, str]:
        """The structured-output mode each model settled on in this run (only models that were asked for JSON)."""
        asked = {"target": self.target_schema is not None, "evaluator": self.evaluator is not None}
        return {role: learner.mode for role, learner in self.learners.items() if asked[role] and learner.settled}

    async def _feed(self, work_in: ObjectSendStream[tuple[WorkUnit, list[Message]]]) -> None:
        """Claim items a page at a time and hand them to the workers: first K (every call starts at once), then as
        many as are waiting (at least a quarter of K, so a claim is not a transaction per item). When nothing is
        left to claim but other workers still hold items, look again every `WAIT_SECONDS` (the run ends when they are
        done, and a dead worker's are taken over)."""
        concurrency = max(1, self.options.concurrency)
        size = min(PAGE_MAX, concurrency)
        async with work_in:
            while not self.stopping:
                units = await anyio.to_thread.run_sync(
                    claim_work, self.store, self.experiment, self.lease, size, self.options.retry_before)
                if not units:
                    if not await anyio.to_thread.run_sync(
                            held_elsewhere, self.store, self.experiment, self.lease, self.options.retry_before):
                        return
                    await anyio.sleep(min(self.lease.timings.heartbeat, WAIT_SECONDS))
                    continue
                self.progress.claimed += len(units)
                for unit, messages in await anyio.to_thread.run_sync(load_units, self.store, units):
                    if self.stopping:
                        return  # what is claimed and not started goes back to the pool at the end of the run
                    try:
                        await work_in.send((unit, messages))
                    except anyio.BrokenResourceError:  # every worker has stopped (Ctrl-C): nothing takes more
                        return
                size = min(PAGE_MAX, max(self.waiting, math.ceil(concurrency / 4)))

    async def _work(
        self,
        work_out: ObjectReceiveStream[tuple[WorkUnit, list[Message]]],
        events: ObjectSendStream[Envelope],
    ) -> None:
        async with work_out, events:
            while not self.stopping:
                self.waiting += 1
                try:
                    unit, messages = await work_out.receive()
                except anyio.EndOfStream:
                    return
                finally:
                    self.waiting -= 1
                if self.stopping:
                    return
                reserved = await self._admit(unit, messages)
                if reserved is None:
                    return
                cost = 0.0
                self.progress.in_flight += 1
                try:
                    cost = await self._process(unit, messages, events)
                finally:
                    self.progress.in_flight -= 1
                    self.progress.spent_usd += cost
                    if self.budget is not None:
                        self.budget.settle(reserved, cost)
                        if self.shared_budget is not None:
                            self.shared_budget.settled()

    async def _admit(self, unit: WorkUnit, messages: list[Message]) -> float | None:
        """The price reserved for this item (0 without a budget) once it may start, or None when it may not."""
        if self.budget is None:
            return 0.0
        price = await anyio.to_thread.run_sync(item_bound, messages, unit.needs_replay, self.plan, unit.tools)
        started = await self._reserve(price)
        self.progress.max_reserved_usd = self.budget.dearest
        if started and not self.stopping:
            return price
        if started:  # a stop came while it waited: give the reservation back
            self.budget.settle(price, 0.0)
        elif not self.progress.budget_reached:
            log.info("experiment %s: budget of $%g reached ($%.6f spent)", self.experiment.id, self.budget.cap, self.budget.spent)
            self.progress.budget_reached = self.stopping = True
        return None

    async def _reserve(self, price: float) -> bool:
        """Wait until an item reserving `price` may start (True) or no item may (False); a shared budget asks the
        store each time, and looks again every `POLL_SECONDS` while other processes' items hold the rest."""
        assert self.budget is not None
        if self.shared_budget is None:
            return await self.budget.start(price)
        while True:
            decision = await anyio.to_thread.run_sync(self.shared_budget.reserve, price)
            if decision is not None:
                return decision
            await self.budget.wait_settled(POLL_SECONDS)

    async def _process(self, unit: WorkUnit, messages: list[Message], events: ObjectSendStream[Envelope]) -> float:
        """One item: replay (or copy) its reply, then evaluate it; returns what its calls cost (the priced ones)."""
        cost = 0.0
        await events.send((w.Started(unit.item_id), None))
        if unit.needs_replay:
            try:
                messages, problem = await self._reply(messages, unit.tools)
                if not self.experiment.pass_through:  # a copied reply's cost was paid before this run
                    generation = messages[-1].get("generation")
                    cost += self._priced(generation.get("cost_usd") if generation else None)
            except ModelCallError as exc:
                if exc.systematic:
                    self._stop_on(exc, "target")  # the item stays unfinished; resume runs it
                    return cost
                self.progress.failure_reasons[str(exc)] += 1
                await self._commit(events, w.Failed(unit.item_id, str(exc)))
                return cost
            finished = problem is not None or not self.evaluates
            await self._commit(events, w.Replayed(unit.item_id, messages, problem, finished))
            if finished:
                return cost
        if self.evaluates:
            try:
                outcome = await evaluate_reply(
                    self.evaluator, self.rules, messages, policy=self.policy, limiter=self.limiter,
                    learner=self.learners["evaluator"], reachability=self.reachability["evaluator"], cache=self.cache,
                )
            except ModelCallError as exc:  # systematic: no evaluation is recorded, resume evaluates the item
                self._stop_on(exc, "evaluator")
                return cost
            if outcome.cost_usd is not None or outcome.input_tokens:  # (no call made: nothing to count)
                cost += self._priced(outcome.cost_usd)
            await self._commit(events, w.Evaluated(unit.item_id, messages[-1]["id"], outcome))
        return cost

    def _priced(self, call_cost: float | None) -> float:
        """What a call adds to its item's cost; a call without a price is counted as unpriced (and adds 0)."""
        if call_cost is None:
            self.progress.unpriced_calls += 1
        return call_cost or 0.0

    async def _commit(self, events: ObjectSendStream[Envelope], event: w.Event) -> None:
        """Hand the writer an event and wait until it is committed (a kill then costs only calls in flight)."""
        committed = anyio.Event()
        await events.send((event, committed))
        await committed.wait()

    async def _reply(
        self, source: list[Message], tools: list[ToolDefinition] | None = None
    ) -> tuple[list[Message], str | None]:
        """The result conversation's messages and, if the reply is unusable, why."""
        history, original = split_reply(with_system_prompt(source, self.experiment.system_prompt_override))
        if self.experiment.pass_through:
            if original is None:
                raise ModelCallError("pass-through: the conversation has no final assistant reply to copy")
            return result_messages(history, original["parts"], original.get("generation")), None
        if not history:
            raise ModelCallError("the conversation has no messages before its final reply to replay")
        request, schema = replay_request(history, tools), self.target_schema

        async def send(mode: str) -> Any:
            messages, kwargs = target_call(request, mode, schema, self.target_kwargs)
            return await complete(
                self.experiment.model, messages, api_base=self.experiment.api_base, policy=self.policy,
                limiter=self.limiter, reachability=self.reachability["target"], cache=self.cache, **kwargs,
            )

        reply = await (self.learners["target"].call(send) if schema else send("prompt"))
        problem = check_reply(self.experiment.output_schema, reply.text) if self.experiment.output_schema else None
        if problem is not None:
            self.cache.forget(reply)  # a reply the schema refuses is not served again
        return result_messages(history, reply.parts, reply.generation), problem

    async def _write(self, events_out: MemoryObjectReceiveStream[Envelope]) -> None:
        """The single writer: commit every batch of events that has arrived, in arrival order, then tell their workers."""
        async with events_out:
            async for first in events_out:
                batch = [first]
                while True:
                    try:
                        batch.append(events_out.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                events = [event for event, _ in batch]
                if writes := self.cache.take_writes():
                    events.append(writes)
                counts = await anyio.to_thread.run_sync(w.apply_events, self.store, self.experiment.id, events, self.lease)
                for _, committed in batch:
                    if committed is not None:
                        committed.set()
                self.progress.completed += counts.completed
                self.progress.failed += counts.failed
                self.progress.evaluations_failed += counts.evaluations_failed
                if self.on_progress:
                    self.on_progress(self.progress)
            if writes := self.cache.take_writes():  # replies of calls whose item sent no event (a stop)
                rest: list[w.Event] = [writes]
                await anyio.to_thread.run_sync(w.apply_events, self.store, self.experiment.id, rest, self.lease)

    async def _keep_lease(self, scope: anyio.CancelScope) -> None:
        """Renew the worker row while the run's work lasts (until `scope` is cancelled)."""
        with scope:
            await self.lease.keep_alive()

    async def _tick(self, scope: anyio.CancelScope) -> None:
        """Report progress every `tick_seconds` (until `scope` is cancelled), so slow calls do not leave it silent."""
        assert self.on_progress is not None and self.options.tick_seconds
        with scope:
            while True:
                await anyio.sleep(self.options.tick_seconds)
                self.on_progress(self.progress)

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        """First SIGINT/SIGTERM: take no new items and give calls under way a grace period. Second: stop now."""
        try:
            with scope, anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                async for _ in received:
                    if self.options.on_signal is not None:
                        self.options.on_signal()
                    if self.stopping:
                        self.work_scope.cancel()
                        return
                    self.stopping = self.progress.stop_requested = True
                    log.info("experiment %s: stopping, %d item(s) under way", self.experiment.id, self.progress.in_flight)
                    self.work_scope.deadline = anyio.current_time() + self.options.grace_seconds
                    if self.on_progress:
                        self.on_progress(self.progress)
        finally:
            self.progress.note_later_signals(self.options.on_signal)  # the run still writes its end (claims back, completed_at)

"""Running an experiment to the end: replay (or pass-through), then evaluation, item by item, concurrently.

Shape of a run (one anyio task group):

- a feeder reads the items still to do, a page at a time, with the conversations they need;
- K workers take items from it: each replays its conversation (one target call, retried with backoff),
  then evaluates the reply at once (one evaluator call) — so at most K model calls are under way;
- one writer owns every database write: workers hand it events, and it commits whatever has arrived
  in one transaction (a thread, off the event loop). A worker waits for the commit of its reply (and of
  its evaluation) before it makes its next call, so a crash (kill -9) loses at most the calls in flight:
  their items are still `pending`/`in_progress`, and `resume` runs them again.

The whole run holds the experiment's lease (`engine.lease`): a second runner gets `ExperimentBusyError`,
a runner that dies leaves a lease that goes stale after the heartbeat timeout. A run records who runs it
and, when it ends early, why (`engine.runstate`): its unfinished items go back to `pending`.

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
from experiment_runner.engine.runstate import budget_left, first_error, recorded_run, stop_of
from experiment_runner.engine.structured import FormatLearner
from experiment_runner.engine.workplan import WorkUnit, load_units, plan_work
from experiment_runner.errors import ModelCallError
from experiment_runner.evaluation.evaluator import EvaluatorConfig
from experiment_runner.evaluation.rules import rules_of
from experiment_runner.store import Store
from experiment_runner.store.tables import Experiment

log = logging.getLogger(__name__)

Envelope = tuple[w.Event, anyio.Event | None]  # an event, and what the writer sets once it is committed


def run_experiment(
    store: Store, experiment_id: str, options: RunOptions | None = None, on_progress: ProgressCallback | None = None
) -> Progress:
    """Run (or resume) an experiment to the end from synchronous code; returns the final counts."""
    return anyio.run(run_experiment_async, store, experiment_id, options or RunOptions(), on_progress)


async def run_experiment_async(
    store: Store, experiment_id: str, options: RunOptions, on_progress: ProgressCallback | None = None
) -> Progress:
    """Run (or resume) an experiment inside a running event loop (the REST server uses this)."""
    experiment = get_experiment(store, experiment_id)
    lease = await anyio.to_thread.run_sync(acquire, store, experiment_id)
    async with recorded_run(store, lease, options.runner) as record:
        units = await anyio.to_thread.run_sync(plan_work, store, experiment, options.retry_failed)
        if options.max_cost_usd is None:  # the stored budget, less what earlier runs spent
            budget = await anyio.to_thread.run_sync(budget_left, store, experiment)
            options = replace(options, max_cost_usd=budget.left_usd)
            progress = Progress(total=len(units), budget_usd=budget.cap_usd, spent_before_usd=budget.spent_usd)
        else:
            progress = Progress(total=len(units), budget_usd=options.max_cost_usd)
        run = _Run(store, experiment, options, progress, on_progress, lease)
        if units and options.max_cost_usd is not None and options.max_cost_usd <= 0:
            progress.budget_reached = True  # the stored budget is spent: nothing starts
        else:
            try:
                await run.execute(units)
            except BaseExceptionGroup as group:  # task groups wrap what failed: report the error itself
                raise first_error(group) from None
        record.stop = stop_of(progress)
    return progress


class _Run:
    """The state of one run: settings, the writer's channel, the stop flag."""

    def __init__(
        self, store: Store, experiment: Experiment, options: RunOptions, progress: Progress, on_progress: ProgressCallback | None,
        lease: Lease | None = None,
    ):
        self.store = store
        self.lease = lease
        self.experiment = experiment
        self.options = options
        self.progress = progress
        self.on_progress = on_progress
        self.evaluator = EvaluatorConfig.from_experiment(experiment)
        self.rules = rules_of(experiment)  # rule evaluators: no model call
        self.evaluates = self.evaluator is not None or bool(self.rules)
        self.limiter = anyio.CapacityLimiter(max(1, options.concurrency))
        self.stopping = False
        self.work_scope = anyio.CancelScope()
        self.budget = Budget(options.max_cost_usd) if options.max_cost_usd is not None else None
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

    async def execute(self, units: list[WorkUnit]) -> None:
        events_in, events_out = anyio.create_memory_object_stream[Envelope](math.inf)
        work_in, work_out = anyio.create_memory_object_stream[tuple[WorkUnit, list[Message]]](
            2 * self.options.concurrency
        )
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._write, events_out)
            signals = anyio.CancelScope()
            if self.options.handle_signals:
                outer.start_soon(self._watch_signals, signals)
            renewals = anyio.CancelScope()
            if self.lease is not None:
                outer.start_soon(self._keep_lease, renewals)
            ticks = anyio.CancelScope()
            if self.on_progress is not None and self.options.tick_seconds:
                outer.start_soon(self._tick, ticks)
            try:
                with self.work_scope:
                    async with anyio.create_task_group() as workers:
                        workers.start_soon(self._feed, units, work_in)
                        for _ in range(max(1, self.options.concurrency)):
                            workers.start_soon(self._work, work_out.clone(), events_in.clone())
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

    async def _feed(self, units: list[WorkUnit], work_in: ObjectSendStream[tuple[WorkUnit, list[Message]]]) -> None:
        async with work_in:
            for start in range(0, len(units), 50):
                page = units[start : start + 50]
                loaded = await anyio.to_thread.run_sync(load_units, self.store, page)
                for unit, messages in loaded:
                    if self.stopping:
                        return
                    try:
                        await work_in.send((unit, messages))
                    except anyio.BrokenResourceError:  # every worker has stopped (Ctrl-C): nothing takes more
                        return

    async def _work(
        self,
        work_out: ObjectReceiveStream[tuple[WorkUnit, list[Message]]],
        events: ObjectSendStream[Envelope],
    ) -> None:
        async with work_out, events:
            async for unit, messages in work_out:
                if self.stopping:
                    return
                reserved = await self._admit(unit, messages)
                if reserved is None:
                    return
                cost = [0.0]
                self.progress.in_flight += 1
                try:
                    await self._process(unit, messages, events, cost)
                finally:
                    self.progress.in_flight -= 1
                    self.progress.spent_usd += cost[0]
                    if self.budget is not None:
                        self.budget.settle(reserved, cost[0])

    async def _admit(self, unit: WorkUnit, messages: list[Message]) -> float | None:
        """The price reserved for this item (0 without a budget) once it may start, or None when it may not."""
        if self.budget is None:
            return 0.0
        price = await anyio.to_thread.run_sync(item_bound, messages, unit.needs_replay, self.plan, unit.tools)
        started = await self.budget.start(price)
        self.progress.max_reserved_usd = self.budget.dearest
        if started and not self.stopping:
            return price
        if started:  # a stop came while it waited: give the reservation back
            self.budget.settle(price, 0.0)
        elif not self.progress.budget_reached:
            log.info("experiment %s: budget of $%g reached ($%.6f spent)", self.experiment.id, self.budget.cap, self.budget.spent)
            self.progress.budget_reached = self.stopping = True
        return None

    async def _process(
        self, unit: WorkUnit, messages: list[Message], events: ObjectSendStream[Envelope], cost: list[float]
    ) -> None:
        """One item: replay (or copy) its reply, then evaluate it; `cost[0]` collects what its calls cost."""
        await events.send((w.Started(unit.item_id), None))
        if unit.needs_replay:
            try:
                messages, problem = await self._reply(messages, unit.tools)
                if not self.experiment.pass_through:  # a copied reply's cost was paid before this run
                    self._add_cost(cost, generation.get("cost_usd") if (generation := messages[-1].get("generation")) else None)
            except ModelCallError as exc:
                if exc.systematic:
                    return self._stop_on(exc, "target")  # the item stays unfinished; resume runs it
                self.progress.failure_reasons[str(exc)] += 1
                await self._commit(events, w.Failed(unit.item_id, str(exc)))
                return
            finished = problem is not None or not self.evaluates
            await self._commit(events, w.Replayed(unit.item_id, messages, problem, finished))
            if finished:
                return
        if self.evaluates:
            try:
                outcome = await evaluate_reply(
                    self.evaluator, self.rules, messages, policy=self.policy, limiter=self.limiter,
                    learner=self.learners["evaluator"], reachability=self.reachability["evaluator"], cache=self.cache,
                )
            except ModelCallError as exc:  # systematic: no evaluation is recorded, resume evaluates the item
                return self._stop_on(exc, "evaluator")
            if outcome.cost_usd is not None or outcome.input_tokens:  # (no call made: nothing to count)
                self._add_cost(cost, outcome.cost_usd)
            await self._commit(events, w.Evaluated(unit.item_id, messages[-1]["id"], outcome))

    def _add_cost(self, cost: list[float], call_cost: float | None) -> None:
        """Add what a call cost to its item's tally; a call without a price is counted as unpriced."""
        if call_cost is None:
            self.progress.unpriced_calls += 1
        cost[0] += call_cost or 0.0

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
        """Renew the lease while the run's work lasts (until `scope` is cancelled)."""
        assert self.lease is not None
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
        with scope, anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                if self.stopping:
                    self.work_scope.cancel()
                    return
                self.stopping = self.progress.stop_requested = True
                log.info("experiment %s: stopping, %d item(s) under way", self.experiment.id, self.progress.in_flight)
                self.work_scope.deadline = anyio.current_time() + self.options.grace_seconds
                if self.on_progress:
                    self.on_progress(self.progress)

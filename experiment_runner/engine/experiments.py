"""Creating experiments from a spec (`engine.spec`): the checks that need the store or litellm (`prepare`,
shared by creating and the dry run), the rows an experiment starts as, re-evaluations, and the settings
`resume` may change (`SettingChanges`), preflighted and recorded.

The spec is validated when it is made (`ExperimentSpec.from_input`, or the REST body); `prepare` then checks
every conversation id known and the models' preflight, all before anything is stored.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from experiment_runner.conversation import JSONObject
from experiment_runner.engine.lease import ensure_free
from experiment_runner.engine.llm import check_model
from experiment_runner.engine.spec import ExperimentSpec, ReevaluationSpec
from experiment_runner.errors import BadInputError
from experiment_runner.store import Store
from experiment_runner.store.ids import new_id
from experiment_runner.store.queries import conversations as cq
from experiment_runner.store.queries import experiments as q
from experiment_runner.store.queries.experiments import require_experiment
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import now


def reasoning_kwargs(config: JSONObject | None) -> JSONObject:
    """litellm arguments for a reasoning config: `{"effort"}` -> reasoning_effort, `{"budget_tokens"}` -> thinking."""
    if not config:
        return {}
    kwargs: JSONObject = {}
    if "effort" in config:
        kwargs["reasoning_effort"] = config["effort"]
    if "budget_tokens" in config:
        kwargs["thinking"] = {"type": "enabled", "budget_tokens": config["budget_tokens"]}
    return kwargs


def preflight(spec: ExperimentSpec) -> None:
    """Before anything is stored: every model the run will call resolves to a provider litellm knows, with
    its credentials present (unless an endpoint is given). `BadInputError` names the model and the variable."""
    if not spec.pass_through:
        check_model(spec.model, spec.api_base, "model")
    if spec.evaluator_model:
        check_model(spec.evaluator_model, spec.evaluator_api_base, "evaluator_model")


def prepare(store: Store | None, spec: ExperimentSpec, *, check_models: bool = True) -> None:
    """What creating an experiment and its dry run both check, in this order, before anything is stored or
    estimated: every conversation known to `store` (None: they are held in memory, `run --input F --dry-run`),
    then the preflight (skipped with `check_models=False`). The spec itself was validated when it was made."""
    if store is not None:
        with store.read() as session:
            check_known(session, spec.conversation_ids)
    if check_models:
        preflight(spec)


def create_experiment(store: Store, spec: ExperimentSpec, *, check_models: bool = True, runner: str | None = None) -> str:
    """Store a new experiment with one pending item per conversation; return its id.

    `check_models=False` skips the preflight (rows built for tests, models that are never called).
    `runner="server"` marks it as the server's from the start, so a restart resumes it even if it never began."""
    prepare(store, spec, check_models=check_models)
    with store.write() as session:
        check_known(session, spec.conversation_ids)  # again inside the write: one may have been deleted meanwhile
        experiment_id = _insert_experiment(session, spec, runner=runner)
        _insert_items(session, experiment_id, [(cid, None) for cid in spec.conversation_ids], 1 if spec.evaluates else 0)
    return experiment_id


def check_known(session: Session, ids: list[str]) -> None:
    """`BadInputError` naming the first few ids that are no stored source conversation."""
    missing = cq.missing_sources(session.connection(), ids)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise BadInputError(f"unknown conversation id(s): {shown}", loc=("body", "conversation_ids"))


def completed_results(session: Session, experiment_id: str) -> list[tuple[str, str]]:
    """`(source conversation id, result conversation id)` of the experiment's completed items, in order."""
    require_experiment(session, experiment_id)
    return [(source, result) for source, result in q.completed_pairs(session.connection(), experiment_id) if result is not None]


@dataclass(frozen=True)
class Reevaluation:
    """A re-evaluation ready to store or estimate: the new experiment's spec and the replies it evaluates."""

    source_id: str
    spec: ExperimentSpec
    results: list[tuple[str, str]]  # (source conversation id, result conversation id) of the source's completed items


def _resolve(session: Session, source_id: str, reevaluation: ReevaluationSpec) -> Reevaluation:
    source = ExperimentSpec.from_row(require_experiment(session, source_id))
    rules = reevaluation.rules_for(source)  # refused first when it would evaluate nothing
    rows = completed_results(session, source_id)
    if not rows:
        raise BadInputError(f"experiment {source_id} has no completed items to evaluate again")
    return Reevaluation(source_id, reevaluation.resolve(source, [r[0] for r in rows], rules), rows)


def prepare_reevaluation(store: Store, source_id: str, reevaluation: ReevaluationSpec, *, check_models: bool = True) -> Reevaluation:
    """What `reevaluate` and its dry run both check, in this order: the source has completed items, the new
    spec is valid (an evaluator model or rules, a name that fits), then the evaluator's preflight."""
    with store.read() as session:
        prepared = _resolve(session, source_id, reevaluation)
    if check_models:
        preflight(prepared.spec)  # pass-through: the evaluator only
    return prepared


def create_reevaluation(store: Store, source_id: str, reevaluation: ReevaluationSpec, *, check_models: bool = True) -> str:
    """A new experiment whose items reuse `source_id`'s completed result conversations, to evaluate anew.

    Without rules of its own (`rules` None) it keeps the source's rules; `[]` drops them."""
    prepare_reevaluation(store, source_id, reevaluation, check_models=check_models)
    with store.write() as session:
        prepared = _resolve(session, source_id, reevaluation)  # again inside the write: the source may have changed
        experiment_id = _insert_experiment(session, prepared.spec, source_experiment_id=source_id)
        _insert_items(session, experiment_id, prepared.results, 1)
    return experiment_id


def _insert_experiment(session: Session, spec: ExperimentSpec, source_experiment_id: str | None = None, runner: str | None = None) -> str:
    experiment_id = new_id()
    row = spec.to_row(experiment_id=experiment_id, created_at=now(), source_experiment_id=source_experiment_id, runner=runner)
    q.add_experiment(session, row)
    return experiment_id


def _insert_items(session: Session, experiment_id: str, pairs: Sequence[tuple[str, str | None]], evaluations: int) -> None:
    stamp = now()
    q.insert_items(
        session.connection(),
        [
            {
                "id": new_id(),
                "experiment_id": experiment_id,
                "position": position,
                "source_conversation_id": source,
                "result_conversation_id": result,
                "status": "pending",
                "evaluations_expected": evaluations,
                "created_at": stamp,
                "updated_at": stamp,
            }
            for position, (source, result) in enumerate(pairs)
        ],
    )


def get_experiment(store: Store, experiment_id: str) -> Experiment:
    """The experiment row, or `NotFoundError`."""
    with store.read() as session:
        return require_experiment(session, experiment_id)


def record_response_formats(store: Store, experiment_id: str, used: dict[str, str]) -> None:
    """Remember the structured-output mode each model used, so `show` tells it and `resume` need not probe."""
    with store.write() as session:
        experiment = require_experiment(session, experiment_id)
        settings = {role: dict(value) for role, value in (experiment.structured_output or {}).items()}
        for role, mode in used.items():
            settings.setdefault(role, {"setting": "auto"})["used"] = mode
        q.set_structured_output(session.connection(), experiment_id, settings)


@dataclass(frozen=True)
class SettingChanges:
    """What `resume` may change before it runs: the endpoints (a wrong port is fixed here) and the budget."""

    api_base: str | None = None
    evaluator_api_base: str | None = None
    max_cost_usd: float | None = None

    def applied(self, experiment: Experiment) -> dict[str, Any]:
        """`{field: (old, new)}` for each setting these changes alter."""
        new = {"api_base": self.api_base, "evaluator_api_base": self.evaluator_api_base, "max_cost_usd": self.max_cost_usd}
        return {k: (getattr(experiment, k), v) for k, v in new.items() if v is not None and v != getattr(experiment, k)}


def change_settings(store: Store, experiment_id: str, changes: SettingChanges, *, check_models: bool = True) -> Experiment:
    """Before a resume: preflight the experiment as it will run (the same checks as `run`), then store the
    changed settings with a record of each change (`setting_changes`), unless a live runner holds it."""
    experiment = get_experiment(store, experiment_id)
    if changes.evaluator_api_base and not experiment.evaluator_model:
        raise BadInputError("--evaluator-api-base: this experiment has no evaluator", loc=("body", "evaluator_api_base"))
    altered = changes.applied(experiment)
    if check_models:
        preflight(ExperimentSpec.from_row(experiment).model_copy(update={k: new for k, (_, new) in altered.items()}))
    if not altered:
        return experiment
    stamp = now()
    with store.write() as session:
        ensure_free(session.connection(), experiment_id)
        experiment = require_experiment(session, experiment_id)
        log = list(experiment.setting_changes or [])
        log += [{"at": stamp, "field": k, "from": old, "to": new} for k, (old, new) in altered.items()]
        values = {k: getattr(experiment, k) for k in ("api_base", "evaluator_api_base", "max_cost_usd")}
        q.set_settings(session.connection(), experiment_id, values | {k: new for k, (_, new) in altered.items()}, log)
    return get_experiment(store, experiment_id)

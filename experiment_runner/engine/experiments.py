"""Creating experiments: the settings (`ExperimentSpec`), their validation, and the rows they start as;
and the settings `resume` may change (`SettingChanges`), preflighted and recorded.

Validation follows the hosted create-experiment API: name 1..255 characters, a non-empty model, at least
one conversation, and every conversation id known, all checked before anything is stored.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from sqlmodel import Session

from experiment_runner.engine.lease import ensure_free
from experiment_runner.engine.llm import check_model
from experiment_runner.engine.output_schema import check_fields
from experiment_runner.engine.structured import check_setting
from experiment_runner.errors import BadInputError, Field
from experiment_runner.store import Store
from experiment_runner.store.ids import new_id
from experiment_runner.store.queries import conversations as cq
from experiment_runner.store.queries import experiments as q
from experiment_runner.store.queries.experiments import require_experiment
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import now

EFFORTS = ("low", "medium", "high")


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything that defines an experiment (what the CLI's `run` options and the API body carry)."""

    name: str
    model: str
    conversation_ids: list[str]
    pass_through: bool = False
    system_prompt_override: str | None = None
    reasoning_config: dict[str, Any] | None = None
    output_schema: list[dict[str, Any]] | None = None
    api_base: str | None = None
    evaluator_model: str | None = None
    evaluator_api_base: str | None = None
    labels: dict[str, Any] | None = field(default=None)
    response_format: str = "auto"  # structured output for --output-schema: auto | json_schema | json_object | prompt
    evaluator_response_format: str = "auto"
    evaluator_max_tokens: int | None = None
    max_cost_usd: float | None = None  # the budget of all the experiment's runs, stored with it
    rules: list[dict[str, Any]] | None = None  # checked `--rules` (evaluation.rules); None: none (a re-evaluation: the source's)

    @property
    def evaluates(self) -> bool:
        """Whether each reply gets an evaluation (by an evaluator model, by rules, or both)."""
        return bool(self.evaluator_model or self.rules)

    def stored_labels(self) -> dict[str, Any] | None:
        """The experiment's `labels` settings: the labels document, with the rules under `rules`."""
        if not self.rules:
            return self.labels
        return {**(self.labels or {}), "rules": self.rules}

    def structured_output(self) -> dict[str, Any]:
        """The settings stored on the experiment (the mode each model used is added by the run)."""
        evaluator: dict[str, Any] = {"setting": self.evaluator_response_format}
        if self.evaluator_max_tokens:
            evaluator["max_tokens"] = self.evaluator_max_tokens
        return {"target": {"setting": self.response_format}, "evaluator": evaluator}


def reasoning_kwargs(config: dict[str, Any] | None) -> dict[str, Any]:
    """litellm arguments for a reasoning config: `{"effort"}` -> reasoning_effort, `{"budget_tokens"}` -> thinking."""
    if not config:
        return {}
    kwargs: dict[str, Any] = {}
    if "effort" in config:
        kwargs["reasoning_effort"] = config["effort"]
    if "budget_tokens" in config:
        kwargs["thinking"] = {"type": "enabled", "budget_tokens": config["budget_tokens"]}
    return kwargs


def check_spec(spec: ExperimentSpec) -> ExperimentSpec:
    """Raise `BadInputError` (with the field's `loc`) for settings the hosted API would refuse."""
    if not isinstance(spec.name, str) or not 1 <= len(spec.name) <= 255:
        raise BadInputError("name must be 1 to 255 characters", loc=("body", "name"))
    if not isinstance(spec.model, str) or not spec.model.strip():
        raise BadInputError("model must be a non-empty litellm model name", loc=("body", "model"))
    if not spec.conversation_ids:
        raise BadInputError("an experiment needs at least one conversation", loc=("body", "conversation_ids"))
    config = spec.reasoning_config
    if config is not None:
        unknown = set(config) - {"effort", "budget_tokens"}
        if unknown or ("effort" in config and config["effort"] not in EFFORTS):
            raise BadInputError(
                "reasoning_config takes {\"effort\": \"low\"|\"medium\"|\"high\"} and/or {\"budget_tokens\": N}",
                loc=("body", "reasoning_config"),
            )
    if spec.output_schema is not None:
        check_fields(spec.output_schema)
    if spec.pass_through and (spec.reasoning_config or spec.output_schema):
        raise BadInputError(
            "pass-through copies the existing replies, so reasoning and output schema settings would have no effect",
            loc=("body", "pass_through"),
        )
    if spec.evaluator_api_base and not spec.evaluator_model:
        raise BadInputError("an evaluator API base needs an evaluator model", loc=("body", "evaluator_model"))
    check_setting(spec.response_format, "response_format")
    check_setting(spec.evaluator_response_format, "evaluator_response_format")
    if spec.evaluator_max_tokens is not None and not (isinstance(spec.evaluator_max_tokens, int) and spec.evaluator_max_tokens >= 1):
        raise BadInputError("evaluator_max_tokens must be a positive integer", loc=("body", "evaluator_max_tokens"))
    return spec


def preflight(spec: ExperimentSpec) -> None:
    """Before anything is stored: every model the run will call resolves to a provider litellm knows, with
    its credentials present (unless an endpoint is given). `BadInputError` names the model and the variable."""
    if not spec.pass_through:
        check_model(spec.model, spec.api_base, "model")
    if spec.evaluator_model:
        check_model(spec.evaluator_model, spec.evaluator_api_base, "evaluator_model")


def create_experiment(store: Store, spec: ExperimentSpec, *, check_models: bool = True, runner: str | None = None) -> str:
    """Store a new experiment with one pending item per conversation; return its id.

    `check_models=False` skips the preflight (rows built for tests, models that are never called).
    `runner="server"` marks it as the server's from the start, so a restart resumes it even if it never began."""
    check_spec(spec)
    ids = list(dict.fromkeys(spec.conversation_ids))  # a conversation listed twice is run once
    with store.read() as session:
        check_known(session, ids)
    if check_models:
        preflight(spec)
    with store.write() as session:
        check_known(session, ids)  # again inside the write: one may have been deleted meanwhile
        experiment_id = _insert_experiment(session, spec, ids, runner=runner)
        _insert_items(session, experiment_id, [(cid, None) for cid in ids], 1 if spec.evaluates else 0)
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


def spec_view(spec: ExperimentSpec) -> Any:
    """The spec with the attributes of a stored experiment that settings readers look at (labels, structured output)."""
    return SimpleNamespace(**{**spec.__dict__, "structured_output": spec.structured_output()})


def create_reevaluation(store: Store, source_id: str, spec: ExperimentSpec, *, check_models: bool = True) -> str:
    """A new experiment whose items reuse `source_id`'s completed result conversations, to evaluate anew.

    Without rules of its own (`spec.rules` None) it keeps the source's rules; `[]` drops them."""
    if check_models and spec.evaluator_model:
        check_model(spec.evaluator_model, spec.evaluator_api_base, "evaluator_model")  # before the write lock
    with store.write() as session:
        source = require_experiment(session, source_id)
        rules = reevaluation_rules(source, spec)
        rows = completed_results(session, source_id)
        if not rows:
            raise BadInputError(f"experiment {source_id} has no completed items to evaluate again")
        spec = ExperimentSpec(
            name=spec.name or f"{source.name} (re-evaluated)",
            model=source.model,
            conversation_ids=[r[0] for r in rows],
            pass_through=True,
            system_prompt_override=source.system_prompt_override,
            evaluator_model=spec.evaluator_model,
            evaluator_api_base=spec.evaluator_api_base,
            labels=spec.labels,
            evaluator_response_format=spec.evaluator_response_format,
            evaluator_max_tokens=spec.evaluator_max_tokens,
            rules=rules,
            max_cost_usd=spec.max_cost_usd,
        )
        check_spec(spec)
        experiment_id = _insert_experiment(session, spec, spec.conversation_ids, source_experiment_id=source_id)
        _insert_items(session, experiment_id, list(rows), 1)
    return experiment_id


def reevaluation_rules(source: Any, spec: ExperimentSpec) -> list[dict[str, Any]]:
    """The rules of a re-evaluation: its own when given, else the source experiment's; refused when it
    would evaluate nothing (no evaluator model and no rules)."""
    rules = spec.rules if spec.rules is not None else list((source.labels or {}).get("rules") or [])
    if not spec.evaluator_model and not rules:
        raise BadInputError(["a re-evaluation needs an evaluator model or ", Field("rules")], field="evaluator_model")
    return rules


def _insert_experiment(
    session: Session, spec: ExperimentSpec, ids: list[str], source_experiment_id: str | None = None, runner: str | None = None
) -> str:
    experiment_id = new_id()
    q.add_experiment(
        session,
        Experiment(
            id=experiment_id,
            name=spec.name,
            model=spec.model,
            pass_through=spec.pass_through,
            conversation_ids=ids,
            reasoning_config=spec.reasoning_config,
            system_prompt_override=spec.system_prompt_override,
            output_schema=check_fields(spec.output_schema) if spec.output_schema else None,
            created_at=now(),
            api_base=spec.api_base,
            evaluator_model=spec.evaluator_model,
            evaluator_api_base=spec.evaluator_api_base,
            labels=spec.stored_labels(),
            source_experiment_id=source_experiment_id,
            structured_output=spec.structured_output(),
            max_cost_usd=spec.max_cost_usd,
            runner=runner,
        ),
    )
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


def as_spec(experiment: Experiment) -> ExperimentSpec:
    """A stored experiment's settings as the spec `preflight` and the price check read."""
    return ExperimentSpec(
        name=experiment.name, model=experiment.model, conversation_ids=list(experiment.conversation_ids),
        pass_through=experiment.pass_through, api_base=experiment.api_base, evaluator_model=experiment.evaluator_model,
        evaluator_api_base=experiment.evaluator_api_base, max_cost_usd=experiment.max_cost_usd,
    )


def change_settings(store: Store, experiment_id: str, changes: SettingChanges, *, check_models: bool = True) -> Experiment:
    """Before a resume: preflight the experiment as it will run (the same checks as `run`), then store the
    changed settings with a record of each change (`setting_changes`), unless a live runner holds it."""
    experiment = get_experiment(store, experiment_id)
    if changes.evaluator_api_base and not experiment.evaluator_model:
        raise BadInputError("--evaluator-api-base: this experiment has no evaluator", loc=("body", "evaluator_api_base"))
    altered = changes.applied(experiment)
    if check_models:
        preflight(replace(as_spec(experiment), **{k: new for k, (_, new) in altered.items()}))
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

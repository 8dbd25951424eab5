"""An experiment's settings, written once: the frozen pydantic models every door goes through.

`ExperimentSettings` holds the fields an experiment is created with (the hosted create-experiment API's,
then this runner's endpoints, evaluator and budget), with their constraints, descriptions and checks;
`ExperimentSpec` adds the CLI-only `--rules`. The REST body (`server.schemas.CreateExperiment`) is a
subclass of `ExperimentSettings`, so FastAPI validates it with these very validators and documents these
fields; the CLI builds its spec with `from_input`, the one place where pydantic's `ValidationError`
becomes our `BadInputError(field=...)`. A stored experiment row is built from a spec (`to_row`) and read
back as one (`from_row`), so every reader of settings (the run loop, the dry run, `show`, the export)
gets typed values. `ReevaluationSpec` is what `reevaluate` takes: evaluator settings only, resolved
against the source experiment (`resolve`) into the new experiment's spec.

Checks that need a store or litellm (known conversation ids, the model preflight) are not here: they are
`experiments.prepare`, shared by creating and the dry run.
"""

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, cast

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import TypedDict  # pydantic refuses typing.TypedDict before Python 3.12

from experiment_runner.conversation import JSONObject
from experiment_runner.engine.output_schema import check_fields, to_json_schema
from experiment_runner.errors import BadInputError, StoreError
from experiment_runner.errors import Field as Named
from experiment_runner.evaluation.evaluator import DEFAULT_LABELS, EvaluatorConfig, check_labels
from experiment_runner.evaluation.rules import check_rules
from experiment_runner.store.tables import Experiment

EFFORTS = ("low", "medium", "high")
ResponseFormat = Literal["auto", "json_schema", "json_object", "prompt"]  # engine.structured.SETTINGS

# Our wording of a constraint that fails on these fields (the CLI's messages; FastAPI reports pydantic's own).
WORDING = {
    "name": "name must be 1 to 255 characters",
    "model": "model must be a non-empty litellm model name",
    "conversation_ids": "an experiment needs at least one conversation",
}
# Settings stored inside a JSON column rather than in a column of their own name (`to_row`, `from_row`).
PACKED = frozenset({"labels", "rules", "response_format", "evaluator_response_format", "evaluator_max_tokens"})


class HostedSettings(TypedDict):
    """The hosted API's experiment settings, in its order: what the export's `experiment` object carries of them."""

    name: str
    model: str
    pass_through: bool
    conversation_ids: list[str]
    reasoning_config: JSONObject | None
    system_prompt_override: str | None
    output_schema: list[JSONObject] | None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")  # a misspelt optional field is an error, not ignored

    @classmethod
    def from_input(cls, values: Mapping[str, Any]) -> Self:
        """Validate user input (CLI options, a re-evaluation's settings): a failed constraint is a `BadInputError`
        naming its field (the CLI spells it as its option), never pydantic's error."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise bad_input(exc) from None


def bad_input(exc: ValidationError) -> BadInputError:
    """Our error for pydantic's first complaint: its field, in our words where we have them."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    field = str(loc[0]) if loc else None
    if field is None:
        return BadInputError(error["msg"])
    if field in WORDING and len(loc) == 1 and error["type"] in ("string_too_short", "string_too_long", "too_short"):
        return BadInputError(WORDING[field], field=field)
    where = f" ({'.'.join(str(part) for part in loc[1:])})" if len(loc) > 1 else ""
    return BadInputError([Named(field), f"{where}: {error['msg']}"], field=field, loc=("body", *loc))


class OutputField(_Frozen):
    """One field of the structured reply the target model must give."""

    name: str = Field(min_length=1, description="Field name")
    type: str = Field(description="string, integer, number, boolean or object")
    is_list: bool = Field(default=False, description="The field holds a list of that type")
    is_optional: bool = Field(default=False, description="The field may be null")


class Label(_Frozen):
    """An issue label the evaluator may assign."""

    name: str = Field(min_length=1, description="Label name, as it appears in annotations")
    description: str = Field(min_length=1, description="What the label means, shown to the evaluator")


class Labels(_Frozen):
    """The evaluator's labels (replacing the default four) and optional domain context."""

    labels: list[Label] = Field(min_length=1, description="Labels to use")
    domain_context: str | None = Field(default=None, description="Background on the domain, shown to the evaluator")


def _checked_labels(value: Labels | None) -> Labels | None:
    """Labels as `check_labels` normalises them (names and descriptions stripped, a name only once)."""
    if value is None:
        return None
    try:
        return Labels.model_validate(check_labels(value.model_dump(exclude_none=True)))
    except BadInputError as exc:
        raise BadInputError(str(exc), field="labels") from None


def _finite_cap(value: Any) -> Any:
    """NaN and infinities are no cap (NaN compares false with everything): refused in our words, since
    pydantic's error would echo the NaN back in a body JSON cannot carry."""
    try:
        number = float(value) if isinstance(value, float | str) else None
    except ValueError:
        return value  # not a number: pydantic says so
    if number is not None and not math.isfinite(number):
        raise BadInputError(f"max_cost_usd must be a finite amount of USD above 0, got {value}", field="max_cost_usd")
    return value


def _checked_rules(value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    return None if value is None else check_rules(value)


ConversationIds = Annotated[list[str], Field(min_length=1, description="Conversation IDs to include")]

# Settings an experiment and a re-evaluation share: each defined once, here.
EvaluatorModel = Annotated[
    str | None, Field(min_length=1, description="Evaluator model (a litellm model string); without it replies are not evaluated")
]
EvaluatorApiBase = Annotated[str | None, Field(description="OpenAI-compatible base URL for the evaluator model")]
LabelsSetting = Annotated[
    Labels | None,
    AfterValidator(_checked_labels),
    Field(description="Evaluator labels; default: Fabrication, Context Misattribution, Reasoning Error, Incorrect Refusal"),
]
EvaluatorResponseFormat = Annotated[ResponseFormat, Field(description="Structured output mode for the evaluator")]
EvaluatorMaxTokens = Annotated[int | None, Field(ge=1, description="Cap on each evaluator reply (default 4096)")]
MaxCost = Annotated[
    Annotated[float, Field(gt=0)] | None,
    BeforeValidator(_finite_cap),
    Field(description="The experiment's budget in USD, stored with it: no item starts once its results would "
          "pass it (the rest stay pending, also across server restarts)"),
]
Rules = Annotated[list[dict[str, Any]] | None, AfterValidator(_checked_rules), Field(description="Rule evaluators (`--rules`)")]


def _check_evaluator(evaluator_model: str | None, evaluator_api_base: str | None) -> None:
    if evaluator_api_base and not evaluator_model:
        raise BadInputError("an evaluator API base needs an evaluator model", field="evaluator_model")


class ExperimentSettings(_Frozen):
    """An experiment's settings as the REST body carries them: the hosted API's fields, then this runner's
    endpoint, evaluator and budget settings. Validated here, once, whichever door they came through."""

    name: str = Field(min_length=1, max_length=255, description="Name of the experiment")
    model: str = Field(min_length=1, description="Target model to run inference with")
    pass_through: bool = Field(
        default=False,
        description="If true, copy existing responses instead of running inference. Useful for re-evaluating "
        "existing conversations without regenerating responses.",
    )
    conversation_ids: ConversationIds
    reasoning_config: dict[str, Any] | None = Field(default=None, description="Optional reasoning/thinking configuration for the model")
    system_prompt_override: str | None = Field(
        default=None, description="Optional system prompt to replace the original in all copied conversations"
    )
    output_schema: list[OutputField] | None = Field(default=None, description="Optional structured output schema for the model response")
    api_base: str | None = Field(
        default=None, description="OpenAI-compatible base URL for the target model (a local Ollama or vLLM server)"
    )
    evaluator_model: EvaluatorModel = None
    evaluator_api_base: EvaluatorApiBase = None
    labels: LabelsSetting = None
    response_format: ResponseFormat = Field(
        default="auto", description="Structured output mode for output_schema (auto learns what the server accepts)"
    )
    evaluator_response_format: EvaluatorResponseFormat = "auto"
    evaluator_max_tokens: EvaluatorMaxTokens = None
    max_cost_usd: MaxCost = None

    @field_validator("conversation_ids")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        """A conversation listed twice is run once (checked after the length limits, on what was given)."""
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """What the field types cannot say; runs once every field is valid, so each error names one field."""
        if not self.model.strip():
            raise BadInputError(WORDING["model"], field="model")
        config = self.reasoning_config
        if config is not None:
            unknown = set(config) - {"effort", "budget_tokens"}
            if unknown or ("effort" in config and config["effort"] not in EFFORTS):
                raise BadInputError(
                    "reasoning_config takes {\"effort\": \"low\"|\"medium\"|\"high\"} and/or {\"budget_tokens\": N}",
                    field="reasoning_config",
                )
        if self.output_schema is not None:
            check_fields([f.model_dump() for f in self.output_schema])  # the types known, each name once
        if self.pass_through and (self.reasoning_config or self.output_schema):
            raise BadInputError(
                "pass-through copies the existing replies, so reasoning and output schema settings would have no effect",
                field="pass_through",
            )
        _check_evaluator(self.evaluator_model, self.evaluator_api_base)
        return self


class ExperimentSpec(ExperimentSettings):
    """Everything that defines an experiment: the settings, plus the rules only the CLI takes (`--rules`)."""

    rules: Rules = None

    @field_validator("rules")
    @classmethod
    def _none_is_none(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        """No rules is `None`, as stored (a re-evaluation's `[]` means something else: drop the source's)."""
        return value or None

    @classmethod
    def of(cls, settings: ExperimentSettings) -> "ExperimentSpec":
        """The spec of settings validated already (a REST body): the same validators ran, so not again."""
        return cls.model_construct(**{name: getattr(settings, name) for name in ExperimentSettings.model_fields})

    @property
    def evaluates(self) -> bool:
        """Whether each reply gets an evaluation (by an evaluator model, by rules, or both)."""
        return bool(self.evaluator_model or self.rules)

    def called_models(self) -> list[str]:
        """The models a run calls: the target unless pass-through, and the evaluator."""
        models = [] if self.pass_through else [self.model]
        return models + ([self.evaluator_model] if self.evaluator_model else [])

    def evaluator(self) -> EvaluatorConfig | None:
        """Which model evaluates, where, with which labels and structured-output setting; None without one."""
        if not self.evaluator_model:
            return None
        labels = self.labels
        return EvaluatorConfig(
            model=self.evaluator_model,
            api_base=self.evaluator_api_base,
            labels=tuple(label.model_dump() for label in labels.labels) if labels else DEFAULT_LABELS,
            domain_context=labels.domain_context if labels else None,
            max_tokens=self.evaluator_max_tokens,
            response_format=self.evaluator_response_format,
        )

    def target_schema(self) -> dict[str, Any] | None:
        """The JSON schema the target's reply must match (`--output-schema`), or None."""
        return to_json_schema([f.model_dump() for f in self.output_schema]) if self.output_schema else None

    def hosted(self) -> HostedSettings:
        """The hosted API's settings, in its order (the export's `experiment` object)."""
        return cast(HostedSettings, self.model_dump(include=set(HostedSettings.__annotations__)))

    def to_row(
        self, *, experiment_id: str, created_at: str, source_experiment_id: str | None = None, runner: str | None = None
    ) -> Experiment:
        """The experiment row these settings are stored as: a column per setting, but the labels with the rules
        under `rules`, and the structured-output settings together (a run adds the mode it used)."""
        evaluator: dict[str, Any] = {"setting": self.evaluator_response_format}
        if self.evaluator_max_tokens:
            evaluator["max_tokens"] = self.evaluator_max_tokens
        labels = self.labels.model_dump(exclude_none=True) if self.labels else None
        if self.rules:
            labels = {**(labels or {}), "rules": self.rules}
        return Experiment(
            id=experiment_id,
            created_at=created_at,
            source_experiment_id=source_experiment_id,
            runner=runner,
            labels=labels,
            structured_output={"target": {"setting": self.response_format}, "evaluator": evaluator},
            **self.model_dump(exclude=set(PACKED)),
        )

    @classmethod
    def from_row(cls, row: Experiment) -> "ExperimentSpec":
        """The settings of a stored experiment (what `to_row` stored, older stores' rows included)."""
        labels = dict(row.labels or {})
        rules = labels.pop("rules", None)
        settings = row.structured_output or {}
        target, evaluator = settings.get("target") or {}, settings.get("evaluator") or {}
        values = {name: getattr(row, name) for name in cls.model_fields if name not in PACKED}
        try:
            return cls.model_validate(
                values | {
                    "labels": labels or None,
                    "rules": rules or None,
                    "response_format": target.get("setting") or "auto",
                    "evaluator_response_format": evaluator.get("setting") or "auto",
                    "evaluator_max_tokens": evaluator.get("max_tokens"),
                }
            )
        except (ValidationError, BadInputError) as exc:  # a row edited by hand, or written by a newer release
            where = ".".join(str(part) for part in exc.errors()[0]["loc"]) if isinstance(exc, ValidationError) else exc.field
            raise StoreError(f"experiment {row.id} has stored settings this release cannot read ({where})") from None


class ReevaluationSpec(_Frozen):
    """What `reevaluate` takes: how to evaluate an experiment's replies again, in a new experiment.

    `rules` None keeps the source's rules; `[]` drops them. `name` None: the source's name + " (re-evaluated)"."""

    name: str | None = Field(default=None, description="Name of the new experiment")
    evaluator_model: EvaluatorModel = None
    evaluator_api_base: EvaluatorApiBase = None
    labels: LabelsSetting = None
    evaluator_response_format: EvaluatorResponseFormat = "auto"
    evaluator_max_tokens: EvaluatorMaxTokens = None
    rules: Rules = None
    max_cost_usd: MaxCost = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_evaluator(self.evaluator_model, self.evaluator_api_base)
        return self

    def rules_for(self, source: ExperimentSpec) -> list[dict[str, Any]]:
        """The new experiment's rules: these, else the source's. Refused when it would evaluate nothing
        (no evaluator model and no rules)."""
        rules = self.rules if self.rules is not None else source.rules or []
        if not self.evaluator_model and not rules:
            raise BadInputError(["a re-evaluation needs an evaluator model or ", Named("rules")], field="evaluator_model")
        return rules

    def resolve(self, source: ExperimentSpec, conversation_ids: list[str], rules: list[dict[str, Any]]) -> ExperimentSpec:
        """The new experiment's spec: `source`'s replies (pass-through, its model and system prompt recorded),
        evaluated with these settings and `rules` (`rules_for`)."""
        own = self.model_dump(exclude={"name", "rules"})  # the same fields in the new experiment's spec
        return ExperimentSpec.from_input(own | {
            "name": self.name or f"{source.name} (re-evaluated)",
            "model": source.model,
            "conversation_ids": conversation_ids,
            "pass_through": True,
            "system_prompt_override": source.system_prompt_override,
            "rules": rules,
        })

"""Request and response bodies of the REST API: field names and descriptions as in the hosted experiments API."""

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experiment_runner.engine.experiments import ExperimentSpec
from experiment_runner.errors import BadInputError
from experiment_runner.evaluation.evaluator import check_labels


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt optional field is an error, not silently ignored


class OutputField(_Strict):
    """One field of the structured reply the target model must give."""

    name: str = Field(min_length=1, description="Field name")
    type: str = Field(description="string, integer, number, boolean or object")
    is_list: bool = Field(False, description="The field holds a list of that type")
    is_optional: bool = Field(False, description="The field may be null")


class Label(_Strict):
    """An issue label the evaluator may assign."""

    name: str = Field(min_length=1, description="Label name, as it appears in annotations")
    description: str = Field(min_length=1, description="What the label means, shown to the evaluator")


class Labels(_Strict):
    """The evaluator's labels (replacing the default four) and optional domain context."""

    labels: list[Label] = Field(min_length=1, description="Labels to use")
    domain_context: str | None = Field(None, description="Background on the domain, shown to the evaluator")


class CreateExperiment(_Strict):
    """Body of `POST /v1/experiments`: the hosted API's fields, then this runner's endpoint and evaluator settings."""

    name: str = Field(min_length=1, max_length=255, description="Name of the experiment")
    model: str = Field(min_length=1, description="Target model to run inference with")
    pass_through: bool = Field(
        False,
        description="If true, copy existing responses instead of running inference. Useful for re-evaluating "
        "existing conversations without regenerating responses.",
    )
    conversation_ids: list[str] = Field(min_length=1, max_length=100, description="Conversation IDs to include")
    reasoning_config: dict[str, Any] | None = Field(
        None, description="Optional reasoning/thinking configuration for the model"
    )
    system_prompt_override: str | None = Field(
        None, description="Optional system prompt to replace the original in all copied conversations"
    )
    output_schema: list[OutputField] | None = Field(
        None, description="Optional structured output schema for the model response"
    )
    api_base: str | None = Field(
        None, description="OpenAI-compatible base URL for the target model (a local Ollama or vLLM server)"
    )
    evaluator_model: str | None = Field(
        None, min_length=1, description="Evaluator model (a litellm model string); without it replies are not evaluated"
    )
    evaluator_api_base: str | None = Field(None, description="OpenAI-compatible base URL for the evaluator model")
    labels: Labels | None = Field(
        None,
        description="Evaluator labels; default: Fabrication, Context Misattribution, Reasoning Error, "
        "Incorrect Refusal",
    )
    response_format: Literal["auto", "json_schema", "json_object", "prompt"] = Field(
        "auto", description="Structured output mode for output_schema (auto learns what the server accepts)"
    )
    evaluator_response_format: Literal["auto", "json_schema", "json_object", "prompt"] = Field(
        "auto", description="Structured output mode for the evaluator"
    )
    evaluator_max_tokens: int | None = Field(None, ge=1, description="Cap on each evaluator reply (default 4096)")
    max_cost_usd: float | None = Field(
        None, gt=0, description="The experiment's budget in USD, stored with it: no item starts once its results would "
        "pass it (the rest stay pending, also across server restarts)"
    )
    max_cost_unpriced_ok: bool = Field(False, description="Allow max_cost_usd when a model has no known price")

    @field_validator("max_cost_usd", mode="before")
    @classmethod
    def _finite_cap(cls, value: Any) -> Any:
        """NaN and infinities are no cap (NaN compares false with everything): refuse them as a 422 of our own
        shape, since pydantic's error would echo the NaN back in a body JSON cannot carry."""
        try:
            number = float(value) if isinstance(value, float | str) else None
        except ValueError:
            return value  # not a number: pydantic says so
        if number is not None and not math.isfinite(number):
            raise BadInputError(f"max_cost_usd must be a finite amount of USD above 0, got {value}", loc=("body", "max_cost_usd"))
        return value

    def to_spec(self) -> ExperimentSpec:
        """The experiment settings; labels are checked here (`check_spec` does the rest)."""
        labels = None
        if self.labels is not None:
            try:
                labels = check_labels(self.labels.model_dump(exclude_none=True))
            except BadInputError as exc:
                raise BadInputError(str(exc), loc=("body", "labels")) from None
        return ExperimentSpec(
            name=self.name,
            model=self.model,
            conversation_ids=self.conversation_ids,
            pass_through=self.pass_through,
            system_prompt_override=self.system_prompt_override,
            reasoning_config=self.reasoning_config,
            output_schema=[f.model_dump() for f in self.output_schema] if self.output_schema is not None else None,
            api_base=self.api_base,
            evaluator_model=self.evaluator_model,
            evaluator_api_base=self.evaluator_api_base,
            labels=labels,
            response_format=self.response_format,
            evaluator_response_format=self.evaluator_response_format,
            evaluator_max_tokens=self.evaluator_max_tokens,
            max_cost_usd=self.max_cost_usd,
        )


class ErrorDetail(BaseModel):
    """An error that is not about one field: `{"detail": "..."}`."""

    detail: str


class ImportResponse(BaseModel):
    """What `POST /v1/conversations` stored."""

    ids: list[str] = Field(description="The conversation ids, in body order (assigned ones included)")
    new: int = Field(description="Conversations stored now")
    unchanged: int = Field(description="Conversations already stored with the same content")
    duplicates: int = Field(
        0, description="Conversations the body repeats (same id and content), counted once; new + unchanged + duplicates = len(ids)"
    )



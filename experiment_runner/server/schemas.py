"""Request and response bodies of the REST API: field names and descriptions as in the hosted experiments API."""

from typing import Annotated

from pydantic import BaseModel, Field

from experiment_runner.engine.spec import ConversationIds, ExperimentSettings, ExperimentSpec

MAX_CONVERSATIONS = 100  # the hosted API's limit on one request; the CLI takes any number


# The experiment's settings are `engine.spec`'s: FastAPI parses the body with the spec's own validators
# (a `BadInputError` they raise is a 422 naming the field), and `spec()` hands them on unchecked-again.
class CreateExperiment(ExperimentSettings):
    """Body of `POST /v1/experiments`: the hosted API's fields, then this runner's endpoint and evaluator settings."""

    conversation_ids: Annotated[ConversationIds, Field(max_length=MAX_CONVERSATIONS)]
    max_cost_unpriced_ok: bool = Field(default=False, description="Allow max_cost_usd when a model has no known price")

    def spec(self) -> ExperimentSpec:
        """The experiment's spec (checked already, with the body)."""
        return ExperimentSpec.of(self)


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



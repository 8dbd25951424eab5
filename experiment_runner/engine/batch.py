"""Provider batch jobs through litellm's batch API: which providers, submit, retrieve, read result files.

litellm (1.106) exposes `acreate_file(file, purpose, custom_llm_provider, ...)`, `acreate_batch(
completion_window, endpoint, input_file_id, custom_llm_provider, ...)`, `aretrieve_batch(batch_id,
custom_llm_provider, ...)` and `afile_content(file_id, custom_llm_provider, ...)`, each taking `api_base`
and `api_key` keywords. The providers it can batch are read from those signatures (the `Literal` of
`custom_llm_provider` every one of the four accepts), so a new litellm release widens the set by itself;
Anthropic is not among them (litellm's SDK cannot create its batches). litellm is reached through
`llm.litellm_module()` (its lazy import and offline settings); this module never calls a chat endpoint.
Costs are litellm's batch prices (`cost_calculator.batch_cost_calculator`) where it knows the model.
"""

import inspect
import json
import logging
import typing
from dataclasses import dataclass

from experiment_runner.conversation import JSONObject
from experiment_runner.engine.failures import classify
from experiment_runner.engine.llm import credentials, litellm_module
from experiment_runner.errors import BadInputError, ModelCallError

logger = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_FALLBACK_PROVIDERS = frozenset({"openai", "azure", "vertex_ai", "bedrock", "hosted_vllm", "litellm_proxy", "mistral"})


def batch_providers() -> frozenset[str]:
    """The providers every one of litellm's four batch functions accepts."""
    litellm = litellm_module()
    found: frozenset[str] | None = None
    for function in (litellm.acreate_file, litellm.acreate_batch, litellm.aretrieve_batch, litellm.afile_content):
        try:
            annotation = inspect.signature(function).parameters["custom_llm_provider"].annotation
            names = frozenset(a for a in typing.get_args(annotation) if isinstance(a, str))
        except (KeyError, TypeError, ValueError):
            names = frozenset()
        if not names:  # a litellm whose signatures say nothing: the set of the version this was written for
            return _FALLBACK_PROVIDERS
        found = names if found is None else found & names
    return found or _FALLBACK_PROVIDERS


def batch_provider(model: str, role: str) -> tuple[str, str]:
    """(litellm provider, the model name the provider knows) for a batchable model, else `BadInputError`."""
    try:
        name, provider, _, _ = litellm_module().get_llm_provider(model)
    except Exception:  # noqa: BLE001  (litellm raises BadRequestError with a long help text)
        raise BadInputError(f"{role} {model!r}: litellm knows no provider for it") from None
    providers = batch_providers()
    if provider not in providers:
        raise BadInputError(
            f"--batch: litellm cannot run batch jobs for {provider} models ({role} {model}); "
            f"batch providers: {', '.join(sorted(providers))}"
        )
    return provider, name


@dataclass(frozen=True)
class BatchState:
    """What the provider says about a job now."""

    status: str
    output_file_id: str | None
    error_file_id: str | None
    error: str | None  # the batch-level errors, in one line

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


def _kwargs(provider: str, model: str, api_base: str | None) -> dict[str, str]:
    return {"custom_llm_provider": provider, **credentials(model, api_base)}


async def submit(provider: str, model: str, api_base: str | None, lines: list[JSONObject]) -> tuple[str, str, str]:
    """Upload the requests as JSONL and create the job; (input file id, batch id, status). Raises `ModelCallError`."""
    litellm = litellm_module()
    data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    kwargs = _kwargs(provider, model, api_base)
    try:
        uploaded = await litellm.acreate_file(file=("requests.jsonl", data, "application/jsonl"), purpose="batch", **kwargs)
        created = await litellm.acreate_batch(completion_window="24h", endpoint=ENDPOINT, input_file_id=uploaded.id, **kwargs)
    except Exception as exc:  # noqa: BLE001  (litellm raises many types)
        raise _failure("submitting the batch job", exc, api_base) from None
    return str(uploaded.id), str(created.id), str(created.status)


async def retrieve(provider: str, model: str, api_base: str | None, batch_id: str) -> BatchState:
    """The job's status and result files now."""
    try:
        batch = await litellm_module().aretrieve_batch(batch_id=batch_id, **_kwargs(provider, model, api_base))
    except Exception as exc:  # noqa: BLE001
        raise _failure(f"retrieving batch {batch_id}", exc, api_base) from None
    errors = getattr(batch, "errors", None)
    data = getattr(errors, "data", None) or []
    message = "; ".join(str(getattr(e, "message", None) or e) for e in data) or None
    return BatchState(str(batch.status), batch.output_file_id, batch.error_file_id, message)


async def result_lines(provider: str, model: str, api_base: str | None, file_id: str | None) -> list[JSONObject]:
    """The JSON lines of a result file (none for no file)."""
    if not file_id:
        return []
    try:
        content = await litellm_module().afile_content(file_id=file_id, **_kwargs(provider, model, api_base))
    except Exception as exc:  # noqa: BLE001
        raise _failure(f"reading result file {file_id}", exc, api_base) from None
    raw = content.content if hasattr(content, "content") else bytes(content)
    lines = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("skipping a result line that is not JSON in %s", file_id)
    return lines


def _failure(what: str, exc: BaseException, api_base: str | None) -> ModelCallError:
    failure = classify(exc, api_base)
    return ModelCallError(f"{what}: {failure}", retryable=failure.retryable, systematic=failure.systematic)


def batch_cost(model: str, input_tokens: int | None, output_tokens: int | None) -> tuple[float | None, float | None]:
    """(cost at litellm's batch price, cost at its normal price) of one request; None where it has no price."""
    litellm = litellm_module()
    prompt, completion = input_tokens or 0, output_tokens or 0
    try:
        normal = sum(litellm.cost_per_token(model=model, prompt_tokens=prompt, completion_tokens=completion))
    except Exception:  # noqa: BLE001  (the model has no known price)
        return None, None
    try:
        usage = litellm.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        batched = sum(litellm.cost_calculator.batch_cost_calculator(usage=usage, model=model))
    except Exception:  # noqa: BLE001  (no batch price: half the normal one, litellm's own default)
        batched = normal / 2
    return float(batched), float(normal)

"""The UI's actions: start a run from a form (with the dry-run estimate first), resume, delete with confirmation.

Starting and deleting call the REST API's own handlers (`routes.create`, `routes.delete`) with the body
the form describes, so a run started here passes exactly the checks, the model preflight, the allow-list
of endpoints and the estimate that `POST /v1/experiments` applies, and runs in the same background runner.
"""

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from experiment_runner.conversation import JSONObject
from experiment_runner.engine.estimate import EstimateDict
from experiment_runner.engine.experiments import EFFORTS, get_experiment
from experiment_runner.engine.structured import SETTINGS
from experiment_runner.errors import BadInputError, ExperimentRunnerError
from experiment_runner.results import browse
from experiment_runner.results.catalog import experiment_summary
from experiment_runner.server import routes
from experiment_runner.server.schemas import CreateExperiment
from experiment_runner.server.ui.pages import running_ids, ui_errors
from experiment_runner.server.ui.rendering import page
from experiment_runner.server.ui.session import form_fields, same_origin

MAX_CONVERSATIONS = 100  # what POST /v1/experiments takes (the hosted API's limit)
TEXT_FIELDS = ("name", "model", "api_base", "evaluator_model", "evaluator_api_base", "system_prompt_override",
               "response_format", "evaluator_response_format", "reasoning_effort", "max_cost_usd",
               "evaluator_max_tokens", "output_schema", "labels", "conversations")
FIELD_TITLES = {
    "name": "Name", "model": "Target model", "conversation_ids": "Conversations", "api_base": "Target API base",
    "evaluator_model": "Evaluator model", "evaluator_api_base": "Evaluator API base", "pass_through": "Pass-through",
    "system_prompt_override": "System prompt", "reasoning_config": "Reasoning effort", "output_schema": "Output schema",
    "labels": "Labels", "max_cost_usd": "Budget", "evaluator_max_tokens": "Evaluator max tokens",
    "response_format": "Response format", "evaluator_response_format": "Evaluator response format",
}

router = APIRouter(include_in_schema=False)


@dataclass
class RunForm:
    """What the new-run form holds: the fields as typed, the chosen conversations, and what went wrong."""

    values: dict[str, str] = field(default_factory=lambda: {"conversations": "all", "response_format": "auto", "evaluator_response_format": "auto"})
    chosen: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, fields: dict[str, list[str]]) -> "RunForm":
        values = {name: (fields.get(name) or [""])[0].strip() for name in TEXT_FIELDS}
        flags = {name for name in ("pass_through", "max_cost_unpriced_ok") if fields.get(name)}
        return cls(values, [c for c in fields.get("conversation_ids", []) if c], flags)


def _json_field(form: RunForm, name: str) -> Any:
    text = form.values.get(name, "")
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        form.errors.append(f"{FIELD_TITLES[name]}: not valid JSON ({exc.msg} at line {exc.lineno})")
        return None


def request_body(form: RunForm, all_ids: list[str]) -> JSONObject:  # checked by `CreateExperiment`
    """The `POST /v1/experiments` body the form describes (empty fields left out)."""
    v = form.values
    ids = all_ids if v.get("conversations") == "all" else form.chosen
    body: JSONObject = {"name": v["name"], "model": v["model"], "conversation_ids": ids, "pass_through": "pass_through" in form.flags}
    for name in ("api_base", "evaluator_model", "evaluator_api_base", "system_prompt_override"):
        if v.get(name):
            body[name] = v[name]
    for name in ("response_format", "evaluator_response_format"):
        body[name] = v.get(name) or "auto"
    if v.get("reasoning_effort"):
        body["reasoning_config"] = {"effort": v["reasoning_effort"]}
    for name in ("max_cost_usd", "evaluator_max_tokens"):
        if v.get(name):
            body[name] = v[name]  # pydantic checks the number
    body["max_cost_unpriced_ok"] = "max_cost_unpriced_ok" in form.flags
    for name in ("output_schema", "labels"):
        if (value := _json_field(form, name)) is not None:
            body[name] = value
    return body


def _validation_messages(exc: ValidationError) -> list[str]:
    messages = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if part != "body"]
        title = FIELD_TITLES.get(loc[0], loc[0]) if loc else "Form"
        messages.append(f"{title}{' (' + '.'.join(loc[1:]) + ')' if loc[1:] else ''}: {error['msg']}")
    return messages


def _bad_input_message(exc: BadInputError) -> str:
    loc = [str(part) for part in exc.loc if part != "body"]
    return f"{FIELD_TITLES.get(loc[0], loc[0])}: {exc}" if loc else str(exc)


async def _conversation_ids(request: Request) -> list[browse.ConversationRow]:
    found = await anyio.to_thread.run_sync(
        lambda: browse.search_conversations(request.app.state.store, limit=10_000)
    )
    return found.rows


def _form_page(request: Request, form: RunForm, conversations: list[browse.ConversationRow], *, estimate: EstimateDict | None = None, status_code: int = 200) -> Response:
    return page(
        request, "new_run.html.j2", status_code=status_code, form=form, conversations=conversations,
        estimate=estimate, efforts=EFFORTS, formats=SETTINGS, max_conversations=MAX_CONVERSATIONS,
    )


@router.get("/ui/runs/new", response_class=HTMLResponse)
async def new_run(request: Request) -> Response:
    """The form that starts a run (a `conversation` query parameter preselects conversations)."""
    form = RunForm()
    chosen = request.query_params.getlist("conversation")
    if chosen:
        form.values["conversations"], form.chosen = "chosen", chosen
    return _form_page(request, form, await _conversation_ids(request))


@router.post("/ui/runs/new", response_class=HTMLResponse)
async def start_run(request: Request) -> Response:
    """`action=estimate`: the dry run's estimate, nothing stored; `action=start`: create and run, then its page."""
    same_origin(request)
    fields = await form_fields(request)
    form = RunForm.parse(fields)
    conversations = await _conversation_ids(request)
    body = request_body(form, [c.id for c in conversations])
    dry_run = (fields.get("action") or ["estimate"])[0] != "start"
    if form.errors:
        return _form_page(request, form, conversations, status_code=400)
    try:
        payload = CreateExperiment.model_validate(body)
        response = await routes.create(
            body=payload, store=request.app.state.store, runs=request.app.state.runs, request=request, dry_run=dry_run
        )
    except ValidationError as exc:
        form.errors += _validation_messages(exc)
    except BadInputError as exc:
        form.errors.append(_bad_input_message(exc))
    except HTTPException as exc:
        form.errors.append(str(exc.detail))
    except ExperimentRunnerError as exc:
        form.errors.append(str(exc))
    if form.errors:
        return _form_page(request, form, conversations, status_code=400)
    created = json.loads(bytes(response.body))
    if dry_run:
        return _form_page(request, form, conversations, estimate=created)
    return RedirectResponse(f"/ui/experiments/{created['id']}?notice=started", status_code=303)


@router.post("/ui/experiments/{experiment_id}/resume")
@ui_errors
async def resume(request: Request, experiment_id: str) -> Response:
    """Run the experiment's unfinished items in the background (as the server does at startup)."""
    same_origin(request)
    await anyio.to_thread.run_sync(get_experiment, request.app.state.store, experiment_id)  # unknown: 404 page
    runs = request.app.state.runs
    if not runs.active:
        raise BadInputError("the server is starting or shutting down; try again")
    runs.start(experiment_id)
    return RedirectResponse(f"/ui/experiments/{experiment_id}?notice=resumed", status_code=303)


@router.get("/ui/experiments/{experiment_id}/delete", response_class=HTMLResponse)
@ui_errors
async def confirm_delete(request: Request, experiment_id: str) -> Response:
    """Ask before deleting: what goes (items, results, evaluations), what stays (the conversations), and
    whether a run is stopped first (this server's) or must be stopped first (another process's)."""
    summary = await anyio.to_thread.run_sync(experiment_summary, request.app.state.store, experiment_id)
    here = experiment_id in request.app.state.runs.running()
    elsewhere = not here and experiment_id in await running_ids(request)
    return page(request, "delete.html.j2", e=summary, run_here=here, run_elsewhere=elsewhere)


@router.post("/ui/experiments/{experiment_id}/delete")
@ui_errors
async def delete(request: Request, experiment_id: str) -> Response:
    """Delete the experiment (stopping this server's run of it) as `DELETE /v1/experiments/ID` does, then back
    to the list; 409 naming the runner while another process runs it."""
    same_origin(request)
    await routes.delete(experiment_id=routes.experiment_id_path(experiment_id), store=request.app.state.store, runs=request.app.state.runs)
    return RedirectResponse("/?notice=deleted", status_code=303)

"""The HTML report: one self-contained file (inline CSS and JS, no network) to open from disk and share.

Design: every item card (history, reply with highlights, annotations) is rendered once in Python, with
`highlight.py` as the only producer of highlight markup, and embedded in the page as a JSON data blob
(`<script type="application/json">`, every `<` escaped as `\\u003c`, so no `</script>`). The page's script
only filters that list and inserts the cards of the current page (50 by default) with `innerHTML`:
it never builds markup from data. So a 5,000-item report keeps a DOM of 50 cards (pre-rendering them
all, even with `content-visibility:auto`, would make the browser parse and lay out thousands of
cards up front and search/filter by toggling thousands of nodes). A Content-Security-Policy allows
the page's own script only (by hash) and no network at all.

The data is the export (`export_chunks`, parsed), so the report shows exactly what `export` gives,
plus the evaluator settings of `experiment_summary`. `render_report` is pure (export dicts in, HTML out).
"""

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from experiment_runner.conversation import Annotation, JSONObject, Message
from experiment_runner.files import check_output_path, write_text_atomic
from experiment_runner.report.highlight import annotation_location, label_class, label_colour, parts_view
from experiment_runner.results.catalog import experiment_summary
from experiment_runner.results.compare import ItemLabels, compare_summaries
from experiment_runner.results.documents import ExportDocument, ExportEvaluation
from experiment_runner.results.export import export_chunks, target_cost
from experiment_runner.results.vocabulary import COUNTS, METRICS
from experiment_runner.store import Store

PER_PAGE = 50
HISTOGRAM_BINS = 20
TEMPLATE = "report.html.j2"
SETTINGS_KEYS = ("evaluator_model", "labels", "api_base", "source_experiment_id", "evaluation_summary", "structured_output", "cache")
# metric (or count) key -> (title, format used by the template's `fmt` macro), from the one vocabulary
METRIC_NAMES: dict[str, tuple[str, str]] = {m.key: (m.title, m.format) for m in (*COUNTS, *METRICS) if m.numeric}
METRIC_CARDS = (  # tokens are in their own panel
    "issue_rate", "total_issues", "avg_issues_per_evaluated_message", "issue_free_message_count",
    "avg_response_latency_ms", "max_response_latency_ms", "total_generation_time_ms", "cost_per_1k",
)

Doc = Mapping[str, Any]


def load_document(store: Store, experiment_id: str) -> ExportDocument:
    """The export of an experiment, its `experiment` object completed with the evaluator settings."""
    document: ExportDocument = json.loads("".join(export_chunks(store, experiment_id)))
    summary = experiment_summary(store, experiment_id)
    cast(JSONObject, document["experiment"]).update({key: summary.get(key) for key in SETTINGS_KEYS})
    return document


def render_page(store: Store, experiment_id: str, *, compare_id: str | None = None) -> str:
    """The report's HTML of an experiment (side by side with `compare_id` if given)."""
    document = load_document(store, experiment_id)
    other = load_document(store, compare_id) if compare_id else None
    return render_report(document, other)


def write_report(store: Store, experiment_id: str, path: str | Path, *, compare_id: str | None = None) -> Path:
    """Write the report of an experiment (side by side with `compare_id` if given) to `path`, atomically.

    The path is checked first (`check_output_path`), so a FIFO or a device is refused before the work."""
    check_output_path(Path(path))
    write_text_atomic(Path(path), [render_page(store, experiment_id, compare_id=compare_id)])
    return Path(path)


# --- items -----------------------------------------------------------------------------------------


def _reply(item: Doc) -> Message | None:
    result = item.get("result_conversation")
    return result["messages"][-1] if result and result["messages"] else None


def _evaluated(item: Doc, evaluations: Doc) -> tuple[Message | None, ExportEvaluation | None, list[Annotation] | None]:
    """(final message, its evaluation, the evaluation's annotations if it completed, else None)."""
    reply = _reply(item)
    evaluation = evaluations.get(reply["id"]) if reply else None
    if evaluation is None or evaluation["status"] != "completed":
        return reply, evaluation, None
    return reply, evaluation, evaluation["annotations"]


def item_side(item: Doc, evaluations: Doc) -> dict[str, Any]:
    """One experiment's view of an item: status, error, evaluation, highlighted reply, annotations."""
    reply, evaluation, found = _evaluated(item, evaluations)
    annotations = found or []
    parts = reply["parts"] if reply else []
    views, unplaced = parts_view(parts, annotations)
    labels: dict[str, int] = {}
    for a in annotations:
        labels[a["label"]] = labels.get(a["label"], 0) + 1
    return {
        "status": item["status"],
        "error": item.get("error_message"),
        "evaluation": evaluation,
        "reply": reply,
        "parts": views,
        "annotations": [
            {**a, "where": annotation_location(parts, a), "placed": a["id"] not in unplaced}
            for a in annotations
        ],
        "labels": dict(sorted(labels.items())),
        "issues": None if found is None else len(found),
        "generation": _generation_line(reply.get("generation") if reply else None),
    }


def _generation_line(generation: Mapping[str, Any] | None) -> str:
    """`gpt-4o-mini · 640 ms · 120 → 31 tokens · $0.000037` from a message's generation metadata."""
    if not generation:
        return ""
    get = generation.get
    bits = [str(get("model")) if get("model") else ""]
    bits.append(f"{_number(get('latency_ms'))} ms" if get("latency_ms") is not None else "")
    if get("input_tokens") is not None or get("output_tokens") is not None:
        bits.append(f"{_number(get('input_tokens'))} → {_number(get('output_tokens'))} tokens")
    bits.append(f"${get('cost_usd'):.6f}" if isinstance(get("cost_usd"), (int, float)) else "")
    return " · ".join(bit for bit in bits if bit)


def history_view(item: Doc) -> list[dict[str, Any]]:
    """The messages before the reply (the result's, else the source's), each with its parts' views."""
    result = item.get("result_conversation")
    messages = result["messages"][:-1] if result else item["source_conversation"]["messages"]
    return [{"role": m["role"], "parts": parts_view(m["parts"])[0]} for m in messages]


def _by_source(document: Doc) -> dict[str, Doc]:
    return {item["source_conversation"]["id"]: item for item in document["items"]}


def item_labels(document: Doc) -> ItemLabels:
    """The labels of each source conversation's spans (None when not evaluated), from an export document."""
    labels: dict[str, list[str] | None] = {}
    for source, item in _by_source(document).items():
        found = _evaluated(item, document["evaluations"])[2]
        labels[source] = None if found is None else [a["label"] for a in found]
    return labels


def _failed(side: Mapping[str, Any]) -> bool:
    """The item failed, or its evaluation did."""
    return side["status"] == "failed" or (side["evaluation"] or {}).get("status") == "failed"


def _rows(documents: list[Doc]) -> list[dict[str, Any]]:
    """One row per source conversation: its history and each experiment's side (None when absent)."""
    indexed = [_by_source(d) for d in documents]
    order = list(dict.fromkeys(source for items in indexed for source in items))
    rows = []
    for position, source in enumerate(order, start=1):
        items = [items.get(source) for items in indexed]
        first = next(item for item in items if item is not None)
        sides = [item_side(item, d["evaluations"]) if item else None for item, d in zip(items, documents, strict=True)]
        present = [s for s in sides if s is not None]
        issues = [s["issues"] for s in present]
        rows.append(
            {
                "position": position,
                "source": source,
                "history": history_view(first),
                "sides": sides,
                "meta": {
                    "l": sorted({label for s in present for label in s["labels"]}),
                    "n": sum(n or 0 for n in issues),
                    "f": int(any(_failed(s) for s in present)),
                    "c": int(len(present) == 2 and None not in issues and issues[0] != issues[1]),
                },
            }
        )
    return rows


# --- charts ---------------------------------------------------------------------------------------


def latencies(document: Doc) -> list[float]:
    """`latency_ms` of the final assistant message of every completed item (as the metrics use)."""
    values = []
    for item in document["items"]:
        result = item.get("result_conversation")
        if item["status"] != "completed" or not result:
            continue
        replies = [m for m in result["messages"] if m["role"] == "assistant"]
        latency = (replies[-1].get("generation") or {}).get("latency_ms") if replies else None
        if isinstance(latency, (int, float)) and not isinstance(latency, bool):
            values.append(float(latency))
    return values


def histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Equal-width bins over [min, max] with heights in % of the fullest bin, and p50/p90/p99."""
    if not values:
        return {"bins": [], "count": 0}
    ordered = sorted(values)
    lo, hi = ordered[0], ordered[-1]
    width = (hi - lo) / bins if hi > lo else 1.0
    counts = [0] * (bins if hi > lo else 1)
    for v in ordered:
        counts[min(int((v - lo) / width), len(counts) - 1)] += 1
    peak = max(counts)

    def rank(p: float) -> float:  # nearest-rank percentile
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {
        "bins": [
            {"lo": lo + i * width, "hi": lo + (i + 1) * width, "count": c, "height": 100 * c / peak}
            for i, c in enumerate(counts)
        ],
        "count": len(ordered),
        "min": lo,
        "max": hi,
        "p50": rank(0.5),
        "p90": rank(0.9),
        "p99": rank(0.99),
    }


def label_bars(experiment: Doc) -> list[dict[str, Any]]:
    """Issues per label (configured labels first, zero counts included) with bar widths in %."""
    found = experiment["metrics"]["issue_labels"]
    names = list(dict.fromkeys([*(experiment.get("labels") or []), *found]))
    peak = max(found.values(), default=0)
    total = sum(found.values())
    return [
        {
            "label": name,
            "count": found.get(name, 0),
            "share": found.get(name, 0) / total if total else 0.0,
            "width": 100 * found.get(name, 0) / peak if peak else 0.0,
        }
        for name in names
    ]


# --- the page ---------------------------------------------------------------------------------------


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _signed(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    text = _number(value, 0 if isinstance(value, int) else digits)
    return text if text.startswith("-") or value == 0 else "+" + text


def script_json(value: Any) -> str:
    """JSON safe inside `<script type="application/json">`: every `<` escaped, so no `</script` or `<!--`."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def csp_hash(script: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script."""
    return "sha256-" + base64.b64encode(hashlib.sha256(str(script).encode("utf-8")).digest()).decode()


def template_environment(package: str, **filters: Any) -> Any:
    """A Jinja2 environment over `package`'s templates/ (the report's, the web UI's): autoescaping on, an
    undefined name an error, block tags trimmed, with `filters`. Jinja2 is imported here only."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(filters)
    return env


def _environment() -> Any:
    return template_environment(
        "experiment_runner.report",
        num=_number,
        signed=_signed,
        colour=label_colour,
        css=label_class,
        csp_hash=csp_hash,
        script_json=script_json,
        when=lambda stamp: stamp[:19].replace("T", " ") + " UTC",
    )


def _experiment_view(document: Doc) -> dict[str, Any]:
    """The experiment object (evaluator settings None when the document is a plain export) and its charts."""
    experiment = {**dict.fromkeys(SETTINGS_KEYS), **document["experiment"]}
    return {**experiment, "label_bars": label_bars(experiment), "latency": histogram(latencies(document)), "cost": target_cost(experiment)}


def render_report(document: Doc, other: Doc | None = None, *, per_page: int = PER_PAGE) -> str:
    """The report's HTML for an export document (side by side with `other`, an export too, if given)."""
    documents = [document] if other is None else [document, other]
    template = _environment().get_template(TEMPLATE)
    comparison = None
    if other is not None:
        comparison = compare_summaries(
            document["experiment"], other["experiment"], item_labels(document), item_labels(other)
        )
    rows = _rows(documents)
    labels = sorted({label for row in rows for label in row["meta"]["l"]} | {
        label for d in documents for label in d["experiment"].get("labels") or []
    })
    page: str = template.render(
        experiments=[_experiment_view(d) for d in documents],
        comparison=comparison,
        rows=rows,
        labels=labels,
        per_page=per_page,
        metric_names=METRIC_NAMES,
        metric_cards=METRIC_CARDS,
    )
    return page

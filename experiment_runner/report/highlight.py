"""Highlighted HTML of strings and message parts with labelled spans; a stable colour per label (pure).

Offsets are end-exclusive Python `str` indices (code points), the same as the export's annotation
offsets, so an emoji or a CJK character counts as one. The text is cut at every span boundary; each
segment covered by at least one span becomes one `<mark>` listing every span that covers it, so
overlapping and nested spans never produce interleaved tags. Everything that comes from the data
is HTML-escaped: text as text (`&`, `<`, `>`), and labels, explanations and ids in attributes with
their quotes too.

`parts_view` applies this to a message: each text/reasoning part's `content`, and each tool call
parameter's value (`spans.part_target`: a string as-is, anything else as compact JSON), gets the
annotations that point into it; annotations whose offsets do not fit their target are reported back.
"""

import html
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Required, TypedDict, cast

from experiment_runner import jsonlimits
from experiment_runner.conversation import Annotation, JSONObject, Part, ToolCallPart
from experiment_runner.evaluation.spans import TEXT_PART_TYPES, part_target


@dataclass(frozen=True)
class LabelColour:
    """A label's highlight background and its strong colour (chips, bars, underlines)."""

    background: str
    strong: str


DEFAULT_COLOURS: dict[str, LabelColour] = {
    "Fabrication": LabelColour("#fecaca", "#dc2626"),
    "Context Misattribution": LabelColour("#fde68a", "#b45309"),
    "Reasoning Error": LabelColour("#bfdbfe", "#1d4ed8"),
    "Incorrect Refusal": LabelColour("#ddd6fe", "#6d28d9"),
}


def label_colour(label: str) -> LabelColour:
    """The fixed colour of a default label, else one derived from a stable hash of the label's name."""
    if label in DEFAULT_COLOURS:
        return DEFAULT_COLOURS[label]
    hue = zlib.crc32(label.encode("utf-8")) % 360
    return LabelColour(f"hsl({hue} 85% 84%)", f"hsl({hue} 70% 35%)")


def label_class(label: str) -> str:
    """A CSS class naming a label: `lbl-context-misattribution`."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    return f"lbl-{slug or 'x'}"


@dataclass(frozen=True)
class HighlightSpan:
    """A labelled range `text[start:end]` to mark."""

    start: int
    end: int
    label: str
    explanation: str | None = None
    annotation_id: str | None = None


def span_fits(span: HighlightSpan, text: str) -> bool:
    """Whether the span marks at least one character inside `text`."""
    return 0 <= span.start < span.end <= len(text)


def _background(labels: Sequence[str]) -> str:
    """One colour, or horizontal bands of every covering label's colour when spans overlap."""
    colours = list(dict.fromkeys(label_colour(label).background for label in labels))
    if len(colours) == 1:
        return f"background:{colours[0]}"
    step = 100 / len(colours)
    bands = ",".join(f"{c} {i * step:.0f}% {(i + 1) * step:.0f}%" for i, c in enumerate(colours))
    return f"background:linear-gradient({bands})"


def _mark(segment: str, covering: Sequence[HighlightSpan]) -> str:
    esc = html.escape
    labels = list(dict.fromkeys(s.label for s in covering))
    classes = " ".join(["hl", *(label_class(label) for label in labels)] + (["hl-overlap"] if len(covering) > 1 else []))
    title = "\n".join(f"{s.label}: {s.explanation}" if s.explanation else s.label for s in covering)
    ids = " ".join(s.annotation_id for s in covering if s.annotation_id)
    return (
        f'<mark class="{esc(classes)}" data-labels="{esc("|".join(labels))}" data-depth="{len(covering)}"'
        + (f' data-ann="{esc(ids)}"' if ids else "")
        + f' title="{esc(title)}" style="{esc(_background(labels))}">{escape_text(segment)}</mark>'
    )


def escape_text(text: str) -> str:
    """`text` escaped for an HTML text node (`&`, `<`, `>`; quotes are inert there)."""
    return html.escape(text, quote=False)


def highlight(text: str, spans: Sequence[HighlightSpan]) -> str:
    """Escaped HTML of `text` with a `<mark>` over every segment that one or more spans cover.

    Spans must satisfy `0 <= start <= end <= len(text)` (`ValueError` otherwise); empty spans mark nothing.
    """
    for span in spans:
        if not 0 <= span.start <= span.end <= len(text):
            raise ValueError(f"span {span.start}..{span.end} is outside a text of length {len(text)}")
    live = [s for s in spans if s.start < s.end]
    cuts = sorted({0, len(text), *(s.start for s in live), *(s.end for s in live)})
    out: list[str] = []
    for start, end in pairwise(cuts):
        segment = text[start:end]
        covering = [s for s in live if s.start <= start and end <= s.end]
        out.append(_mark(segment, covering) if covering else escape_text(segment))
    return "".join(out)


# --- message parts --------------------------------------------------------------------------------


class ParamView(TypedDict):
    name: str
    html: str


class PartView(TypedDict, total=False):
    """What the template shows for a part: its `kind`, then its marked-up `html` (text, reasoning), its
    tool's `name`, `params` and `whole` marked-up arguments (tool call), or its `text` (anything else)."""

    kind: Required[str]
    html: str
    name: str | None
    params: list[ParamView]
    whole: str | None
    text: str


def _arguments(part: Part) -> JSONObject | None:
    arguments = part.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = jsonlimits.loads(arguments)
        except ValueError:
            return None
    return arguments if isinstance(arguments, dict) else None


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)


def _span_key(parts: list[Part], annotation: Mapping[str, Any]) -> tuple[int, str | None]:
    index = annotation["message_part_index"]
    is_tool_call = 0 <= index < len(parts) and parts[index].get("type") == "tool_call"
    return index, annotation.get("parameter_name") if is_tool_call else None


def _place(
    parts: list[Part], annotations: Sequence[Annotation]
) -> tuple[dict[tuple[int, str | None], list[HighlightSpan]], set[str]]:
    """Spans per (part index, parameter name), and the ids of annotations whose offsets fit nowhere."""
    spans: dict[tuple[int, str | None], list[HighlightSpan]] = {}
    unplaced: set[str] = set()
    for a in annotations:
        index, parameter = key = _span_key(parts, a)
        target = part_target(parts[index], parameter) if 0 <= index < len(parts) else None
        span = HighlightSpan(a["start_offset"], a["end_offset"], a["label"], a.get("explanation"), a["id"])
        if target is None or not span_fits(span, target):
            unplaced.add(a["id"])
        else:
            spans.setdefault(key, []).append(span)
    return spans, unplaced


def parts_view(
    parts: list[Part], annotations: Sequence[Annotation] = ()
) -> tuple[list["PartView"], set[str]]:
    """What the template shows for each part (`html` is pre-escaped markup), and the unplaced annotation ids."""
    spans, unplaced = _place(parts, annotations)
    views: list[PartView] = []
    for i, part in enumerate(parts):
        kind = part.get("type")
        if kind in TEXT_PART_TYPES and isinstance(content := part.get("content"), str):
            views.append({"kind": str(kind), "html": highlight(content, spans.get((i, None), []))})
        elif kind == "tool_call":
            arguments = _arguments(part) or {}
            params: list[ParamView] = [
                {"name": name, "html": highlight(target, spans.get((i, name), []))}
                for name in arguments
                if (target := part_target(part, name)) is not None
            ]
            whole = spans.get((i, None))
            view: PartView = {"kind": kind, "name": cast(ToolCallPart, part).get("name"), "params": params, "whole": None}
            if whole or not params:
                view["whole"] = highlight(part_target(part, None) or "", whole or [])
            views.append(view)
        else:
            body = part.get("response") if kind == "tool_call_response" else part
            views.append({"kind": str(kind or "part"), "text": _pretty(body)})
    return views, unplaced


def annotation_location(parts: list[Part], annotation: Mapping[str, Any]) -> str:
    """Where an annotation points: `part 1, book_table.party_size`."""
    index, parameter = _span_key(parts, annotation)
    if parameter is not None:
        return f"part {index}, {annotation.get('tool_name') or 'tool'}.{parameter}"
    return f"part {index}"

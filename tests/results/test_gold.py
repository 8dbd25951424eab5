"""`score_experiment`: gold lines joined on source conversations, skip counters, known P/R/F1."""

import json
from pathlib import Path

import pytest
from factories import RAGTRUTH, RAGTRUTH_GOLD, SpanSpec, finish_experiment, import_fixture, new_experiment

from experiment_runner.errors import BadInputError, NotFoundError
from experiment_runner.ingest.importing import import_files
from experiment_runner.results.gold import read_gold_file, score_experiment

REPLIES = {
    "c1": "Alpha beta gamma delta.",
    "c2": "Nothing wrong here.",
    "c3": "Fine, except this.",
    "c4": "Replayed replies differ.",
    "c5": "Evaluation failed.",
    "c6": "Item failed.",
    "c7": "No gold for me.",
}


def gold(conversation_id: str, *spans: tuple[str, int, int], message_index: int = 1) -> tuple[str, dict]:
    annotations = [{"label": label, "start_offset": s, "end_offset": e} for label, s, e in spans]
    line = {
        "conversation_id": conversation_id,
        "message_index": message_index,
        "part_index": 0,
        "annotations": annotations,
    }
    return f"gold.jsonl:{conversation_id}", line


GOLD = [
    gold("c1", ("Fabrication", 0, 5), ("Context Misattribution", 11, 16)),
    gold("c2"),
    gold("c3", ("Fabrication", 6, 10)),
    gold("c4", ("Fabrication", 0, 8)),
    gold("c5", ("Fabrication", 0, 4)),
    gold("c6", ("Fabrication", 0, 4)),
    gold("unknown", ("Fabrication", 0, 4)),
]


@pytest.fixture
def experiment_id(store, tmp_path: Path) -> str:
    path = tmp_path / "convs.jsonl"
    lines = [
        {
            "id": cid,
            "messages": [
                {"role": "user", "parts": [{"type": "text", "content": "Q"}]},
                {"role": "assistant", "parts": [{"type": "text", "content": reply}]},
            ],
        }
        for cid, reply in REPLIES.items()
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    import_files(store, [str(path)])
    experiment_id = new_experiment(store, list(REPLIES))
    finish_experiment(
        store,
        experiment_id,
        failed={"c6": "boom"},
        failed_evaluations=["c5"],
        replies={"c4": "Something else entirely."},
        spans={
            "c1": [SpanSpec("Fabrication", 0, 5), SpanSpec("Fabrication", 11, 14)],
            "c2": [SpanSpec("Fabrication", 0, 4)],
            "c4": [SpanSpec("Fabrication", 0, 8)],
            "c7": [SpanSpec("Fabrication", 0, 2)],
        },
    )
    return experiment_id


def test_counters_and_known_scores(store, experiment_id: str) -> None:
    result = score_experiment(store, experiment_id, GOLD)
    assert {
        k: result[k]
        for k in (
            "experiment_id",
            "scored",
            "skipped_reply_differs",
            "skipped_not_evaluated",
            "gold_without_item",
            "messages",
        )
    } == {
        "experiment_id": experiment_id,
        "scored": 3,
        "skipped_reply_differs": 1,
        "skipped_not_evaluated": 2,
        "gold_without_item": 1,
        "messages": 3,
    }
    # Fabrication: predicted c1 [0,5) hit, c1 [11,14) miss (gold there is another label), c2 [0,4) miss;
    # gold c1 [0,5) found, c3 [6,10) missed. Context Misattribution: one gold span, no prediction.
    fabrication = result["per_label"]["Fabrication"]["exact"]
    assert (fabrication["tp_pred"], fabrication["predicted"], fabrication["tp_gold"], fabrication["gold"]) == (
        1,
        3,
        1,
        2,
    )
    assert fabrication["precision"] == pytest.approx(1 / 3) and fabrication["recall"] == 0.5
    assert fabrication["f1"] == pytest.approx(0.4)
    assert result["per_label"]["Context Misattribution"]["exact"]["recall"] == 0.0
    overall = result["overall"]
    assert overall["exact"]["precision"] == pytest.approx(1 / 3) and overall["exact"]["recall"] == pytest.approx(1 / 3)
    assert overall["overlap"] == overall["exact"]
    # Ignoring labels, c1's [11,14) overlaps the gold [11,16): 2 of 3 predictions and 2 of 3 gold spans.
    any_label = result["overall_any_label"]
    assert any_label["exact"]["f1"] == pytest.approx(1 / 3)
    assert any_label["overlap"]["precision"] == pytest.approx(2 / 3) and any_label["overlap"][
        "recall"
    ] == pytest.approx(2 / 3)


def test_gold_labels_filter_the_gold_side(store, experiment_id: str) -> None:
    result = score_experiment(store, experiment_id, GOLD, gold_labels=["Fabrication"])
    assert list(result["per_label"]) == ["Fabrication"]
    assert result["overall"]["exact"]["gold"] == 2 and result["overall"]["exact"]["recall"] == 0.5


def test_gold_on_another_message_counts_as_reply_differs(store, experiment_id: str) -> None:
    result = score_experiment(store, experiment_id, [gold("c2", message_index=0)])
    assert (result["scored"], result["skipped_reply_differs"]) == (0, 1)


def test_pass_through_with_the_gold_spans_scores_perfectly(store) -> None:
    ids = import_fixture(store, RAGTRUTH)
    lines = list(read_gold_file(RAGTRUTH_GOLD))
    experiment_id = new_experiment(store, ids)
    spans = {
        line["conversation_id"]: [SpanSpec(a["label"], a["start_offset"], a["end_offset"]) for a in line["annotations"]]
        for _, line in lines
    }
    finish_experiment(store, experiment_id, spans=spans)
    result = score_experiment(store, experiment_id, lines)
    assert result["scored"] == 40 and result["overall"]["exact"]["f1"] == 1.0
    assert result["overall"]["exact"]["gold"] == sum(len(s) for s in spans.values())


def test_malformed_gold_names_file_and_line(store, experiment_id: str, tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps(GOLD[0][1]) + "\n\n" + '{"conversation_id": "c2", "annotations": []}\n')
    with pytest.raises(BadInputError, match=r"gold\.jsonl:3: .*message_index"):
        score_experiment(store, experiment_id, read_gold_file(path))
    path.write_text("{not json\n")
    with pytest.raises(BadInputError, match=r"gold\.jsonl:1: invalid JSON"):
        score_experiment(store, experiment_id, read_gold_file(path))
    with pytest.raises(BadInputError, match="no such file"):
        list(read_gold_file(tmp_path / "missing.jsonl"))


def test_unknown_experiment(store) -> None:
    with pytest.raises(NotFoundError):
        score_experiment(store, "nope", [])

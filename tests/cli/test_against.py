"""`score A --against B` (issue 24): span agreement between two experiments on the same replies, with kappa."""

import json
from collections import Counter
from pathlib import Path
from typing import Any

from factories import NATIVE, RAGTRUTH, RAGTRUTH_GOLD, SpanSpec, finish_experiment, import_fixture, new_experiment

from experiment_runner.demo import EVALUATOR, TARGET, simulated_models
from experiment_runner.results.against import score_against

WEATHER, BOOKING, MATH, REFUSAL = "hw-weather-tools", "hw-booking-args", "hw-reasoning-math", "hw-refusal"


def brute_kappa(lengths: list[int], a: list[tuple[str, int, int]], b: list[tuple[str, int, int]]) -> float:
    """Cohen's kappa character by character (part 0 only), the slow obvious way."""
    cells: Counter[tuple[frozenset[str], frozenset[str]]] = Counter()
    for position in range(lengths[0]):
        mark_a = frozenset(label for label, start, end in a if start <= position < end)
        mark_b = frozenset(label for label, start, end in b if start <= position < end)
        cells[(mark_a, mark_b)] += 1
    total = sum(cells.values())
    observed = sum(n for (x, y), n in cells.items() if x == y) / total
    share_a, share_b = Counter[frozenset[str]](), Counter[frozenset[str]]()
    for (x, y), n in cells.items():
        share_a[x] += n
        share_b[y] += n
    expected = sum(share_a[k] * share_b[k] for k in share_a) / total**2
    return (observed - expected) / (1 - expected)


def test_known_case(store, run_cli) -> None:
    import_fixture(store, NATIVE)
    a, b = new_experiment(store, [WEATHER, MATH, REFUSAL], name="a"), new_experiment(store, [WEATHER, MATH, BOOKING], name="b")
    finish_experiment(store, a, spans={WEATHER: [SpanSpec("Fabrication", 16, 19)], MATH: [SpanSpec("Reasoning Error", 0, 4)]})
    finish_experiment(store, b, spans={WEATHER: [SpanSpec("Fabrication", 16, 19)], MATH: [SpanSpec("Reasoning Error", 2, 6)]})
    result = score_against(store, a, b)
    assert (result["scored"], result["gold_without_item"], result["only_in_experiment"]) == (2, 1, 1)
    assert result["overall"]["exact"]["f1"] == 0.5 and result["overall"]["overlap"]["f1"] == 1.0
    assert result["per_label"]["Reasoning Error"]["exact"]["precision"] == 0.0
    # kappa on the math reply alone, checked against a per-character count
    from experiment_runner.results.agreement import char_kappa
    from experiment_runner.results.span_scores import LabelledSpan as S

    math_reply_len = 40
    alone = char_kappa([([math_reply_len], [S("R", 0, 4)], [S("R", 2, 6)])])["overall"]["kappa"]
    assert alone == brute_kappa([math_reply_len], [("R", 0, 4)], [("R", 2, 6)])
    kappa = result["kappa"]["overall"]["kappa"]
    assert kappa is not None and -1 <= kappa <= 1 and result["kappa"]["per_label"]["Fabrication"]["kappa"] == 1.0
    cli = run_cli("score", a, "--against", b, "--json")
    assert json.loads(cli.stdout) == result
    text = run_cli("score", a, "--against", b).stdout
    assert "Cohen's kappa per character" in text and "3 reference items" not in text
    both = run_cli("score", a, "--against", b, "--gold", RAGTRUTH_GOLD)
    assert both.exit_code == 2 and "Error: give either --gold FILE or --against EXPERIMENT_ID" in both.stderr
    assert run_cli("score", a).exit_code == 2


def lax_judge(conversations: list[dict[str, Any]], gold: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A second simulated judge: quotes the first half of each human span and misses every third one."""
    scripts = []
    for conversation in conversations:
        reply = conversation["messages"][-1]["parts"][0]["content"]
        quotes = [{"label": a["label"], "text": a["text"][: max(1, len(a["text"]) // 2)], "message_part_index": 0}
                  for i, a in enumerate(gold.get(conversation["id"], [])) if i % 3 != 2]
        scripts.append({"model": "lax-judge", "match": reply, "reply": {"content": json.dumps({"annotations": quotes})}})
    return scripts


def test_demo_judge_against_its_reevaluations(run_cli, fake_llm, tmp_path: Path) -> None:
    """The demo's judge (the human labels, quoted with drift) run, then re-evaluated by itself and by a laxer judge."""
    conversations = [json.loads(line) for line in RAGTRUTH.read_text().splitlines()]
    gold = {g["conversation_id"]: g["annotations"] for g in map(json.loads, RAGTRUTH_GOLD.read_text().splitlines())}
    fake_llm.configure(scripts=simulated_models(conversations, gold) + lax_judge(conversations, gold))
    assert run_cli("import", RAGTRUTH).exit_code == 0
    base = ["--api-base", fake_llm.api_base, "--evaluator-api-base", fake_llm.api_base]
    demo = run_cli("run", "--name", "demo", "--model", f"openai/{TARGET}", "--all", "--evaluator-model", f"openai/{EVALUATOR}", *base)
    demo_id = demo.stdout.split()[-1]
    again = run_cli("reevaluate", demo_id, "--evaluator-model", f"openai/{EVALUATOR}", "--evaluator-api-base", fake_llm.api_base)
    lax = run_cli("reevaluate", demo_id, "--evaluator-model", "openai/lax-judge", "--evaluator-api-base", fake_llm.api_base)
    again_id, lax_id = again.stdout.split()[-1], lax.stdout.split()[-1]

    same = json.loads(run_cli("score", again_id, "--against", demo_id, "--json").stdout)
    assert same["scored"] == 40 and same["overall"]["exact"]["f1"] == 1.0 and same["kappa"]["overall"]["kappa"] == 1.0
    print("demo judge vs its re-evaluation:", figures(same))

    result = json.loads(run_cli("score", lax_id, "--against", demo_id, "--json").stdout)
    overall = result["overall"]
    assert result["scored"] == 40 and overall["exact"]["gold"] == same["overall"]["exact"]["predicted"]  # the demo judge's spans
    assert overall["exact"]["tp_pred"] <= 1  # half quotes: no exact match unless a span is one character
    assert overall["overlap"]["precision"] == 1.0 and overall["overlap"]["recall"] < 1.0  # every third span of a reply missed
    assert 0 < result["kappa"]["overall"]["kappa"] < same["kappa"]["overall"]["kappa"]
    print("lax judge vs the demo judge:", figures(result))
    print(run_cli("score", lax_id, "--against", demo_id).stdout)


def figures(result: dict[str, Any]) -> dict[str, Any]:
    o, k = result["overall"], result["kappa"]["overall"]
    return {
        "scored": result["scored"],
        "exact P/R/F1": tuple(round(o["exact"][x], 3) for x in ("precision", "recall", "f1")),
        "overlap P/R/F1": tuple(round(o["overlap"][x], 3) for x in ("precision", "recall", "f1")),
        "kappa": round(k["kappa"], 3), "characters": k["characters"],
        "per-label kappa": {label: round(v["kappa"], 3) for label, v in result["kappa"]["per_label"].items()},
    }

"""The fake server's OpenAI Files and Batches endpoints, over plain HTTP."""

import json
import urllib.request
from typing import Any

from experiment_runner.fixtures.fakellm import FakeLLM


def call(fake: FakeLLM, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
    request = urllib.request.Request(fake.api_base + path, data=body, method=method, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return raw if path.endswith("/content") else json.loads(raw)


def upload(fake: FakeLLM, lines: list[dict[str, Any]]) -> str:
    boundary = "xyzBOUNDARY"
    data = "".join(json.dumps(line) + "\n" for line in lines)
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n{data}\r\n--{boundary}--\r\n").encode()
    return str(call(fake, "POST", "/files", form, f"multipart/form-data; boundary={boundary}")["id"])


def line(n: int, text: str) -> dict[str, Any]:
    return {"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "fake-target", "messages": [{"role": "user", "content": text}]}}


def test_a_batch_moves_on_per_retrieval_and_writes_output_and_error_files(fake_llm: FakeLLM) -> None:
    fake_llm.configure(scripts=[{"match": "boom", "reply": {"status": 400}}])
    file_id = upload(fake_llm, [line(1, "hello"), line(2, "boom"), line(3, "bye")])
    assert call(fake_llm, "GET", f"/files/{file_id}")["purpose"] == "batch"
    batch = call(fake_llm, "POST", "/batches", json.dumps({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                          "completion_window": "24h"}).encode())
    assert batch["status"] == "validating" and fake_llm.request_count == 0
    seen = [call(fake_llm, "GET", f"/batches/{batch['id']}")["status"] for _ in range(4)]
    assert seen == ["in_progress", "finalizing", "completed", "completed"]
    done = call(fake_llm, "GET", f"/batches/{batch['id']}")
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    output = [json.loads(x) for x in call(fake_llm, "GET", f"/files/{done['output_file_id']}/content").splitlines()]
    errors = [json.loads(x) for x in call(fake_llm, "GET", f"/files/{done['error_file_id']}/content").splitlines()]
    assert [o["custom_id"] for o in output] == ["r1", "r3"]
    assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == "Simulated reply to: hello"
    assert errors[0]["custom_id"] == "r2" and errors[0]["response"]["status_code"] == 400
    stats = fake_llm.stats()
    assert (stats["files_created"], stats["batches_created"], stats["batch_retrievals"]) == (1, 1, 5)  # uploads, creates, retrievals
    assert fake_llm.request_count == 3


def test_an_expired_batch_answers_only_half_and_the_next_one_completes(fake_llm: FakeLLM) -> None:
    fake_llm.configure(batch_steps=1, batch_outcomes=["expired"])
    ids = []
    for _ in range(2):
        file_id = upload(fake_llm, [line(n, f"q{n}") for n in range(4)])
        ids.append(call(fake_llm, "POST", "/batches", json.dumps({"input_file_id": file_id}).encode())["id"])
    first, second = (call(fake_llm, "GET", f"/batches/{i}") for i in ids)
    assert first["status"] == "expired" and first["request_counts"]["completed"] == 2
    assert second["status"] == "completed" and second["request_counts"]["completed"] == 4

"""engine/llm.py: what it does before any real call (the rest is tested through runs, in test_engine and others)."""

import threading

from experiment_runner.engine.llm import litellm_module, warm_call_path
from experiment_runner.fixtures.fakellm import FakeLLM


def test_warming_the_call_path_sends_nothing_and_leaves_no_thread(fake_llm: FakeLLM) -> None:
    litellm_module()
    threads = threading.active_count()
    warm_call_path(fake_llm.api_base)  # before a fork: a thread left behind would make the command spawn instead of fork
    assert threading.active_count() == threads
    assert fake_llm.request_count == 0

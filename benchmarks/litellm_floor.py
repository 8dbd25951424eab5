#!/usr/bin/env python3
"""What a litellm-based runner can reach at best on this machine: peerbench's bare litellm loop, forked.

The same calls as peerbench's `litellm_raw.py` (each sample: a target call, then a grading call with the
reply), with every trick `run --workers` uses and nothing it must do besides: the collector paused while
litellm is imported, then the process forked into `--processes` (the samples and `--concurrency` split
among them). No store, no retries, no response cache, no claims, no progress: a floor, not a peer.
`bench_workers.py c2` runs it next to the project (issue 23's c2 target).

    python benchmarks/litellm_floor.py --base-url http://127.0.0.1:PORT/v1 --prompts prompts.json \\
        -n 400 --calls 2 --concurrency 50 --processes 2

Prints one JSON line: import_s, run_s (first call to last reply, over all processes), ok, errors.
"""

import argparse
import asyncio
import gc
import json
import os
import time
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_MODE", "PRODUCTION")


async def _samples(litellm: Any, args: argparse.Namespace, prompts: list[str], concurrency: int) -> tuple[int, int]:
    """peerbench's loop: each prompt, then `calls - 1` follow-ups carrying the reply; (ok, errors)."""
    limit = asyncio.Semaphore(concurrency)
    counts = {"ok": 0, "errors": 0}

    async def one(prompt: str) -> None:
        async with limit:
            messages = [{"role": "user", "content": prompt}]
            try:
                for _ in range(args.calls):
                    reply = await litellm.acompletion(model="openai/fake", api_base=args.base_url, api_key="fake",
                                                      messages=messages, num_retries=0, timeout=60)
                    messages = [*messages, {"role": "assistant", "content": reply.choices[0].message.content},
                                {"role": "user", "content": "Grade the answer above. GRADE:"}]
                counts["ok"] += 1
            except Exception:  # noqa: BLE001  (counted, as peerbench does)
                counts["errors"] += 1

    await asyncio.gather(*(one(p) for p in prompts))
    return counts["ok"], counts["errors"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("-n", type=int, default=400)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    with open(args.prompts) as f:
        prompts = json.load(f)[: args.n]

    started = time.perf_counter()
    gc.disable()
    import litellm
    gc.enable()
    gc.freeze()
    imported = time.perf_counter()
    litellm.telemetry = False
    litellm.suppress_debug_info = True

    count = max(1, min(args.processes, args.concurrency))
    pipes, children = [], []
    for index in range(1, count):  # the children: shares 1..count-1; this process takes share 0
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            ok, errors = asyncio.run(_samples(litellm, args, prompts[index::count], args.concurrency // count))
            os.write(write_end, json.dumps([ok, errors]).encode())
            os._exit(0)
        os.close(write_end)
        pipes.append(read_end)
        children.append(pid)
    first = time.perf_counter()
    ok, errors = asyncio.run(_samples(litellm, args, prompts[0::count], args.concurrency // count + args.concurrency % count))
    for pid, read_end in zip(children, pipes, strict=True):
        os.waitpid(pid, 0)
        child_ok, child_errors = json.loads(os.read(read_end, 1024) or b"[0, 1]")
        ok, errors = ok + child_ok, errors + child_errors
    print(json.dumps({"tool": f"litellm, {count} forked processes", "import_s": round(imported - started, 3),
                      "run_s": round(time.perf_counter() - first, 3), "ok": ok, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()

"""A bare litellm loop: N prompts x C sequential `litellm.acompletion` calls, at most K items at once.

Copied (typed, otherwise unchanged) from ../shared/peerbench/litellm_raw.py so that the project's
benchmarks never read ../shared at run time. c2 = a target call, then a judge call on the extended
conversation. Prints one JSON line: import_s (`import litellm`), run_s (the calls only), ok, errors.
Run with LITELLM_LOCAL_MODEL_COST_MAP=True (bench_engine.py sets it), or the import fetches the price list.
"""

import time

t_import0 = time.perf_counter()
import litellm  # noqa: E402

t_import1 = time.perf_counter()
import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
from importlib.metadata import version  # noqa: E402
from typing import Any  # noqa: E402


async def run(args: argparse.Namespace, prompts: list[str]) -> tuple[float, int, int]:
    sem = asyncio.Semaphore(args.concurrency)
    ok = errors = 0

    async def one(prompt: str) -> None:
        nonlocal ok, errors
        async with sem:
            messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
            try:
                for _ in range(args.calls):
                    r = await litellm.acompletion(model="openai/fake", api_base=args.base_url, api_key="fake", messages=messages, num_retries=0)
                    messages = [*messages, {"role": "assistant", "content": r.choices[0].message.content}, {"role": "user", "content": "Grade the answer above. GRADE:"}]
                ok += 1
            except Exception as e:  # noqa: BLE001
                errors += 1
                if errors <= 3:
                    print("error:", repr(e)[:300], flush=True)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    return time.perf_counter() - t0, ok, errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("-n", type=int, default=400)
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    with open(args.prompts) as f:
        prompts = json.load(f)[: args.n]
    run_s, ok, errors = asyncio.run(run(args, prompts))
    result = {"tool": "litellm", "version": version("litellm"), "import_s": round(t_import1 - t_import0, 3), "run_s": round(run_s, 3), "ok": ok, "errors": errors}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

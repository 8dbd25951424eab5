"""The engine: experiments created and run to the end.

Owns the experiment spec (`spec.py`) and its creation, how a run ended (`outcome.py`), the work plan
(what is left to do), the run loop (workers under one concurrency limit feeding one writer), replay (history in OpenAI format), the evaluation
step, the output schema for `--output-schema`, and `llm`, the only module that imports litellm. It may
import `conversation`, `store`, `evaluation`, `errors` and `files`; never `ingest`, `results`, `report`, `server` or `cli`.
"""

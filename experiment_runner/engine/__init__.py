"""The engine: experiments created and run to the end.

Owns the experiment spec and its creation, the work plan (what is left to do), the run loop (workers
under one concurrency limit feeding one writer), replay (history in OpenAI format), the evaluation
step, the output schema for `--output-schema`, and `llm`, the only module that imports litellm. It may
import `conversation`, `store`, `evaluation`, `errors` and `files`; never `ingest`, `results`, `report`, `server` or `cli`.
"""

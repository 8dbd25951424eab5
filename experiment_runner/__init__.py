"""experiment-runner: replay stored conversations against a model, annotate problem spans, export metrics."""

import os

# litellm reads these at import time. Set them before anything imports it (see README, "Offline"):
# use the bundled price list instead of fetching one, never load a stray .env from the working
# directory, and never try to download tokenizers.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_MODE", "PRODUCTION")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"

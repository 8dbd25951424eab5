"""The `experiment-runner` console script: the CLI, with the cyclic garbage collector off while its modules load.

Loading the CLI (and later litellm) creates hundreds of thousands of long-lived objects, and each full
collection on the way scans all of them again: about 10% of the CLI's start-up (and 20% of litellm's import,
which `engine.llm.litellm_module` pauses the collector for in the same way). No module import makes garbage
that needs the collector, so it is off until the command is chosen, and back on (`cli.cli`) before it runs.
"""

import gc


def main() -> None:
    gc.disable()
    from experiment_runner.cli import main as run_cli

    run_cli()

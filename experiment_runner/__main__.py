"""`python -m experiment_runner` is the same as the `experiment-runner` console script."""

from experiment_runner.console import main

main()

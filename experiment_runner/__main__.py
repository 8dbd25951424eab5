"""`python -m experiment_runner` is the same as the `experiment-runner` console script."""

from experiment_runner.cli import main

main()

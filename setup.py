"""The packages the wheel holds, discovered (every other setting is in pyproject.toml).

pyproject.toml can list packages or find them, but it cannot add a folder found elsewhere under another
name: the top-level fixtures/ folder ships as `experiment_runner.fixtures`. So the list is built here,
every package under experiment_runner/ found plus that one, and no package can be left out by hand.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["experiment_runner", "experiment_runner.*"]), "experiment_runner.fixtures"],
    package_dir={"experiment_runner.fixtures": "fixtures"},
)

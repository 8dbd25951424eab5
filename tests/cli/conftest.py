"""Fixtures shared by the CLI tests."""

from pathlib import Path

import pytest
from factories import build_finished

from experiment_runner.store import open_store


@pytest.fixture
def experiment_id(db_path: Path) -> str:
    """A finished experiment built through the engine's writer, in the test's store."""
    store = open_store(db_path)
    try:
        return build_finished(store)
    finally:
        store.close()

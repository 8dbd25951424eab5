"""Ids (issue 22): a forked process does not repeat its parent's ids (or its siblings')."""

import os
import uuid

import pytest

from experiment_runner.store.ids import new_id


def ids_in_a_forked_child(count: int) -> list[str]:
    """The first `count` ids a child forked now makes."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its ids and leave at once
        try:
            os.write(write, "\n".join(new_id() for _ in range(count)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return text.split("\n")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_children_do_not_repeat_the_parents_ids() -> None:
    new_id()
    first = ids_in_a_forked_child(5)
    second = ids_in_a_forked_child(5)
    parent = [new_id() for _ in range(5)]  # what the parent makes next: a child without a reseed repeats these
    assert len(first) == len(second) == 5 and all(uuid.UUID(i).version == 4 for i in first + second)
    assert len(set(first) | set(second) | set(parent)) == 15

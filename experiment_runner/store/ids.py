"""Random UUIDs without a system call each: `uuid.uuid4()` reads os.urandom, which is slow on some VMs
(~90 µs here) and a run makes several per item. Ids need uniqueness, not secrecy.

A forked child would inherit the generator's state and repeat its parent's ids, so the child reseeds
it from os.urandom right after the fork (worker processes share one store)."""

import os
import random
import uuid

_random = random.Random()  # seeded from os.urandom once per process


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A random (version 4) UUID string."""
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))

"""Random UUIDs without a system call each: `uuid.uuid4()` reads os.urandom, which is slow on some VMs
(~90 µs here) and a run makes several per item. Ids need uniqueness, not secrecy."""

import random
import uuid

_random = random.Random()  # seeded from os.urandom once


def new_id() -> str:
    """A random (version 4) UUID string."""
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))

"""`python -m experiment_runner.store.alembic new "what it adds"`: write the next revision (a developer's step).

See `experiment_runner.store.migrations` for the whole procedure.
"""

import sys

from experiment_runner.store.migrations import new_revision

if len(sys.argv) != 3 or sys.argv[1] != "new":
    sys.exit('usage: python -m experiment_runner.store.alembic new "what the revision adds"')
print(new_revision(sys.argv[2]))

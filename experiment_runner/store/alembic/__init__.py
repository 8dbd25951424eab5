"""The Alembic environment of the store: `env.py` and the revisions in `versions/` (package data of the wheel).

`store.migrations` drives it programmatically (no alembic.ini); see that module for how to add a revision.
"""

"""Alembic's environment for the store: migrate the connection `store.migrations` hands over.

`store.migrations.upgrade` passes an open connection, already inside its locked transaction, as
`config.attributes["connection"]`; every revision then runs in that one transaction. The target metadata
is the SQLModel tables (`store.tables`): they are the schema, and autogenerate (`python -m
experiment_runner.store.alembic new MESSAGE`) writes a new revision from what they add.
"""

from alembic import context
from sqlalchemy import Connection

from experiment_runner.store import migrations

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("the store's migrations run through experiment_runner.store.migrations, which passes a connection")
context.configure(connection=connection, **migrations.context_options())
with context.begin_transaction():
    context.run_migrations()

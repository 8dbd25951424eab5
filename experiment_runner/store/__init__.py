"""The store: a SQLite file or a PostgreSQL database, its tables and migrations, and every query that reads or writes them.

Owns the connection setup (pragmas, read and write transactions), the schema (`tables`, `migrations`),
id and time helpers, and the data-access functions in `queries`. It may import only `errors` and the
standard library, SQLAlchemy and sqlmodel: every other stage builds on it, never the reverse.
"""

from experiment_runner.store.database import DEFAULT_DB, Store, open_store
from experiment_runner.store.postgres import shown as shown_location

__all__ = ["DEFAULT_DB", "Store", "open_store", "shown_location"]

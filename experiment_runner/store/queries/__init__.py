"""Every SQL statement of the project, one module per table group, called by the stages.

Style: SQLAlchemy Core `text()` statements with named parameters (`:experiment`, `:ids`), defined once at
module level and executed on a `Connection` (a stage passes `session.connection()`). Functions take the
connection first, return plain rows, dicts or lists, and never open transactions: the caller's
`Store.read()` / `Store.write()` decides what is one transaction. The one exception is the `Experiment`
entity, read and added through the ORM on a `Session` (`queries.experiments`), because its callers want
the typed object with its JSON columns decoded.

- `common`: the shared pieces: the chunked `IN (...)` helper (`execute_in`), the row-to-message dict
  (`message_dict`), the JSON encoding of stored columns, and the "latest evaluation of an item" and
  "final assistant message of a result" subqueries;
- `conversations`: conversations and messages (import, listing, loading, inserting results);
- `experiments`: experiments and their items (create, look up, page, delete);
- `runs`: what the engine reads to plan work and what its single writer writes;
- `results`: the reads behind export, metrics, compare and gold scoring;
- `cache`: the response cache (look-up, upsert, hits, stats, clear, an experiment's cached calls);
- `batches`: provider batch jobs and their request-to-item mapping;
- `claims`: worker rows and item claims (register, heartbeat, reap, claim a page, the write fence); its
  row-lock suffixes are the one PostgreSQL branch.
"""

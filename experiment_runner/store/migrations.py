"""Ordered schema migrations. Each is one function run in one transaction, recorded in `schema_migrations`.

Never edit a migration that has shipped: add a new one at the end. A store created by an older release
is brought up to date when it is opened (`store.open_store`), and its data is kept.
"""

import sqlite3
from collections.abc import Callable, Iterator

from sqlalchemy import Connection

Migration = Callable[[Connection], None]


def statements(script: str) -> Iterator[str]:
    """The complete SQL statements of `script`, in order.

    Split where SQLite itself says a statement is complete (`sqlite3.complete_statement`), not at every
    `;`, so a trigger body (`BEGIN ...; ...; END;`) or a `;` inside a string literal stays whole.
    """
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip().rstrip(";").strip():
                yield pending.strip()
            pending = ""
    if pending.strip():
        yield pending.strip()


def _run(conn: Connection, script: str) -> None:
    """Run every statement of `script` inside the migration's transaction (unlike `executescript`)."""
    for statement in statements(script):
        conn.exec_driver_sql(statement)


_M001_SQL = """
        CREATE TABLE conversation (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL DEFAULT 'source',
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX ix_conversation_type ON conversation (type);
        CREATE TABLE message (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
            sequence_number INTEGER NOT NULL,
            role TEXT NOT NULL,
            parts JSON NOT NULL,
            generation JSON,
            UNIQUE (conversation_id, sequence_number)
        );
        CREATE INDEX ix_message_conversation_id ON message (conversation_id);
        CREATE TABLE experiment (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            model TEXT NOT NULL,
            pass_through BOOLEAN NOT NULL DEFAULT 0,
            conversation_ids JSON NOT NULL,
            reasoning_config JSON,
            system_prompt_override TEXT,
            output_schema JSON,
            created_by_user_id TEXT,
            created_by_user_name TEXT,
            created_by_service_account_id TEXT,
            created_by_service_account_name TEXT,
            created_at TEXT NOT NULL,
            completed_at TEXT
        );
        CREATE INDEX ix_experiment_created_at ON experiment (created_at);
        CREATE TABLE item (
            id TEXT PRIMARY KEY,
            experiment_id TEXT NOT NULL REFERENCES experiment (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            source_conversation_id TEXT NOT NULL REFERENCES conversation (id),
            result_conversation_id TEXT REFERENCES conversation (id),
            status TEXT NOT NULL DEFAULT 'pending',
            error_message TEXT,
            evaluations_expected INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX ix_item_experiment_position ON item (experiment_id, position);
        CREATE INDEX ix_item_experiment_status ON item (experiment_id, status);
        CREATE INDEX ix_item_source_conversation_id ON item (source_conversation_id);
        CREATE INDEX ix_item_result_conversation_id ON item (result_conversation_id);
        CREATE TABLE evaluation (
            id TEXT PRIMARY KEY,
            item_id TEXT NOT NULL REFERENCES item (id) ON DELETE CASCADE,
            message_id TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
            status TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            detection_duration_ms FLOAT,
            total_duration_ms FLOAT,
            error_message TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (item_id, message_id)
        );
        CREATE INDEX ix_evaluation_item_id ON evaluation (item_id);
        CREATE INDEX ix_evaluation_message_id ON evaluation (message_id);
        CREATE TABLE annotation (
            id TEXT PRIMARY KEY,
            evaluation_id TEXT NOT NULL REFERENCES evaluation (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            label TEXT NOT NULL,
            text TEXT NOT NULL,
            explanation TEXT,
            message_part_index INTEGER NOT NULL,
            start_offset INTEGER NOT NULL,
            end_offset INTEGER NOT NULL,
            tool_name TEXT,
            parameter_name TEXT
        );
        CREATE INDEX ix_annotation_evaluation_id ON annotation (evaluation_id);
        """


def m001_initial(conn: Connection) -> None:
    """Conversations, messages, experiments, items, evaluations and annotations."""
    _run(conn, _M001_SQL)


def m002_run_settings(conn: Connection) -> None:
    """Experiment settings that `resume` needs again: endpoints, evaluator, labels, re-evaluation source."""
    _run(
        conn,
        """
        ALTER TABLE experiment ADD COLUMN api_base TEXT;
        ALTER TABLE experiment ADD COLUMN evaluator_model TEXT;
        ALTER TABLE experiment ADD COLUMN evaluator_api_base TEXT;
        ALTER TABLE experiment ADD COLUMN labels JSON;
        ALTER TABLE experiment ADD COLUMN source_experiment_id TEXT
        """,
    )


def m003_structured_output(conn: Connection) -> None:
    """Structured-output settings and the mode each model used; per evaluation: dropped annotations, cost, mode."""
    _run(
        conn,
        """
        ALTER TABLE experiment ADD COLUMN structured_output JSON;
        ALTER TABLE evaluation ADD COLUMN dropped JSON;
        ALTER TABLE evaluation ADD COLUMN cost_usd FLOAT;
        ALTER TABLE evaluation ADD COLUMN response_format TEXT
        """,
    )


def m004_run_leases(conn: Connection) -> None:
    """One lease per running experiment (owner, host, pid, heartbeat); result conversations name their experiment."""
    _run(
        conn,
        """
        CREATE TABLE run_lease (
            experiment_id TEXT PRIMARY KEY REFERENCES experiment (id) ON DELETE CASCADE,
            owner TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            acquired_at TEXT NOT NULL,
            heartbeat_at FLOAT NOT NULL
        );
        ALTER TABLE conversation ADD COLUMN experiment_id TEXT;
        CREATE INDEX ix_conversation_experiment_id ON conversation (experiment_id);
        UPDATE conversation SET experiment_id =
            (SELECT i.experiment_id FROM item i WHERE i.result_conversation_id = conversation.id ORDER BY i.created_at, i.rowid LIMIT 1)
        WHERE type = 'result'
        """,
    )


def m005_run_state(conn: Connection) -> None:
    """Why a run stopped and who runs it (a server resumes only its own), the stored budget, settings changed by resume."""
    _run(
        conn,
        """
        ALTER TABLE experiment ADD COLUMN stop_reason TEXT;
        ALTER TABLE experiment ADD COLUMN stop_detail TEXT;
        ALTER TABLE experiment ADD COLUMN stopped_at TEXT;
        ALTER TABLE experiment ADD COLUMN runner TEXT;
        ALTER TABLE experiment ADD COLUMN max_cost_usd FLOAT;
        ALTER TABLE experiment ADD COLUMN setting_changes JSON
        """,
    )


def m006_conversation_tools(conn: Connection) -> None:
    """A source conversation's tool definitions (declared to the target on replay) and its metadata object."""
    _run(
        conn,
        """
        ALTER TABLE conversation ADD COLUMN tools JSON;
        ALTER TABLE conversation ADD COLUMN metadata JSON
        """,
    )


def m007_cache_and_batches(conn: Connection) -> None:
    """The response cache; provider batch jobs and their requests; per evaluation: calls served from the cache.

    Self-contained (it touches no column another migration adds), so it can be ordered after any of them."""
    _run(
        conn,
        """
        CREATE TABLE response_cache (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            api_base TEXT,
            parts JSON NOT NULL,
            generation JSON NOT NULL,
            duration_ms FLOAT NOT NULL,
            cost_usd FLOAT,
            created_at TEXT NOT NULL,
            hits INTEGER NOT NULL DEFAULT 0,
            saved_usd FLOAT NOT NULL DEFAULT 0,
            last_hit_at TEXT
        );
        CREATE INDEX ix_response_cache_created_at ON response_cache (created_at);
        CREATE TABLE batch_job (
            id TEXT PRIMARY KEY,
            experiment_id TEXT NOT NULL REFERENCES experiment (id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            api_base TEXT,
            provider TEXT NOT NULL,
            provider_batch_id TEXT NOT NULL,
            input_file_id TEXT NOT NULL,
            status TEXT NOT NULL,
            request_count INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            collected_at TEXT,
            error_message TEXT
        );
        CREATE INDEX ix_batch_job_experiment_id ON batch_job (experiment_id);
        CREATE TABLE batch_request (
            batch_id TEXT NOT NULL REFERENCES batch_job (id) ON DELETE CASCADE,
            custom_id TEXT NOT NULL,
            item_id TEXT NOT NULL REFERENCES item (id) ON DELETE CASCADE,
            mode TEXT NOT NULL,
            cache_key TEXT NOT NULL,
            body JSON NOT NULL,
            status TEXT NOT NULL DEFAULT 'submitted',
            PRIMARY KEY (batch_id, custom_id)
        );
        CREATE INDEX ix_batch_request_item_id ON batch_request (item_id);
        ALTER TABLE evaluation ADD COLUMN cached_calls INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE evaluation ADD COLUMN cost_saved_usd FLOAT
        """,
    )


def m008_item_claims(conn: Connection) -> None:
    """Item claims (issue 23): a `worker` row per process working on an experiment (host, pid, heartbeat, the
    budget it has reserved), and on each item the worker that claimed it. Replaces `run_lease`, left unused."""
    _run(
        conn,
        """
        CREATE TABLE worker (
            id TEXT PRIMARY KEY,
            experiment_id TEXT NOT NULL REFERENCES experiment (id) ON DELETE CASCADE,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            heartbeat_at FLOAT NOT NULL,
            reserved_usd FLOAT NOT NULL DEFAULT 0
        );
        CREATE INDEX ix_worker_experiment_id ON worker (experiment_id);
        ALTER TABLE item ADD COLUMN claimed_by TEXT;
        ALTER TABLE item ADD COLUMN claimed_at TEXT;
        CREATE INDEX ix_item_claimed_by ON item (claimed_by)
        """,
    )


MIGRATIONS: list[Migration] = [
    m001_initial, m002_run_settings, m003_structured_output, m004_run_leases, m005_run_state, m006_conversation_tools,
    m007_cache_and_batches, m008_item_claims,
]
LATEST = len(MIGRATIONS)


def recorded_version(conn: Connection) -> int:
    """The highest migration applied, read without writing anything (0 when `schema_migrations` is missing)."""
    exists = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").first()
    return conn.exec_driver_sql("SELECT coalesce(max(version), 0) FROM schema_migrations").scalar_one() if exists else 0


def current_version(conn: Connection) -> int:
    """The highest migration applied to this database (0 for a new one)."""
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    return int(conn.exec_driver_sql("SELECT coalesce(max(version), 0) FROM schema_migrations").scalar_one())

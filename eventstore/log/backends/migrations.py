"""Versioned schemas: each database backend keeps an ordered list of migration steps.

A database records the version its schema is at in a `schema_version` table; an empty database
is at version 0. Opening a database runs, in one transaction, every step above its version and
stamps the new version, so a crash halfway leaves the old schema intact. A database at a version
above the newest step was written by a newer tasktrail and is refused with `SchemaVersionError`,
never opened half-understood.

Steps are append-only: a released step is never edited, a change to the schema is a new step.

What both database backends share besides: step 1's tables, written once and spelled per
database by a `Dialect` (`tables_v1`), the statement that reads the version, the check a read-only
open makes (`require_current`: it cannot migrate), and column lists made from the row Structs
(`columns`), so that a column is named once, in `eventstore.log.backends.rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from eventstore.log.errors import ReadOnlyStoreError, SchemaVersionError, StorageError

__all__ = [
    "HISTORY_INDEXES",
    "IDEMPOTENCY_BY_ID",
    "LOG_LAYOUT",
    "SCOPES_BY_UPDATED",
    "SELECT_SCHEMA_VERSION",
    "TABLES",
    "Dialect",
    "Migration",
    "columns",
    "first_steps",
    "latest_version",
    "log_layout",
    "pending_migrations",
    "require_current",
    "tables_v1",
]

SELECT_SCHEMA_VERSION: Final = "SELECT version FROM schema_version"


def columns(row: type[msgspec.Struct]) -> str:
    """The column list of a table whose rows decode into `row`: its fields, in their order."""
    return ", ".join(row.__struct_fields__)


class Migration(msgspec.Struct, frozen=True):
    """The statements that bring a schema from `version - 1` to `version`."""

    version: int
    summary: str
    statements: tuple[str, ...]


# What the backends' steps share: the summaries of steps 1, 4 and 5, whose statements differ by
# database, and steps 2 and 3 whole, which read the same on both.
TABLES: Final = "log, scopes, projection and idempotency tables"
HISTORY_INDEXES: Final = Migration(
    2,
    "history indexes: where a try and where a time lands in a scope, in one seek",
    # IF NOT EXISTS: version 1 files opened by tasktrail 0.1 may have them already.
    (
        """CREATE INDEX IF NOT EXISTS events_by_scope_try ON events (scope_id, try_number)
        WHERE try_number IS NOT NULL""",
        """CREATE INDEX IF NOT EXISTS events_by_scope_time ON events (scope_id, recorded_at)""",
    ),
)
SCOPES_BY_UPDATED: Final = Migration(
    3,
    "scopes index: the web page lists scopes most recently written first",
    ("""CREATE INDEX IF NOT EXISTS scopes_by_updated ON scopes (updated_at, scope_id)""",),
)


class Dialect(msgspec.Struct, frozen=True):
    """How a database spells the column types of step 1's tables."""

    int: str  # a 64-bit integer
    scope_id: str  # the scope's id, handed out by the database
    name: str  # keys, idempotency ids and task parts (dag, run, task ids)
    blob: str  # payloads, values and results
    keyed: str  # after a table keyed by its primary key alone ("" or " WITHOUT ROWID")


def first_steps(dialect: Dialect) -> tuple[Migration, ...]:
    """Steps 1 to 3, alike on both databases but for the spelling of step 1's types."""
    return (Migration(1, TABLES, tables_v1(dialect)), HISTORY_INDEXES, SCOPES_BY_UPDATED)


# Step 1's tables and indexes, written once for both databases; `tables_v1` renders them.
_TABLES_V1: Final = (
    """CREATE TABLE schema_version (version INTEGER NOT NULL)""",
    """INSERT INTO schema_version (version) VALUES (0)""",
    """CREATE TABLE log_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq {int} NOT NULL,
        last_recorded_at {int} NOT NULL
    )""",
    """INSERT INTO log_head (id, last_seq, last_recorded_at) VALUES (1, 0, 0)""",
    """CREATE TABLE scopes (
        scope_id {scope_id} PRIMARY KEY,
        scope_key TEXT NOT NULL UNIQUE,
        version {int} NOT NULL,
        max_try {int},
        updated_at {int} NOT NULL,
        dag_id {name},
        run_id {name},
        task_id {name},
        map_index {int}
    )""",
    """CREATE INDEX scopes_by_task ON scopes (dag_id, run_id, task_id) WHERE dag_id IS NOT NULL""",
    """CREATE TABLE events (
        seq {int} PRIMARY KEY,
        scope_id {int} NOT NULL,
        version {int} NOT NULL,
        kind TEXT NOT NULL,
        key {name},
        expires_at {int},
        recorded_at {int} NOT NULL,
        try_number {int},
        actor TEXT NOT NULL,
        payload {blob} NOT NULL
    )""",
    """CREATE UNIQUE INDEX events_by_scope_version ON events (scope_id, version)""",
    """CREATE INDEX events_by_scope_key ON events (scope_id, key, seq)""",
    """CREATE TABLE current (
        scope_id {int} NOT NULL,
        key {name} NOT NULL,
        value {blob} NOT NULL,
        expires_at {int},
        version {int} NOT NULL,
        seq {int} NOT NULL,
        updated_at {int} NOT NULL,
        PRIMARY KEY (scope_id, key)
    ){keyed}""",
    """CREATE INDEX current_by_expiry ON current (expires_at) WHERE expires_at IS NOT NULL""",
    """CREATE TABLE idempotency (
        scope_id {int} NOT NULL,
        idempotency_id {name} NOT NULL,
        result {blob} NOT NULL,
        PRIMARY KEY (scope_id, idempotency_id)
    ){keyed}""",
)


def tables_v1(dialect: Dialect) -> tuple[str, ...]:
    """Step 1's statements as `dialect` spells them."""
    spelling = msgspec.structs.asdict(dialect)
    return tuple(statement.format(**spelling) for statement in _TABLES_V1)


IDEMPOTENCY_BY_ID: Final = (
    "idempotency: keyed by id, then scope, so ids made in time order append to the index; "
    "with the time each result was recorded, so compaction can forget old ones"
)


LOG_LAYOUT: Final = (
    "history through the version index: where each try starts is kept once per try, and "
    "times and positions are found by a search over versions; the per-event try and time "
    "indexes, which cost every write a page each, go"
)
# Within a scope, seq and recorded_at grow with the version (the log keeps recorded_at
# monotonic), so a bound on either is a bound on the version, found by a binary search over the
# (scope_id, version) index. Attempt fencing keeps every event of try N between the start of try
# N and the start of the next higher try. Kept from a log compacted before: a try starts at its
# first event still there.
_LOG_LAYOUT: Final = (
    """CREATE TABLE tries (
        scope_id {int} NOT NULL,
        try_number {int} NOT NULL,
        first_version {int} NOT NULL
    )""",
    """INSERT INTO tries (scope_id, try_number, first_version)
    SELECT scope_id, try_number, min(version) FROM events
    WHERE try_number IS NOT NULL GROUP BY scope_id, try_number""",
    """DROP INDEX IF EXISTS events_by_scope_try""",
    """DROP INDEX IF EXISTS events_by_scope_time""",
    # The try index of the events, one entry per try instead of one per event.
    """CREATE UNIQUE INDEX events_by_scope_try ON tries (scope_id, try_number)""",
)


def log_layout(dialect: Dialect) -> Migration:
    """Step 5, alike on both databases but for the spelling of its integers."""
    statements = tuple(statement.format(int=dialect.int) for statement in _LOG_LAYOUT)
    return Migration(5, LOG_LAYOUT, statements)


def latest_version(migrations: Sequence[Migration]) -> int:
    """The version a database has once every step has run."""
    for expected, step in enumerate(migrations, start=1):
        if step.version != expected:
            raise AssertionError(
                f"migration steps must be numbered 1, 2, 3, …: step {expected} says "
                f"{step.version} ({step.summary})"
            )
    return len(migrations)


def pending_migrations(found: int, migrations: Sequence[Migration], where: str) -> list[Migration]:
    """The steps a database at version `found` still needs, oldest first.

    Raises `SchemaVersionError` naming both versions when the database is newer than this code.
    """
    latest = latest_version(migrations)
    if found > latest:
        raise SchemaVersionError(found, latest, where)
    return [step for step in migrations if step.version > found]


def require_current(version: int, migrations: Sequence[Migration], where: str, fix: str) -> None:
    """A read-only open cannot migrate: the schema found must be the one this code writes.

    Version 0 (no schema_version table, or an empty one) holds no tasktrail log. `fix` says how
    to migrate this kind of database.
    """
    if version == 0:
        raise StorageError(
            f"{where} holds no tasktrail log; check the path or URL (--db)",
            where=where,
            cause="missing",
        )
    if pending_migrations(version, migrations, where):
        raise ReadOnlyStoreError(
            where,
            f"has schema version {version}, made by an older tasktrail; this one reads "
            f"version {latest_version(migrations)}, and migrating it writes",
            fix,
        )

"""Versioned schemas: each database backend keeps an ordered list of migration steps.

A database records the version its schema is at in a `schema_version` table; an empty database
is at version 0. Opening a database runs, in one transaction, every step above its version and
stamps the new version, so a crash halfway leaves the old schema intact. A database at a version
above the newest step was written by a newer tasktrail and is refused with `SchemaVersionError`,
never opened half-understood.

Steps are append-only: a released step is never edited, a change to the schema is a new step.

What both database backends share besides: the statement that reads the version, the check a
read-only open makes (`require_current`: it cannot migrate), and column lists made from the row
Structs (`columns`), so that a column is named once, in `eventstore.log.backends.base`.
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
    "Migration",
    "columns",
    "latest_version",
    "pending_migrations",
    "require_current",
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
IDEMPOTENCY_BY_ID: Final = (
    "idempotency: keyed by id, then scope, so ids made in time order append to the index; "
    "with the time each result was recorded, so compaction can forget old ones"
)
LOG_LAYOUT: Final = (
    "history through the version index: where each try starts is kept once per try, and "
    "times and positions are found by a search over versions; the per-event try and time "
    "indexes, which cost every write a page each, go"
)


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

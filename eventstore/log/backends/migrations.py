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
    "SELECT_SCHEMA_VERSION",
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

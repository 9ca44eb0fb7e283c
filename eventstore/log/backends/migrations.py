"""Versioned schemas: each database backend keeps an ordered list of migration steps.

A database records the version its schema is at in a `schema_version` table; an empty database
is at version 0. Opening a database runs, in one transaction, every step above its version and
stamps the new version, so a crash halfway leaves the old schema intact. A database at a version
above the newest step was written by a newer tasktrail and is refused with `SchemaVersionError`,
never opened half-understood.

Steps are append-only: a released step is never edited, a change to the schema is a new step.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from eventstore.log.errors import SchemaVersionError

__all__ = ["Migration", "latest_version", "pending_migrations"]


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

"""How far the mirror is complete, and the catch-up after a crash.

The watermark (table `tasktrail_mirror`, one row, in Airflow's database) is a time of tasktrail's
log: every write recorded before it is in Airflow's tables. The mirror writer advances it in the
transaction of each batch. A process that died after a log commit and before the mirror write
left the watermark behind that write; the next process's writer repairs the scopes the log wrote
since (`ScopeFilter(since=...)`), before it writes anything else.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import BigInteger, Column, MetaData, String, Table, select
from sqlalchemy.orm import Session

from eventstore.airflow.mirror import compare_mirror, current_rows
from eventstore.log.scopes import Scope, scope_from_key
from eventstore.store import ScopeFilter, Store

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from eventstore.airflow.backend import TasktrailBackend

__all__ = ["WATERMARK", "catch_up", "read_watermark", "write_watermark"]

_NAME = "mirror"

WATERMARK = Table(
    "tasktrail_mirror",
    MetaData(),
    Column("name", String(50), primary_key=True),
    # Microseconds since the epoch, as tasktrail's log records time.
    Column("through", BigInteger, nullable=False),
)


def write_watermark(connection: Connection, through: int) -> None:
    """Advance the watermark to `through` (never back), in the caller's transaction."""
    connection.execute(
        _advance_statement(connection.dialect.name), {"name": _NAME, "through": through}
    )


@functools.cache
def _advance_statement(dialect: str) -> Any:
    """The upsert that moves the watermark forward only, built once per dialect: each batch
    binds its time to it instead of building and compiling a statement."""
    table = WATERMARK
    if dialect == "mysql":
        from sqlalchemy import func
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        mysql = mysql_insert(table)
        return mysql.on_duplicate_key_update(
            through=func.greatest(table.c.through, mysql.inserted.through)
        )
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    newer = statement.excluded.through
    return statement.on_conflict_do_update(
        index_elements=["name"], set_={"through": newer}, where=table.c.through < newer
    )


def read_watermark(engine: Engine) -> int | None:
    """The watermark, making its table if Airflow's database has none yet; None if unset."""
    WATERMARK.create(engine, checkfirst=True)
    with engine.connect() as connection:
        found: int | None = connection.scalar(
            select(WATERMARK.c.through).where(WATERMARK.c.name == _NAME)
        )
        return found


async def catch_up(engine: Engine, store: Store, backend: TasktrailBackend, now: int) -> int:
    """Repair the mirror rows of the scopes written since the watermark; how many scopes.

    With no watermark yet (tasktrail's first mirror writer on this database: the releases before
    it wrote the mirror with each request) the mirror is taken as complete up to `now`."""
    through = await anyio.to_thread.run_sync(read_watermark, engine)
    if through is None:
        await anyio.to_thread.run_sync(_advance, engine, now)
        return 0
    rows = await store.recent_scopes(ScopeFilter(since=through, limit=None))
    scopes = [scope_from_key(row.scope_key) for row in rows]
    if not scopes:
        return 0
    projection = await current_rows(store, scopes)
    await anyio.to_thread.run_sync(_repair, engine, backend, projection, scopes, now)
    return len(scopes)


def _advance(engine: Engine, through: int) -> None:
    with engine.begin() as connection:
        write_watermark(connection, through)


def _repair(
    engine: Engine,
    backend: TasktrailBackend,
    projection: dict[Scope, Any],
    scopes: list[Scope],
    through: int,
) -> None:
    from eventstore.log.scopes import scope_key

    with Session(engine) as session, session.begin():
        only = frozenset(scope_key(scope) for scope in scopes)
        compare_mirror(backend, session, projection, True, known=only, only=only)
        write_watermark(session.connection(), through)

"""The mirror writer: one per process and Airflow database, on the backend's bridge loop.

A write returns once the log has committed it; what it changes in Airflow's tables is queued
here, and written in log order, a batch per transaction, on the writer's own connection (so 32
concurrent requests share one commit of Airflow's database, and a request one at a time does not
wait for it). A change queued alone waits up to `LINGER` for others, so that requests one at a
time share commits too. Paths that read the mirror (`check_mirror`, `cleanup`, the plugin's
REST routes) call `drain` first, which writes the batch at once: they see every write that has
returned.

With each batch the writer records how far the mirror is complete (`catchup.WATERMARK`); at its
start in a process it repairs the scopes written since then (a crash between a log commit and
its mirror write), before anything queued is written.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

import anyio
from anyio.abc import TaskStatus

from eventstore.airflow.catchup import catch_up, write_watermark
from eventstore.airflow.place import Place
from eventstore.airflow.scopes import Writer
from eventstore.log.events import to_micros
from eventstore.store import Store

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session

    from eventstore.airflow.backend import TasktrailBackend

__all__ = ["REPAIR", "MirrorOp", "MirrorWriter", "has_written", "lock_mirror"]

T = TypeVar("T")

logger = logging.getLogger("tasktrail.airflow")

REPAIR = "python -m eventstore.airflow mirror --repair"

# How long a change queued alone waits for more before the batch is written, unless someone
# waits for the queue (`drain`) or the writer stops. Requests one at a time then share a commit
# of Airflow's database too, instead of each paying a transaction, the watermark and an fsync
# for its one row. 10 ms: requests one at a time come 1.5–3 ms apart (bench_airflow), so a
# batch gathers several; a row still reaches Airflow's tables within milliseconds.
LINGER = 0.01


class MirrorOp(NamedTuple):
    """One change of Airflow's tables: a row upserted (`text` None: no row), a row deleted, or
    a place cleared."""

    kind: Literal["upsert", "delete", "clear"]
    place: Place
    key: str | None = None
    text: str | None = None
    writer: Writer | None = None
    expires_at: datetime | None = None
    all_map_indices: bool = False

    def statement(self, dialect: str) -> tuple[Any, dict[str, Any]] | None:
        """The statement and its parameters; None: nothing to write (no place in Airflow)."""
        if self.kind == "upsert":
            assert self.key is not None
            assert self.writer is not None
            return self.place.upsert_statement(
                dialect, self.key, self.text, self.writer, self.expires_at
            )
        if self.kind == "delete":
            return self.place.delete_statement(self.key)
        return self.place.delete_statement(None, self.all_map_indices)

    def apply(self, connection: Connection) -> None:
        statement = self.statement(connection.dialect.name)
        if statement is not None:
            connection.execute(*statement)

    def covers(self, other: MirrorOp) -> bool:
        """Whether this change, made later, leaves nothing of `other` in Airflow's tables."""
        mine, theirs = self.place, other.place
        if mine.asset_id is not None or theirs.asset_id is not None:
            same = mine.asset_id == theirs.asset_id
        else:
            assert mine.task is not None
            assert theirs.task is not None
            a, b = mine.task, theirs.task
            same = (a.dag_id, a.run_id, a.task_id) == (b.dag_id, b.run_id, b.task_id) and (
                (self.kind == "clear" and self.all_map_indices) or a.map_index == b.map_index
            )
        if self.kind == "clear":
            return same
        return same and other.kind != "clear" and other.key == self.key


def has_written(session: Session) -> bool:
    """Whether the session's transaction holds writes of its own (flushed or not)."""
    if session.new or session.dirty or session.deleted:
        return True
    if not session.in_transaction():
        return False
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # pysqlite opens a transaction at the first write only.
        dbapi = connection.connection.dbapi_connection
        return bool(getattr(dbapi, "in_transaction", True))
    if dialect == "postgresql":
        assigned = connection.exec_driver_sql("SELECT txid_current_if_assigned()").scalar()
        return assigned is not None
    return True


def lock_mirror(connection: Connection) -> None:
    """Hold the mirror's lock till the transaction ends: the writer's batches and the changes a
    caller's own transaction makes take turns (SQLite: its write lock; PostgreSQL: an advisory
    lock), so a batch checks what such a change superseded after that change committed."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        if not getattr(connection.connection.dbapi_connection, "in_transaction", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('tasktrail_mirror'))")


class MirrorWriter:
    """Queues the mirror's changes on the bridge loop and writes them in batches."""

    def __init__(self, engine: Engine, target: Any, backend: TasktrailBackend) -> None:
        self.engine = engine
        self.target = target
        self.backend = backend  # what the catch-up mirrors a value as (its `mirror` setting)
        self.submitted = 0  # changes queued, ever; read from any thread
        self.written = 0  # changes written (or given up), ever
        self._pending: list[tuple[int, MirrorOp]] = []  # (number, change), in log order
        # Changes a caller's own transaction made (`supersede`), with the number of the first
        # queued change after them: queued changes before it that they cover are skipped.
        self._superseding: list[tuple[int, MirrorOp]] = []
        self._registry = threading.Lock()
        # Writes between the start of their log append and their queueing: the watermark stays
        # before the oldest of them.
        self._inflight: dict[int, int] = {}
        self._tokens = itertools.count()
        self._stopping = False

    def now(self) -> int:
        clock = self.target.now() if isinstance(self.target, Store) else datetime.now(UTC)
        return to_micros(clock)

    @property
    def idle(self) -> bool:
        return self.written >= self.submitted

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The writer's task: the catch-up, then batches until `stop()`."""
        self._wake = anyio.Event()
        self._flush = anyio.Event()  # set: someone waits for the queue (drain) or stop()
        self._done = anyio.Event()
        self._finished = anyio.Event()
        task_status.started()
        try:
            if isinstance(self.target, Store):
                try:
                    await catch_up(self.engine, self.target, self.backend, self.now())
                except Exception:
                    logger.warning(
                        "tasktrail could not bring Airflow's state store tables up to date with "
                        "its log at start; run `%s`",
                        REPAIR,
                        exc_info=True,
                    )
            while self._pending or not self._stopping:
                if not self._pending:
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                if len(self._pending) == 1:  # more queued meanwhile: a batch is there already
                    with anyio.move_on_after(LINGER):
                        await self._flush.wait()
                self._flush = anyio.Event()
                batch, self._pending = self._pending, []
                through = min([*self._inflight.values(), self.now()])
                await anyio.to_thread.run_sync(self._write, batch, through)
                self.written += len(batch)
                oldest = self._pending[0][0] if self._pending else self.submitted
                with self._registry:
                    self._superseding = [s for s in self._superseding if s[0] > oldest]
                done, self._done = self._done, anyio.Event()
                done.set()
        finally:
            self._finished.set()

    async def write(
        self,
        operation: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        mirror: Callable[[T], MirrorOp | None],
    ) -> T:
        """Run a log write on the loop, then queue its mirror change (none if it raised)."""
        token = next(self._tokens)
        self._inflight[token] = self.now()
        try:
            result = await operation(self.target, *args)
            change = mirror(result)
            if change is not None:
                self._pending.append((self.submitted, change))
                self.submitted += 1
                self._wake.set()
            return result
        finally:
            del self._inflight[token]

    async def drain(self) -> None:
        """Wait until every change queued before this call is written."""
        wanted = self.submitted
        while self.written < wanted and not self._finished.is_set():
            self._flush.set()  # the batch being gathered is awaited: no more lingering
            await self._done.wait()

    async def stop(self) -> None:
        """Write what is queued, then end the writer's task."""
        self._stopping = True
        self._wake.set()
        self._flush.set()
        await self._finished.wait()

    def supersede(self, change: MirrorOp) -> None:
        """Record a change a caller's transaction made itself (it holds the mirror's lock): the
        queued changes it covers are not written after it. Called from the caller's thread."""
        with self._registry:
            self._superseding.append((self.submitted, change))

    def _superseded(self, number: int, change: MirrorOp) -> bool:
        with self._registry:
            return any(number < n and later.covers(change) for n, later in self._superseding)

    def _write(self, batch: list[tuple[int, MirrorOp]], through: int) -> None:
        """One transaction for the batch and the watermark; if it fails, each change alone,
        so one bad change (a row whose DagRun is gone) costs only itself."""
        try:
            with self.engine.begin() as connection:
                lock_mirror(connection)
                changes = [c for n, c in batch if not self._superseded(n, c)]
                _apply(connection, changes)
                write_watermark(connection, through)
            return
        except Exception:
            logger.debug("a batch of mirror writes failed; writing them one by one", exc_info=True)
        for number, change in batch:
            try:
                with self.engine.begin() as connection:
                    lock_mirror(connection)
                    if not self._superseded(number, change):
                        change.apply(connection)
            except Exception as error:
                logger.warning(
                    "tasktrail could not write Airflow's state store row (%s %s, key %r): %s; "
                    "the log has the write; run `%s`",
                    change.kind,
                    change.place.task or f"asset id {change.place.asset_id}",
                    change.key,
                    error,
                    REPAIR,
                )


def _apply(connection: Connection, changes: list[MirrorOp]) -> None:
    """The changes in order; a run of rows for one statement goes as one executemany."""
    dialect = connection.dialect.name
    run: list[dict[str, Any]] = []
    current: Any = None
    for change in changes:
        found = change.statement(dialect)
        if found is None:
            continue
        statement, params = found
        if statement is not current or change.kind != "upsert":
            if run:
                connection.execute(current, run)
            current, run = statement, []
        run.append(params)
    if run:
        connection.execute(current, run)

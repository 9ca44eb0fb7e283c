"""The store API: `open_store` and the `Store` it opens, the face every other face goes through.

The store holds the log's backend; no other face touches it. What the faces read comes back as
the store's answer types (`CurrentRow`, `ScopeRow`, re-exported here), and what they write goes
through `append` and group commit. The accessors task code awaits live in
`eventstore.accessors`; reads go straight to the projection and apply expiry with the store's
clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import AsyncResource

from eventstore._opening import Opening
from eventstore.accessors import AssetStore, ScopeOpener, TaskStore
from eventstore.log.archive import open_archive
from eventstore.log.backends import open_backend
from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import CurrentFilter, CurrentRow, ScopeFilter, ScopeRow
from eventstore.log.config import Clock, StoreConfig, system_clock
from eventstore.log.envelope import ERASED, plain_json
from eventstore.log.errors import ReadOnlyStoreError, StoreClosedError
from eventstore.log.events import to_micros
from eventstore.log.feed import Feed, ScopeMatch, Subscription
from eventstore.log.master_keys import master_keys_from_env
from eventstore.log.requests import AppendRequest, AppendResult, EraseOp
from eventstore.log.scopes import AssetScope, Scope, TaskScope, scope_from_key, scope_key
from eventstore.log.values import decode_value
from eventstore.log.vault import RotationReport, Vault
from eventstore.log.writer import GroupCommitWriter
from projections.compaction import CompactionReport, Ledger, compact
from projections.compaction import Progress as CompactionProgress
from projections.history import History
from projections.reencrypt import ReencryptReport
from projections.reencrypt import reencrypt as reencrypt_log
from projections.scrub import scrub as scrub_log
from projections.verify import Progress, VerifyReport, rebuild, verify

# The faces take the types the store's reads and writes answer with from here, not from the
# log's backends.
__all__ = [
    "DEFAULT_URL",
    "AppendResult",
    "AssetStore",
    "CurrentRow",
    "ScopeFilter",
    "ScopeRow",
    "Store",
    "TaskStore",
    "open_store",
]

DEFAULT_URL: Final = "sqlite:///tasktrail.db"


def default_url() -> str:
    return os.environ.get("TASKTRAIL_DB") or DEFAULT_URL


def open_store(
    url: str | None = None,
    config: StoreConfig | None = None,
    clock: Clock | None = None,
) -> Opening[Store]:
    """Open the store at `url` (default: $TASKTRAIL_DB or ./tasktrail.db).

    `async with open_store(url) as store:` closes it at the end of the block;
    `store = await open_store(url)` hands it over, to be closed with `await store.aclose()`.
    Any task may close it, not only the one that opened it.

    With master keys (`StoreConfig.master_keys`, else $TASKTRAIL_MASTER_KEYS) values are
    encrypted at rest; the keys are checked against the store's key store before anything else.
    """
    return Opening(partial(_open_store, url, config, clock))


async def _open_store(url: str | None, config: StoreConfig | None, clock: Clock | None) -> Store:
    config = config or StoreConfig()
    url = url or default_url()
    master_keys = tuple(config.master_keys) or master_keys_from_env()
    vault = await Vault.open(url, master_keys, config.key_store, read_only=config.read_only)
    try:
        backend = await open_backend(url, config)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await vault.aclose()
        raise
    return Store(backend, config, clock or system_clock, vault)


class Store(AsyncResource, ScopeOpener[TaskStore, AssetStore]):
    """One open store. Make accessors with `task_store` and `asset_store`.

    Close it with `aclose()` (or use it in `async with`), from any task.
    """

    def __init__(
        self, backend: LogBackend, config: StoreConfig, clock: Clock, vault: Vault | None = None
    ) -> None:
        # The log's storage: the store hands it to projections (history, compaction, verify);
        # faces read and write through the store's methods, never through it.
        self.backend = backend
        self.config = config
        self.vault = vault or Vault()
        self._clock = clock
        self._writer = GroupCommitWriter(backend, config, self.now, self.vault)
        # The audit archive compaction writes to and history reads from (None: none).
        self.archive = open_archive(config.archive_url or os.environ.get("TASKTRAIL_ARCHIVE"))
        self._scope_ids: dict[str, int] = {}
        self._compacting = anyio.Lock()
        # What the last compaction found, so the next one plans only what changed since.
        self._compaction_ledger = Ledger()
        self._feed = Feed(backend, self.vault)
        self._closed = False
        self._close_done = anyio.Event()

    def now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(f"the store's clock returned a naive datetime {now!r}; return UTC")
        return now

    def _now_micros(self) -> int:
        """now() as the integer microseconds rows are compared in. The system clock is read
        straight: time_ns floored to the microsecond is what datetime.now(UTC) gives."""
        if self._clock is system_clock:
            return time.time_ns() // 1000
        return to_micros(self.now())

    def open_task(
        self, scope: TaskScope, try_number: int | None = None, actor: str = "task"
    ) -> TaskStore:
        return TaskStore(self, scope, try_number, actor)

    def open_asset(self, scope: AssetScope, actor: str = "task") -> AssetStore:
        return AssetStore(self, scope, None, actor)

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreClosedError()
        if self.config.read_only:
            raise ReadOnlyStoreError(
                "the store",
                "is open read-only (StoreConfig(read_only=True), --read-only): nothing was written",
                "open it without read_only to write",
            )

    async def append(self, request: AppendRequest) -> AppendResult:
        """Append one request through group commit; its ops land together or not at all."""
        if self._closed or self.config.read_only:
            self._check_writable()
        result = await self._writer.append(request)
        seq = result.seq
        if seq is not None and seq > self._feed.head:
            self._feed.committed(seq)  # wakes this store's subscribers at once
        return result

    def subscribe(
        self,
        after_seq: int = 0,
        scope: Scope | ScopeMatch | None = None,
        *,
        mask: bool = False,
        page: int = 500,
        through_seq: int | None = None,
    ) -> Subscription:
        """Every event after position `after_seq`, in position order, then each new one as it
        commits: `async for event in store.subscribe(): ...` (see `eventstore.log.feed`).

        `scope`: one task or asset scope, or a `ScopeMatch` (dag, run, task, map index, kind).
        Never skips and never repeats a position; writes of other processes and replicas
        arrive within `Feed.poll_interval` seconds. The iteration ends when the store closes.
        mask: a value written with sensitive=True comes with value None (as `History.events`).
        through_seq: end the iteration after this position instead of following for ever.
        """
        if self._closed:
            raise StoreClosedError()
        return Subscription(
            self._feed,
            self.scope_id,
            after_seq=after_seq,
            scope=scope,
            page=page,
            mask=mask,
            through_seq=through_seq,
        )

    def end_subscriptions(self) -> None:
        """End every subscription's iteration now (a service shutting down ends its streams);
        new ones end at once too. The store itself stays open for writes."""
        self._feed.close()

    async def scope_id(self, scope: Scope, key: str | None = None) -> int | None:
        """The backend's id of a scope, or None if nothing was ever written to it (`key`: the
        scope's key, when the caller has it already)."""
        key = key or scope_key(scope)
        scope_id = self._scope_ids.get(key)
        if scope_id is None:
            row = await self.backend.select_scope(key)
            if row is None:
                return None
            scope_id = self._scope_ids[key] = row.scope_id
        return scope_id

    async def version(self, scope: Scope) -> int:
        """The scope's current version: the number of events ever appended to it."""
        row = await self.backend.select_scope(scope_key(scope))
        return 0 if row is None else row.version

    async def last_seq(self) -> int:
        """The log's head: the position of the last event committed (0 for an empty log), by
        any process or replica."""
        return (await self.backend.select_head()).last_seq

    async def read(self, scope: Scope, key: str) -> CurrentRow | None:
        """The live projection row of a key, or None if absent or expired."""
        skey = scope_key(scope)
        scope_id = await self.scope_id(scope, skey)
        if scope_id is None:
            return None
        rows = await self.backend.select_current(scope_id, CurrentFilter(key=key))
        row = rows[0] if rows else None
        if row is None or _expired(row, to_micros(self.now())):
            return None
        vault = self.vault
        # Nothing awaited for a key at hand (or a plaintext store): a get's hot path.
        if vault.store is not None and vault.unready(skey, (row.value,)):
            await self.ready(scope, (row,))
        return row

    async def read_value(self, scope: Scope, key: str, skey: str | None = None) -> Any:
        """A get: the key's current value, opened; None if it is absent, expired or erased (a
        stored value is never None). `skey`: the scope's key, when the caller keeps it.

        One point read of the value alone; a sealed value, bound to the version it was
        written at, is opened from its whole row."""
        skey = skey or scope_key(scope)
        scope_id = self._scope_ids.get(skey)
        if scope_id is None:
            scope_id = await self.scope_id(scope, skey)
            if scope_id is None:
                return None
        stored = await self.backend.select_value(scope_id, key, self._now_micros())
        if stored is None:
            return None
        encoded = plain_json(stored)
        if encoded is not None:
            return decode_value(encoded)
        row = await self.read(scope, key)
        value = None if row is None else self.open_value(scope, row)
        return None if value is ERASED else value

    async def read_all(self, scope: Scope) -> list[CurrentRow]:
        """Every live projection row of the scope, ordered by key."""
        scope_id = await self.scope_id(scope)
        if scope_id is None:
            return []
        now = to_micros(self.now())
        rows = [r for r in await self.backend.select_current(scope_id) if not _expired(r, now)]
        await self.ready(scope, rows)
        return rows

    async def read_page(self, scope: Scope, *, after: str | None, limit: int) -> list[CurrentRow]:
        """Up to `limit` live projection rows of the scope with keys after `after`, ordered by
        key: one page of a listing, at the cost of the page whatever the size of the scope."""
        scope_id = await self.scope_id(scope)
        if scope_id is None or limit <= 0:
            return []
        now = to_micros(self.now())
        rows = await self.backend.select_current(
            scope_id, CurrentFilter(after_key=after, limit=limit, now=now)
        )
        await self.ready(scope, rows)
        return rows

    async def ready(self, scope: Scope, rows: Sequence[CurrentRow]) -> None:
        """Fetch the data keys the rows' sealed values need, if they are not at hand (nothing
        awaited when they are). The reads above call it: their caller opens the rows
        (open_value, open_json) before it awaits anything else, or calls it again after."""
        if self.vault.store is None:
            return
        key = scope_key(scope)
        values = [r.value for r in rows]
        if self.vault.unready(key, values):
            await self.vault.ready({key: values})

    def open_value(self, scope: Scope, row: CurrentRow) -> Any:
        """The value a projection row holds, opened if it is sealed; ERASED if it was erased."""
        return self.vault.open_stored(scope_key(scope), row.key, row.version, row.value)

    def open_json(self, scope: Scope, row: CurrentRow) -> bytes | None:
        """The JSON of the value a projection row holds; None if it was erased."""
        return self.vault.open_json(scope_key(scope), row.key, row.version, row.value)

    async def erase(self, scope: Scope) -> AppendResult:
        """Erase a scope: destroy its data keys and its current values at once (crypto-shredding).

        The scope is cleared and an `erased` event appended; its history keeps every event's
        metadata, but every value before the erasure reads as erased, also from an old backup of
        the log when the store is encrypted. Plain values written before encryption was turned on
        are scrubbed from the stored events (their backups keep them). Irreversible: the keys are
        destroyed before the events are written. Writes after it start afresh with a new key.
        """
        self._check_writable()
        result = await self.append(AppendRequest(scope=scope, ops=[EraseOp()], actor="system"))
        scope_id = await self.scope_id(scope)
        if scope_id is not None and result.seq is not None:
            await scrub_log(self.backend, scope_id, result.seq)
        if self.archive is not None:
            # Sealed values there are unreadable now that the keys are gone; plain ones are
            # rewritten out of the archive's files.
            await self.archive.ascrub(scope_key(scope))
        return result

    async def reencrypt(self, progress: Progress | None = None) -> ReencryptReport:
        """Seal every plain value left from before encryption was turned on (resumable)."""
        self._check_writable()
        return await reencrypt_log(self.backend, self.vault, progress)

    async def rotate_keys(self) -> RotationReport:
        """Re-wrap every data key with the first master key; retire master keys no longer used."""
        self._check_writable()
        return await self.vault.rotate()

    def history(self, scope: Scope) -> History:
        """The history of a task or asset scope: events, states as of a point, diffs, tries."""
        if self._closed:
            raise StoreClosedError()
        return History(
            self.backend, scope, self.vault, self.archive, append=self.append, clock=self.now
        )

    async def recent_scopes(self, where: ScopeFilter) -> list[ScopeRow]:
        """Scopes most recently written first, filtered by dag, run, task and time, paged."""
        if self._closed:
            raise StoreClosedError()
        return await self.backend.select_scopes(where)

    async def written_scopes(self) -> list[Scope]:
        """Every scope the log ever had a write for, erased and compacted ones included."""
        return [scope_from_key(row.scope_key) for row in await self.backend.select_scopes()]

    async def every_current(self) -> list[tuple[Scope, CurrentRow]]:
        """Every projection row with its scope, expired or not: what a copy of the projection
        (Airflow's tables, say) is checked against."""
        rows = await self.backend.select_current()
        if not rows:
            return []
        keys = {row.scope_id: row.scope_key for row in await self.backend.select_scopes()}
        scopes = {scope_id: scope_from_key(key) for scope_id, key in keys.items()}
        values: dict[str, list[bytes]] = {}
        for row in rows:
            values.setdefault(keys[row.scope_id], []).append(row.value)
        await self.vault.ready(values)
        return [(scopes[row.scope_id], row) for row in rows]

    async def appended_events(self) -> int:
        """How many events were ever appended (compaction may have removed some since)."""
        return sum(row.version for row in await self.backend.select_scopes())

    async def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Fold the whole log and compare it with the projection; with an archive, check
        every archive file against its manifest's checksum too."""
        report = await verify(self.backend, progress)
        if self.archive is None:
            return report
        problems = await self.archive.acheck()
        return msgspec.structs.replace(
            report, ok=report.ok and not problems, archive_problems=problems
        )

    async def rebuild(self, progress: Progress | None = None) -> int:
        """Recompute the projection from the log; returns the number of keys it holds."""
        self._check_writable()
        return await rebuild(self.backend, progress)

    async def compact(
        self, dry_run: bool = False, *, progress: CompactionProgress | None = None
    ) -> CompactionReport:
        """Remove expired keys and superseded history beyond the horizon; see
        `projections.compaction`. A dry run plans and reports the same, and changes nothing.

        Writes keep being served while it runs. Compactions of one store take turns; a
        compaction (not a dry run) while another process or replica compacts the same database
        raises `CompactionRunningError` and changes nothing.
        """
        if dry_run and self._closed:
            raise StoreClosedError()
        if not dry_run:
            self._check_writable()
        async with self._compacting:
            if dry_run:
                return await self._compact(dry_run=True, progress=progress)
            async with self.backend.compaction_lock():
                return await self._compact(dry_run=False, progress=progress)

    async def _compact(
        self, *, dry_run: bool, progress: CompactionProgress | None
    ) -> CompactionReport:
        return await compact(
            self.backend,
            self.config,
            self.now(),
            self.append,
            dry_run=dry_run,
            progress=progress,
            archive=self.archive,
            ledger=self._compaction_ledger,
        )

    async def aclose(self) -> None:
        """Stop taking writes, commit those queued and in flight, and close the database.

        Writes after it raise `StoreClosedError`. Idempotent, and any task may call it: a
        second call waits for the first to finish. Shielded: a close that started completes.
        """
        if self._closed:
            await self._close_done.wait()
            return
        self._closed = True
        self._feed.close()  # subscribers waiting for news end their iteration
        with anyio.CancelScope(shield=True):
            try:
                await self._writer.aclose()
            finally:
                try:
                    await self.backend.aclose()
                finally:
                    await self.vault.aclose()
                    self._close_done.set()


def _expired(row: CurrentRow, now: int) -> bool:
    return row.expires_at is not None and row.expires_at <= now

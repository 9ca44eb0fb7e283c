"""Erasure (crypto-shredding): an erased scope's values are unreadable through every path,
its metadata stays."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eventstore import ERASED, StoreConfig, TaskScope, generate_master_key, open_store
from eventstore.cli import cli
from eventstore.log.backends.rows import EventFilter
from eventstore.log.scopes import scope_key
from projections import At
from tests.conftest import FakeClock, StoreFactory

SCOPE = TaskScope("etl", "run_1", "ingest")
OTHER = TaskScope("etl", "run_1", "other")
MARKER = "okapi-lantern-9120"


async def fill(store, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    ts = store.task_store("etl", "run_1", "ingest", try_number=1)
    await ts.set("token", f"{MARKER}-1")
    await ts.set("progress", {"rows": 5})
    clock.advance()
    ts2 = store.task_store("etl", "run_1", "ingest", try_number=2)
    await ts2.set("token", f"{MARKER}-2", sensitive=True)
    await ts2.delete("progress")
    await store.task_store("etl", "run_1", "other").set("kept", f"{MARKER}-other")


@pytest.fixture(params=["encrypted", "plain"])
def config(request: pytest.FixtureRequest, backend_url: str, tmp_path: Path) -> StoreConfig:
    if request.param == "plain":
        return StoreConfig()
    return encrypted(backend_url, tmp_path)


def encrypted(url: str, folder: Path) -> StoreConfig:
    """An encrypting config; a PostgreSQL store keeps its keys in a file of its own."""
    key_store = f"sqlite:///{folder / 'pg.keys'}" if url.startswith("postgresql") else None
    return StoreConfig(master_keys=(generate_master_key(),), key_store=key_store)


async def test_erased_scope_reads_as_erased_through_every_path(
    make_store: StoreFactory, config: StoreConfig, clock: FakeClock
) -> None:
    async with make_store(config) as store:
        await fill(store, clock)
        history = store.history(SCOPE)
        before = await history.events()
        clock.advance()
        result = await store.erase(SCOPE)
        assert result.events == 2

        ts = store.task_store("etl", "run_1", "ingest", try_number=2)
        assert await ts.get("token") is None
        assert await ts.items() == {}

        events = await history.events()
        assert [e.kind for e in events] == [*(e.kind for e in before), "clear", "erased"]
        for old, now in zip(before, events, strict=False):
            # The metadata stays: kind, key, time, try, actor, position.
            assert (old.seq, old.kind, old.key, old.recorded_at, old.try_number, old.actor) == (
                now.seq,
                now.kind,
                now.key,
                now.recorded_at,
                now.try_number,
                now.actor,
            )
            if now.kind == "set":
                assert now.value is None
                assert now.erased
        assert events[-1].actor == "system"
        assert events[-1].detail is not None
        assert all(e.value is None for e in await history.timeline("token"))
        assert all(e.erased for e in await history.timeline("token"))

        assert await history.state(At.end_of_try(1)) == {"progress": ERASED, "token": ERASED}
        assert await history.state(At.end_of_try(2)) == {"token": ERASED}
        assert await history.state(At.version(result.version)) == {}
        diff = await history.diff(At.end_of_try(1), At.end_of_try(2))
        assert diff.removed == {"progress": ERASED}
        assert diff.changed == {}
        assert [t.try_number for t in await history.tries()] == [1, 2]

        # Other scopes are untouched; verify still holds.
        assert await store.task_store("etl", "run_1", "other").get("kept") == f"{MARKER}-other"
        assert (await store.verify()).ok

        # The scope can be written again, with a new data key.
        await ts.set("token", "after")
        assert await ts.get("token") == "after"
        assert (await history.events())[-1].value == "after"
        assert await history.state(At.end_of_try(1)) == {"progress": ERASED, "token": ERASED}


@pytest.mark.parametrize("keys", ["encrypted", "plain"])
async def test_erasure_leaves_no_value_in_the_files(
    tmp_path: Path, keys: str, clock: FakeClock
) -> None:
    config = StoreConfig() if keys == "plain" else encrypted("sqlite:", tmp_path)
    db = tmp_path / "trail.db"
    url = f"sqlite:///{db}"
    async with open_store(url, config=config, clock=clock) as store:
        await fill(store, clock)
        await store.erase(SCOPE)
    assert leaked(tmp_path, f"{MARKER}-1") == []


def leaked(folder: Path, needle: str) -> list[str]:
    return [p.name for p in folder.iterdir() if needle.encode() in p.read_bytes()]


async def test_an_old_backup_of_the_log_reads_as_erased(tmp_path: Path, clock: FakeClock) -> None:
    key = generate_master_key()
    db = tmp_path / "trail.db"
    keys = tmp_path / "trail.db.keys"
    url = f"sqlite:///{db}"
    config = StoreConfig(master_keys=(key,))
    async with open_store(url, config=config, clock=clock) as store:
        await fill(store, clock)
    backup = tmp_path / "backup.db"
    shutil.copy(db, backup)  # the log backed up before the erasure, without its keys file
    async with open_store(url, config=config, clock=clock) as store:
        await store.erase(SCOPE)
    # The backup restored beside the live key store: every value of the erased scope is gone.
    restored = StoreConfig(master_keys=(key,), key_store=f"sqlite:///{keys}")
    async with open_store(f"sqlite:///{backup}", config=restored, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        assert await ts.get("token") is None
        assert await ts.items() == {}
        events = await store.history(SCOPE).events()
        assert [e.kind for e in events] == ["set", "set", "set", "delete"]
        assert all(e.erased for e in events if e.kind == "set")
        assert await store.history(SCOPE).state(At.end_of_try(1)) == {
            "progress": ERASED,
            "token": ERASED,
        }
        assert await store.task_store("etl", "run_1", "other").get("kept") == f"{MARKER}-other"


async def test_sets_queued_around_an_erasure_in_one_batch(
    make_store: StoreFactory, backend_url: str, tmp_path: Path
) -> None:
    import anyio

    config = encrypted(backend_url, tmp_path)
    async with make_store(config) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set("seed", 0)
        order: list[str] = []

        async def write(key: str) -> None:
            await ts.set(key, key)
            order.append(key)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "before")
            tg.start_soon(store.erase, SCOPE)
            tg.start_soon(write, "after")
        events = await store.history(SCOPE).events()
        kinds = [(e.kind, e.key, e.erased) for e in events]
        erased_at = kinds.index(("erased", None, False))
        assert all(erased for kind, _, erased in kinds[:erased_at] if kind == "set")
        assert await ts.items() == {k: k for _, k, _ in kinds[erased_at:] if k}
        assert (await store.verify()).ok


def test_cli_erase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_master_key()
    monkeypatch.setenv("TASKTRAIL_MASTER_KEYS", key)
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    runner = CliRunner()
    from eventstore import open_blocking_store

    with open_blocking_store(url) as store:
        store.task_store("etl", "run_1", "ingest").set("token", MARKER)
    args = ["erase", "--db", url, "--dag", "etl", "--run", "run_1", "--task", "ingest"]
    refused = runner.invoke(cli, args, input="n\n")
    assert refused.exit_code == 1
    result = runner.invoke(cli, [*args, "--yes"])
    assert result.exit_code == 0, result.output
    assert "erased" in result.output
    shown = runner.invoke(
        cli, ["history", "--db", url, "--dag", "etl", "--run", "run_1", "--task", "ingest"]
    )
    assert shown.exit_code == 0, shown.output
    assert "<erased>" in shown.output
    assert MARKER not in shown.output
    args = ["as-of", "--db", url, "--dag", "etl", "--run", "run_1", "--task", "ingest"]
    state = runner.invoke(
        cli,
        [*args, "--version", "1", "--json"],
    )
    assert state.exit_code == 0, state.output
    assert '"token": "<erased>"' in state.output


async def test_two_stores_on_one_file_share_data_keys_and_see_an_erasure(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    config = encrypted(url, tmp_path)
    async with (
        open_store(url, config=config, clock=clock) as a,
        open_store(url, config=config, clock=clock) as b,
    ):
        ta = a.task_store("etl", "run_1", "ingest")
        tb = b.task_store("etl", "run_1", "ingest")
        await ta.set("from_a", 1)
        await tb.set("from_b", 2)  # b finds a's data key rather than making its own
        assert await ta.items() == {"from_a": 1, "from_b": 2}
        assert await tb.items() == {"from_a": 1, "from_b": 2}
        await b.erase(SCOPE)
        # a held the old key in memory: it neither seals new values nor opens old ones with it.
        await ta.set("after", 3)
        assert await tb.items() == {"after": 3}
        assert [e.erased for e in await a.history(SCOPE).events(kinds=["set"])] == [
            True,
            True,
            False,
        ]
        assert await b.history(SCOPE).state(At.seq(1)) == {"from_a": ERASED}


async def test_compaction_removes_an_erased_scopes_values(
    make_store: StoreFactory, backend_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    async with make_store(encrypted(backend_url, tmp_path)) as store:
        await fill(store, clock)
        erased = await store.erase(SCOPE)
        report = await store.compact()  # no horizon: only the erased values go
        assert report.superseded_events == 3
        scope_id = await store.scope_id(SCOPE)
        assert scope_id is not None
        rows = await store.backend.select_events(scope_id, EventFilter())
        # The erased sets are gone; the erasure stays.
        kinds = [r.kind for r in rows]
        assert "set" not in kinds
        assert kinds[-2:] == ["erased", "compacted"]
        assert rows[-2].seq == erased.seq
        marker = (await store.history(SCOPE).events(after_seq=rows[-1].seq - 1))[0]
        assert "values of an erased scope" in marker.detail["reason"]  # type: ignore[index]
        assert await store.task_store("etl", "run_1", "other").get("kept") == f"{MARKER}-other"
        assert (await store.verify()).ok


async def test_erasure_leaves_no_value_in_the_wal_of_an_open_store(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "trail.db"
    async with open_store(f"sqlite:///{db}", clock=clock) as store:  # a plaintext store
        await fill(store, clock)
        await store.erase(SCOPE)
        assert leaked(tmp_path, f"{MARKER}-1") == []


def _compiled_secure_delete() -> str:
    conn = sqlite3.connect(":memory:")
    try:
        options = {row[0] for row in conn.execute("PRAGMA compile_options")}
    finally:
        conn.close()
    return "ON" if "SECURE_DELETE" in options else "OFF"


@pytest.fixture(params=["build", "OFF", "ON"])
def secure_delete_default(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The secure_delete every new SQLite connection starts with: this build's own default
    (ON where SQLite was compiled with SECURE_DELETE, as Debian's is; OFF upstream), or the
    other one, set on each connection as it is made, as that build would have it."""
    if request.param == "build":
        return _compiled_secure_delete()
    setting: str = request.param
    connect = sqlite3.connect

    def connect_as_built(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.execute(f"PRAGMA secure_delete = {setting}")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect_as_built)
    return setting


@pytest.mark.parametrize("keys", ["encrypted", "plain"])
async def test_every_erasure_in_one_process_overwrites_the_removed_values(
    tmp_path: Path, clock: FakeClock, keys: str, secure_delete_default: str
) -> None:
    config = StoreConfig() if keys == "plain" else encrypted("sqlite:", tmp_path)
    db = tmp_path / "trail.db"
    scopes = [TaskScope("etl", "run_1", f"task_{n}") for n in range(3)]
    async with open_store(f"sqlite:///{db}", config=config, clock=clock) as store:
        for n, scope in enumerate(scopes):
            ts = store.task_store(scope.dag_id, scope.run_id, scope.task_id, try_number=1)
            for i in range(10):  # one write each: the pages split as the scope grows
                await ts.set(f"k{i}", f"{MARKER}-s{n}-v{i}")
        for n, scope in enumerate(scopes):
            await store.erase(scope)
            # This scope's values are gone from the file and its WAL; the later scopes' stay.
            for i in range(10):
                assert leaked(tmp_path, f"{MARKER}-s{n}-v{i}") == [], (n, i)
            if keys == "plain" and n + 1 < len(scopes):
                assert leaked(tmp_path, f"{MARKER}-s{n + 1}-v0") != []
            assert await store.task_store("etl", "run_1", "task_2").get("k0") == (
                None if n == 2 else f"{MARKER}-s2-v0"
            )


def _wrapped_keys(keys_file: Path) -> dict[str, bytes]:
    conn = sqlite3.connect(f"file:{keys_file}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT scope_key, wrapped FROM data_keys").fetchall()
    finally:
        conn.close()
    return {str(scope): bytes(wrapped) for scope, wrapped in rows}


def _files_holding(folder: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and needle in p.read_bytes())


async def test_a_destroyed_data_key_is_in_no_file_of_the_key_store(
    tmp_path: Path, clock: FakeClock, secure_delete_default: str
) -> None:
    db = tmp_path / "trail.db"
    keys_file = tmp_path / "trail.db.keys"
    config = encrypted("sqlite:", tmp_path)
    scopes = [TaskScope("etl", "run_1", f"task_{n}") for n in range(40)]
    async with open_store(f"sqlite:///{db}", config=config, clock=clock) as store:
        for scope in scopes:  # a key each, made one after the other: the pages split
            await store.task_store(scope.dag_id, scope.run_id, scope.task_id).set("v", 1)
        wrapped = _wrapped_keys(keys_file)
        assert len(wrapped) == len(scopes)
        for n in (0, 17, 39):
            key = scope_key(scopes[n])
            assert _files_holding(tmp_path, wrapped[key]) != []
            await store.erase(scopes[n])
            # Gone from the key store file and its WAL while the store is still open.
            assert _files_holding(tmp_path, wrapped[key]) == [], n
        kept = scope_key(scopes[1])
        assert _files_holding(tmp_path, wrapped[kept]) != []
        assert await store.task_store("etl", "run_1", "task_1").get("v") == 1
    for n in (0, 17, 39):
        assert _files_holding(tmp_path, wrapped[scope_key(scopes[n])]) == []


async def test_after_a_rotation_no_file_of_the_key_store_holds_a_key_as_the_old_master_wrapped_it(
    tmp_path: Path, clock: FakeClock, secure_delete_default: str
) -> None:
    db = tmp_path / "trail.db"
    keys_file = tmp_path / "trail.db.keys"
    old, new = generate_master_key(), generate_master_key()
    url = f"sqlite:///{db}"
    async with open_store(url, config=StoreConfig(master_keys=(old,)), clock=clock) as store:
        for n in range(20):
            await store.task_store("etl", "run_1", f"task_{n}").set("v", n)
    wrapped_by_old = _wrapped_keys(keys_file)
    both = StoreConfig(master_keys=(new, old))
    async with open_store(url, config=both, clock=clock) as store:
        report = await store.rotate_keys()
        assert report.rewrapped == 20
        for key, wrapped in wrapped_by_old.items():
            assert _files_holding(tmp_path, wrapped) == [], key
    async with open_store(url, config=StoreConfig(master_keys=(new,)), clock=clock) as store:
        assert await store.task_store("etl", "run_1", "task_7").get("v") == 7

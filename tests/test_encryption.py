"""Encryption at rest: sealed values, master keys checked at open, rotation, reencrypt."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from eventstore import (
    DecryptionError,
    MasterKeyError,
    StoreConfig,
    TaskScope,
    generate_master_key,
    open_store,
)
from eventstore.log.backends.base import WriteTransaction
from eventstore.log.envelope import is_sensitive
from eventstore.log.errors import ConfigError
from eventstore.log.master_keys import parse_master_keys
from eventstore.log.vault import Vault
from projections import At
from tests.conftest import FakeClock, StoreFactory, postgres_schema_url
from tests.test_erasure import encrypted

SCOPE = TaskScope("etl", "run_1", "ingest")
MARKER = "zebra-sesame-4471"  # a value no encoding or key name contains by chance


@pytest.fixture
def key() -> str:
    return generate_master_key()


def files_of(db: Path) -> list[Path]:
    return [p for p in db.parent.iterdir() if p.name.startswith(db.name)]


def leaks(db: Path, needle: str = MARKER) -> list[str]:
    return [p.name for p in files_of(db) if needle.encode() in p.read_bytes()]


async def write_history(store_url: str, config: StoreConfig, clock: FakeClock) -> None:
    async with open_store(store_url, config=config, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        await ts.set("token", f"{MARKER}-1")
        await ts.set_many({"url": {"signed": f"{MARKER}-url"}, "n": 1})
        clock.advance()
        ts2 = store.task_store("etl", "run_1", "ingest", try_number=2)
        await ts2.set("token", f"{MARKER}-2", sensitive=True)
        await ts2.delete("n")
        await store.asset_store(name="orders").set("watermark", f"{MARKER}-asset")


def test_generated_keys_parse_and_are_distinct() -> None:
    a, b = generate_master_key(), generate_master_key()
    assert a != b
    parsed = parse_master_keys([a, b])
    assert [k.key_id for k in parsed] == [a.split(".")[0], b.split(".")[0]]


@pytest.mark.parametrize("bad", ["nodot", "k1.short", "bad id!.AAAA", ""])
def test_malformed_master_key_is_a_config_error_without_the_secret(bad: str) -> None:
    with pytest.raises(ConfigError, match="master key 1") as caught:
        StoreConfig(master_keys=(bad,))
    if "." in bad:
        assert bad.split(".", 1)[1] not in str(caught.value)


def test_config_repr_hides_master_keys(key: str) -> None:
    text = repr(StoreConfig(master_keys=(key,)))
    assert key.split(".")[1] not in text
    assert "master_keys=<1 hidden>" in text


async def test_encrypted_store_reads_back_every_value(
    make_store: StoreFactory, backend_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    async with make_store(encrypted(backend_url, tmp_path)) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        await ts.set_many({"a": {"rows": [1, 2]}, "b": "x"})
        clock.advance()
        ts2 = store.task_store("etl", "run_1", "ingest", try_number=2)
        await ts2.set("a", 2, sensitive=True)
        assert await ts2.get("a") == 2
        assert await ts2.items() == {"a": 2, "b": "x"}
        history = store.history(SCOPE)
        events = await history.events()
        assert [(e.key, e.value, e.sensitive) for e in events] == [
            ("a", {"rows": [1, 2]}, False),
            ("b", "x", False),
            ("a", 2, True),
        ]
        assert await history.state(At.end_of_try(1)) == {"a": {"rows": [1, 2]}, "b": "x"}
        diff = await history.diff(At.end_of_try(1), At.end_of_try(2))
        assert diff.changed == {"a": ({"rows": [1, 2]}, 2)}
        assert [e.value for e in await history.timeline("a")] == [{"rows": [1, 2]}, 2]
        assert (await store.verify()).ok
        assert await store.rebuild() == 2
        assert await ts2.items() == {"a": 2, "b": "x"}
        row = await store.read(SCOPE, "a")
        assert row is not None
        assert row.value[0] == 1  # sealed
        assert is_sensitive(row.value)


async def test_no_value_in_plaintext_in_any_file(tmp_path: Path, key: str) -> None:
    db = tmp_path / "trail.db"
    url = f"sqlite:///{db}"
    config = StoreConfig(master_keys=(key,))
    await write_history(url, config, FakeClock())
    # While a store is open, its WAL holds the latest pages: look there too.
    async with open_store(url, config=config) as store:
        await store.task_store("etl", "run_2", "ingest").set("live", f"{MARKER}-wal")
        names = {p.name for p in files_of(db)}
        assert {"trail.db", "trail.db-wal", "trail.db.keys"} <= names
        assert leaks(db) == []
        assert await store.task_store("etl", "run_2", "ingest").get("live") == f"{MARKER}-wal"
    assert leaks(db) == []


async def test_plaintext_store_does_show_the_marker(tmp_path: Path) -> None:
    # The control of the test above: without keys the marker is there to find.
    db = tmp_path / "trail.db"
    await write_history(f"sqlite:///{db}", StoreConfig(), FakeClock())
    assert "trail.db" in leaks(db)
    assert not (tmp_path / "trail.db.keys").exists()


async def test_swapped_ciphertext_fails_to_open(tmp_path: Path, key: str) -> None:
    db = tmp_path / "trail.db"
    url = f"sqlite:///{db}"
    config = StoreConfig(master_keys=(key,))
    async with open_store(url, config=config) as store:
        await store.task_store("etl", "run_1", "ingest").set_many({"a": "A", "b": "B"})
    with sqlite3.connect(db) as conn:
        _, b = (
            conn.execute("SELECT value FROM current WHERE key = ?", (k,)).fetchone()[0]
            for k in "ab"
        )
        conn.execute("UPDATE current SET value = ? WHERE key = 'a'", (b,))
        payloads = dict(conn.execute("SELECT key, payload FROM events WHERE kind = 'set'"))
        # The event of "a" now carries b's ciphertext (under the key name "a").
        moved = payloads["b"].replace(b'"key":"b"', b'"key":"a"')
        conn.execute("UPDATE events SET payload = ? WHERE key = 'a'", (moved,))
    async with open_store(url, config=config) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        assert await ts.get("b") == "B"
        with pytest.raises(DecryptionError, match=r"'a'.*does not open"):
            await ts.get("a")
        with pytest.raises(DecryptionError, match="moved from another row"):
            await store.history(SCOPE).events(key="a")
        with pytest.raises(DecryptionError):
            await store.history(SCOPE).state(At.version(2))


async def test_opening_without_keys_or_with_wrong_keys_fails_before_any_write(
    tmp_path: Path, key: str
) -> None:
    db = tmp_path / "trail.db"
    url = f"sqlite:///{db}"
    async with open_store(url, config=StoreConfig(master_keys=(key,))) as store:
        await store.task_store("etl", "run_1", "ingest").set("a", MARKER)
    size = db.stat().st_size
    with pytest.raises(MasterKeyError, match=r"is encrypted .* pass its master keys"):
        async with open_store(url):
            pass
    key_id = key.split(".")[0]
    wrong_secret = f"{key_id}.{generate_master_key().split('.')[1]}"
    with pytest.raises(MasterKeyError, match=f"master key {key_id} is not the key"):
        async with open_store(url, config=StoreConfig(master_keys=(wrong_secret,))):
            pass
    with pytest.raises(MasterKeyError, match=f"written with master key {key_id}"):
        async with open_store(url, config=StoreConfig(master_keys=(generate_master_key(),))):
            pass
    assert db.stat().st_size == size


async def test_master_keys_come_from_the_environment(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    monkeypatch.setenv("TASKTRAIL_MASTER_KEYS", f" {key} ,")
    async with open_store(url) as store:
        await store.task_store("etl", "run_1", "ingest").set("a", MARKER)
        assert store.vault.encrypting
    monkeypatch.delenv("TASKTRAIL_MASTER_KEYS")
    with pytest.raises(MasterKeyError):
        async with open_store(url):
            pass


async def test_rotation_keeps_every_value_readable_and_retires_the_old_key(
    tmp_path: Path, clock: FakeClock
) -> None:
    old, new = generate_master_key(), generate_master_key()
    db = tmp_path / "trail.db"
    url = f"sqlite:///{db}"
    await write_history(url, StoreConfig(master_keys=(old,)), clock)
    async with open_store(url, config=StoreConfig(master_keys=(new, old)), clock=clock) as store:
        # New scopes get data keys wrapped by the new key at once.
        await store.task_store("etl", "run_3", "ingest").set("fresh", 1)
        report = await store.rotate_keys()
        assert report.rewrapped == 2
        assert report.data_keys == 3
        assert report.retired == [old.split(".")[0]]
        again = await store.rotate_keys()
        assert again.rewrapped == 0
    async with open_store(url, config=StoreConfig(master_keys=(new,)), clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        assert await ts.items() == {"token": f"{MARKER}-2", "url": {"signed": f"{MARKER}-url"}}
        events = await store.history(SCOPE).events()
        assert next(e.value for e in events if e.kind == "set") == f"{MARKER}-1"
        assert await store.asset_store(name="orders").get("watermark") == f"{MARKER}-asset"
        assert (await store.verify()).ok
    with pytest.raises(MasterKeyError, match="written with master key"):
        async with open_store(url, config=StoreConfig(master_keys=(old,))):
            pass


async def test_rotation_resumes_after_an_interruption(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_master_key(), generate_master_key()
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    async with open_store(url, config=StoreConfig(master_keys=(old,))) as store:
        for n in range(5):
            await store.task_store("etl", f"run_{n}", "t").set("v", n)
    async with open_store(url, config=StoreConfig(master_keys=(new, old))) as store:
        assert store.vault.store is not None
        rewrap = store.vault.store.rewrap
        calls = 0

        async def failing(*args):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 3:
                raise OSError("interrupted")
            await rewrap(*args)

        monkeypatch.setattr(store.vault.store, "rewrap", failing)
        with pytest.raises(OSError, match="interrupted"):
            await store.rotate_keys()
        monkeypatch.setattr(store.vault.store, "rewrap", rewrap)
        report = await store.rotate_keys()
        assert report.rewrapped == 3  # two were done before the interruption
    async with open_store(url, config=StoreConfig(master_keys=(new,))) as store:
        assert [await store.task_store("etl", f"run_{n}", "t").get("v") for n in range(5)] == [
            0,
            1,
            2,
            3,
            4,
        ]


async def test_turning_encryption_on_seals_new_writes_and_reencrypt_seals_old_ones(
    tmp_path: Path, key: str, clock: FakeClock
) -> None:
    db = tmp_path / "trail.db"
    url = f"sqlite:///{db}"
    await write_history(url, StoreConfig(), clock)
    assert "trail.db" in leaks(db)
    config = StoreConfig(master_keys=(key,))
    async with open_store(url, config=config, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=2)
        assert await ts.get("token") == f"{MARKER}-2"
        await ts.set("new", "sealed-from-now")
        before = await store.history(SCOPE).events()
        report = await store.reencrypt()
        assert report.sealed == 5
        assert (await store.reencrypt()).sealed == 0  # resumable: nothing left to do
        assert await store.history(SCOPE).events() == before
        assert await ts.items() == {
            "new": "sealed-from-now",
            "token": f"{MARKER}-2",
            "url": {"signed": f"{MARKER}-url"},
        }
        assert (await store.verify()).ok
        row = await store.read(SCOPE, "token")
        assert row is not None
        assert is_sensitive(row.value)
    assert leaks(db) == []


async def test_a_store_without_keys_refuses_sealed_values_clearly(tmp_path: Path, key: str) -> None:
    db = tmp_path / "trail.db"
    url = f"sqlite:///{db}"
    async with open_store(url, config=StoreConfig(master_keys=(key,))) as store:
        await store.task_store("etl", "run_1", "ingest").set("a", 1)
    shutil.move(tmp_path / "trail.db.keys", tmp_path / "elsewhere.keys")
    async with open_store(url) as store:
        with pytest.raises(MasterKeyError, match="this value is encrypted"):
            await store.task_store("etl", "run_1", "ingest").get("a")
    # With keys but a lost key store: the data key is missing, said as such.
    async with open_store(url, config=StoreConfig(master_keys=(key,))) as store:
        with pytest.raises(DecryptionError, match="not in the key store"):
            await store.task_store("etl", "run_1", "ingest").get("a")


async def test_key_store_can_live_elsewhere(tmp_path: Path, key: str) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    keys = tmp_path / "vault" / "tasktrail.keys"
    config = StoreConfig(master_keys=(key,), key_store=f"sqlite:///{keys}")
    async with open_store(url, config=config) as store:
        await store.task_store("etl", "run_1", "ingest").set("a", 1)
    assert keys.exists()
    assert not (tmp_path / "trail.db.keys").exists()
    async with open_store(url, config=config) as store:
        assert await store.task_store("etl", "run_1", "ingest").get("a") == 1


async def test_postgres_url_needs_a_key_store_setting(key: str) -> None:
    with pytest.raises(ConfigError, match="key_store"):
        async with open_store(
            "postgresql://u@127.0.0.1:1/x", config=StoreConfig(master_keys=(key,))
        ):
            pass


@pytest.mark.parametrize("keys", ["encrypted", "plain"])
async def test_postgres_dump_holds_no_plaintext_value(
    tmp_path: Path, keys: str, clock: FakeClock
) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        pytest.skip("pg_dump is not installed")
    with postgres_schema_url() as url:
        config = StoreConfig() if keys == "plain" else encrypted(url, tmp_path)
        await write_history(url, config, clock)
        base, _, query = url.partition("?")
        schema = query.removeprefix("schema=")
        dump = await anyio.run_process([pg_dump, "--schema", schema, base])
    assert b"CREATE TABLE" in dump.stdout
    # The control: a plain store's dump shows the marker, an encrypted one's never does.
    # BYTEA columns are dumped as hex.
    found = MARKER.encode() in dump.stdout or MARKER.encode().hex().encode() in dump.stdout
    assert found is (keys == "plain")


def test_cli_keygen_rotate_keys_and_reencrypt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from eventstore import open_blocking_store
    from eventstore.cli import cli

    runner = CliRunner()
    old = runner.invoke(cli, ["keygen"]).output.strip()
    new = runner.invoke(cli, ["keygen"]).output.strip()
    assert parse_master_keys([old, new])
    db = tmp_path / "trail.db"
    url = f"sqlite:///{db}"
    with open_blocking_store(url) as store:  # plaintext to begin with
        store.task_store("etl", "run_1", "ingest").set("a", MARKER)
    monkeypatch.setenv("TASKTRAIL_MASTER_KEYS", old)
    sealed = runner.invoke(cli, ["reencrypt", "--db", url, "--json"])
    assert sealed.exit_code == 0, sealed.output
    assert '"sealed": 1' in sealed.output
    monkeypatch.setenv("TASKTRAIL_MASTER_KEYS", f"{new},{old}")
    rotated = runner.invoke(cli, ["rotate-keys", "--db", url])
    assert rotated.exit_code == 0, rotated.output
    assert "re-wrapped 1 of 1 data keys" in rotated.output
    assert f"retired master keys: {old.split('.')[0]}" in rotated.output
    monkeypatch.setenv("TASKTRAIL_MASTER_KEYS", old)
    refused = runner.invoke(cli, ["verify", "--db", url])
    assert refused.exit_code == 3
    assert "written with master key" in refused.output
    monkeypatch.setenv("TASKTRAIL_MASTER_KEYS", new)
    with open_blocking_store(url) as store:
        assert store.task_store("etl", "run_1", "ingest").get("a") == MARKER
    assert leaks(db) == []


async def test_reencrypt_keeps_its_data_keys_when_the_key_store_changes_while_it_waits(
    tmp_path: Path, key: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # reencrypt makes the data keys of a batch, then asks for the write lock. Meanwhile another
    # process makes a key (the key store changed) and a set of this process refreshes the vault,
    # which forgets every key at hand: the batch must still seal with the keys it made.
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    await write_history(url, StoreConfig(), clock)
    async with open_store(url, config=StoreConfig(master_keys=(key,)), clock=clock) as store:
        asked = [anyio.Event(), anyio.Event()]  # reencrypt's transaction, then the set's
        go = anyio.Event()
        write = store.backend.write

        @asynccontextmanager
        async def gated() -> AsyncIterator[WriteTransaction]:
            asked[asked[0].is_set()].set()
            await go.wait()
            async with write() as tx:
                yield tx

        monkeypatch.setattr(store.backend, "write", gated)
        reports = []

        async def run_reencrypt() -> None:
            reports.append(await store.reencrypt())

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_reencrypt)
            await asked[0].wait()
            elsewhere = await Vault.open(url, (key,), None)  # as another process would
            await elsewhere.ensure_keys(["another scope"])
            await elsewhere.aclose()
            tg.start_soon(store.task_store("etl", "run_1", "late").set, "k", 2)
            await asked[1].wait()  # the set refreshed the vault before asking
            go.set()
        assert [report.sealed for report in reports] == [5]
        ts = store.task_store("etl", "run_1", "ingest", try_number=2)
        assert await ts.items() == {"token": f"{MARKER}-2", "url": {"signed": f"{MARKER}-url"}}
        assert (await store.verify()).ok

"""The audit archive over every backend: what compaction removes is written there first, history
reads log + archive, verify checks its checksums, and erasure reaches it."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import FakeClock, StoreFactory
from test_erasure import encrypted

from eventstore import (
    ERASED,
    NEVER_EXPIRE,
    ArchiveError,
    HistoryCompactedError,
    Store,
    StoreConfig,
    TaskScope,
    open_store,
)
from eventstore.log.archive import open_archive
from eventstore.log.errors import ConfigError, ReadOnlyStoreError
from projections import At

HOUR = timedelta(hours=1)
SCOPE = TaskScope("d", "r", "t")
SECRET = "quokka-harbour-5531"


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


def data_files(archive_dir: Path) -> list[Path]:
    return sorted(archive_dir.glob("*.jsonl.gz"))


def manifests(archive_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(p.read_bytes()) for p in sorted(archive_dir.glob("*.manifest.json"))]


async def story(store: Store, clock: FakeClock) -> None:
    """job kept forever, tmp for an hour (written twice), compaction two hours later."""
    ts = store.task_store("d", "r", "t", try_number=1)
    await ts.set("job", "spark-1", retention=NEVER_EXPIRE)  # seq 1
    await ts.set("tmp", f"{SECRET}-1", retention=HOUR)  # seq 2
    await ts.set("tmp", f"{SECRET}-2", retention=HOUR)  # seq 3
    clock.advance(2 * HOUR)


async def test_compaction_archives_every_removed_event_as_stored_in_one_file_per_run(
    make_store: StoreFactory, clock: FakeClock, archive_dir: Path
) -> None:
    async with make_store(StoreConfig(archive_url=str(archive_dir))) as store:
        await story(store, clock)
        scope_id = await store.scope_id(SCOPE)
        assert scope_id is not None
        stored = {row.seq: row async for row in store.backend.select_all_events()}

        report = await store.compact()

        (data,) = data_files(archive_dir)
        (manifest,) = manifests(archive_dir)
        assert report.archive_file == data.name == manifest["file"]
        assert report.archive_bytes == manifest["bytes"] == data.stat().st_size
        assert manifest["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
        assert (manifest["events"], manifest["from_seq"], manifest["through_seq"]) == (2, 2, 3)
        lines = [json.loads(line) for line in gzip.decompress(data.read_bytes()).splitlines()]
        assert [line["seq"] for line in lines] == [2, 3]
        for line in lines:
            row = stored[line["seq"]]
            assert (line["kind"], line["key"], line["version"]) == (row.kind, row.key, row.version)
            assert (line["recorded_at"], line["expires_at"]) == (row.recorded_at, row.expires_at)
            assert json.loads(row.payload) == line["event"]
        # The marker names the run, so history knows the archive holds what it removed.
        (marker,) = [e for e in await store.history(SCOPE).events() if e.kind == "compacted"]
        assert marker.detail is not None
        assert marker.detail["archive"] == manifest["run"]


async def test_with_an_archive_history_answers_as_if_nothing_was_compacted(
    make_store: StoreFactory, clock: FakeClock, archive_dir: Path
) -> None:
    async with make_store(StoreConfig(archive_url=str(archive_dir))) as store:
        await story(store, clock)
        h = store.history(SCOPE)
        before = (await h.state(At.seq(3)), await h.timeline("tmp"), await h.events())

        await store.compact()

        assert await h.state(At.seq(3)) == before[0] == {"job": "spark-1", "tmp": f"{SECRET}-2"}
        assert [e.value for e in await h.timeline("tmp")] == [e.value for e in before[1]]
        events = await h.events()
        assert [e.seq for e in events] == [*(e.seq for e in before[2]), 4]
        assert [e.seq for e in await h.events(key="tmp", limit=1)] == [2]
        assert [e.seq for e in await h.events(after_seq=2, limit=2)] == [3, 4]
        assert await store.task_store("d", "r", "t").items() == {"job": "spark-1"}
    # The same store opened without its archive refuses what the log lost.
    async with make_store() as store:
        if await store.scope_id(SCOPE) is not None:  # memory:// keeps nothing across opens
            with pytest.raises(HistoryCompactedError):
                await store.history(SCOPE).timeline("tmp")


async def test_nothing_removed_and_dry_runs_write_no_archive_file(
    make_store: StoreFactory, clock: FakeClock, archive_dir: Path
) -> None:
    async with make_store(StoreConfig(archive_url=str(archive_dir))) as store:
        await story(store, clock)
        dry = await store.compact(dry_run=True)
        assert (dry.events_removed, dry.archive_file) == (2, None)
        assert data_files(archive_dir) == []
        await store.compact()
        again = await store.compact()
        assert (again.events_removed, again.archive_file) == (0, None)
        assert len(data_files(archive_dir)) == 1


async def test_verify_finds_a_damaged_or_missing_archive_file(
    make_store: StoreFactory, clock: FakeClock, archive_dir: Path
) -> None:
    async with make_store(StoreConfig(archive_url=str(archive_dir))) as store:
        await story(store, clock)
        await store.compact()
        assert (await store.verify()).ok
        (data,) = data_files(archive_dir)
        original = data.read_bytes()
        data.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))

        report = await store.verify()
        assert not report.ok
        assert report.mismatches == []
        (problem,) = report.archive_problems
        assert data.name in problem
        assert "restore it from a backup" in problem
        with pytest.raises(ArchiveError, match="does not match its manifest's SHA-256"):
            await store.history(TaskScope("d", "r", "t")).timeline("tmp")

        data.unlink()
        (problem,) = (await store.verify()).archive_problems
        assert "missing" in problem


async def test_erasing_a_plaintext_scope_leaves_no_readable_value_in_the_archive(
    make_store: StoreFactory, clock: FakeClock, archive_dir: Path
) -> None:
    async with make_store(StoreConfig(archive_url=str(archive_dir))) as store:
        await story(store, clock)
        other = store.task_store("d", "r", "other")
        await other.set("tmp", f"{SECRET}-other", retention=HOUR)
        clock.advance(2 * HOUR)
        await store.compact()
        assert SECRET.encode() in _archive_text(archive_dir)

        await store.erase(SCOPE)

        text = _archive_text(archive_dir)
        assert f"{SECRET}-1".encode() not in text
        assert f"{SECRET}-2".encode() not in text
        assert f"{SECRET}-other".encode() in text  # another scope keeps its values
        assert (await store.verify()).ok
        values = [e.value for e in await store.history(SCOPE).timeline("tmp")]
        assert values == [None, None]
        assert await store.history(SCOPE).state(At.seq(3)) == {"job": ERASED, "tmp": ERASED}
        (manifest,) = manifests(archive_dir)
        assert manifest["rewritten_at"] is not None


async def test_an_encrypted_store_archives_sealed_values_and_erasure_needs_no_rewrite(
    make_store: StoreFactory, backend_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    archive_dir = tmp_path / "archive"
    config = StoreConfig(
        archive_url=str(archive_dir),
        master_keys=encrypted(backend_url, tmp_path).master_keys,
        key_store=encrypted(backend_url, tmp_path).key_store,
    )
    async with make_store(config) as store:
        await story(store, clock)
        await store.compact()
        assert SECRET.encode() not in _archive_text(archive_dir)  # sealed, never plain
        sealed_before = data_files(archive_dir)[0].read_bytes()
        h = store.history(SCOPE)
        assert [e.value for e in await h.timeline("tmp")] == [f"{SECRET}-1", f"{SECRET}-2"]

        await store.erase(SCOPE)

        # The file is untouched: its data key is destroyed, which is enough.
        assert data_files(archive_dir)[0].read_bytes() == sealed_before
        assert [e.value for e in await h.timeline("tmp")] == [None, None]
        assert all(e.erased for e in await h.timeline("tmp"))
        assert (await store.verify()).ok


def _archive_text(archive_dir: Path) -> bytes:
    """Every byte of the archive, raw and decompressed, for a grep."""
    text = b""
    for path in sorted(archive_dir.iterdir()):
        raw = path.read_bytes()
        text += raw + (gzip.decompress(raw) if path.name.endswith(".gz") else b"")
    return text


async def test_the_archive_is_configured_by_path_file_url_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    for where, config in (
        (tmp_path / "a", StoreConfig(archive_url=str(tmp_path / "a"))),
        (tmp_path / "b", StoreConfig(archive_url=(tmp_path / "b").as_uri())),
    ):
        async with open_store("memory://", config=config, clock=clock) as store:
            await story(store, clock)
            assert (await store.compact()).archive_file is not None
        assert len(data_files(where)) == 1
    monkeypatch.setenv("TASKTRAIL_ARCHIVE", str(tmp_path / "c"))
    async with open_store("memory://", clock=clock) as store:
        await story(store, clock)
        await store.compact()
    assert len(data_files(tmp_path / "c")) == 1
    with pytest.raises(ConfigError, match=r"directory path or a file:// URL"):
        StoreConfig(archive_url="s3://bucket/archive")
    assert open_archive(None) is None


async def test_a_read_only_store_reads_its_archive_and_leaves_it_untouched(
    tmp_path: Path, archive_dir: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    clock = FakeClock()
    async with open_store(url, config=StoreConfig(archive_url=str(archive_dir)), clock=clock) as s:
        await story(s, clock)
        await s.compact()
    files = snapshot(archive_dir)
    config = StoreConfig(archive_url=str(archive_dir), read_only=True)
    async with open_store(url, config=config, clock=clock) as store:
        timeline = await store.history(SCOPE).timeline("tmp")
        assert [e.value for e in timeline] == [f"{SECRET}-1", f"{SECRET}-2"]
        assert (await store.verify()).ok
        with pytest.raises(ReadOnlyStoreError):
            await store.erase(SCOPE)
    assert snapshot(archive_dir) == files


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


async def test_an_erasure_interrupted_before_deleting_the_old_file_is_finished_by_the_next(
    archive_dir: Path,
) -> None:
    clock = FakeClock()
    config = StoreConfig(archive_url=str(archive_dir))
    async with open_store("memory://", config=config, clock=clock) as store:
        await story(store, clock)
        await store.compact()
        (original,) = data_files(archive_dir)
        kept = original.read_bytes()
        await store.erase(SCOPE)
        # As if the process had died after switching the manifest, before deleting the old file.
        original.write_bytes(kept)
        assert SECRET.encode() in _archive_text(archive_dir)

        await store.erase(TaskScope("d", "r", "other"))

        assert SECRET.encode() not in _archive_text(archive_dir)
        assert (await store.verify()).ok

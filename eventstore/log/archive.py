"""The audit archive: what compaction removes, kept in immutable files outside the log.

One compaction run writes one data file and then its manifest; a run is in the archive once
its manifest is. Both go through `ArchiveStorage`, a small interface over named, immutable
blobs (a directory now; object storage can follow), which makes each one durable before
`put` returns: on a directory, the file is written under a temporary name, fsynced, renamed
into place, and the directory fsynced.

The data file is gzip-compressed JSON Lines, one event a line, exactly as the log stored it:
position, scope, version, kind, key, expiry and recorded time (integer microseconds since the
epoch, UTC), try, actor, and the stored event itself as JSON (`event`; a sealed value stays
sealed, base64 in `event.sealed`). DuckDB (`read_json_auto('runs/*.jsonl.gz')`) and pandas
(`read_json(path, lines=True)`) read it as it is. The manifest (JSON) names the data file with
its SHA-256 and size, the events it holds and, per scope, how many.

Compaction writes the archive before any event leaves the log, so a crash in between leaves
events in both places, never in neither: readers dedupe by position. The only rewrite is an
erasure's (`scrub`): the scope's plain values are replaced by null in a new data file, the
manifest is switched to it, and the old file is deleted.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import secrets
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import anyio.to_thread
import msgspec

from eventstore.log.backends.rows import EventRow
from eventstore.log.config import archive_directory
from eventstore.log.errors import ArchiveError
from eventstore.log.events import KeySet, decode_event, encode_event

__all__ = [
    "FORMAT",
    "Archive",
    "ArchiveManifest",
    "ArchiveStorage",
    "ArchivedEvent",
    "DirectoryStorage",
    "open_archive",
]

FORMAT: Final = "tasktrail-archive/1"
# gzip's default level: 30 bytes an event where Parquet (zstd) took 21 and zstd JSON Lines 23,
# with no dependency beyond the standard library (see docs/how-to/keep-an-audit-archive.md).
_LEVEL: Final = 6
_NAME: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_NULL: Final = b"null"


class ArchivedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a data file: an event as the log stored it, with its scope's key."""

    seq: int
    scope: str  # the scope's key, as in the log (eventstore.log.scopes.scope_key)
    version: int
    kind: str
    key: str | None
    expires_at: int | None  # microseconds since the epoch, UTC
    recorded_at: int
    try_number: int | None
    actor: str
    event: msgspec.Raw  # the stored event, byte for byte

    def row(self, scope_id: int) -> EventRow:
        return EventRow(
            self.seq,
            scope_id,
            self.version,
            self.kind,
            self.key,
            self.expires_at,
            self.recorded_at,
            self.try_number,
            self.actor,
            bytes(self.event),
        )


class ArchiveManifest(msgspec.Struct, frozen=True, kw_only=True):
    """What one compaction run archived, and how to check it."""

    format: str = FORMAT
    run: str
    file: str  # the data file's name
    sha256: str
    bytes: int
    events: int
    from_seq: int
    through_seq: int
    scopes: dict[str, int]  # scope key: events of it in the file
    created_at: datetime
    rewritten_at: datetime | None = None  # an erasure scrubbed plain values from it


class ArchiveStorage(ABC):
    """Named, immutable blobs. Each `put` is durable and atomic when it returns."""

    @abstractmethod
    def put(self, name: str, data: bytes) -> None:
        """Store `data` under `name` (replacing it, for an erasure's rewrite only)."""

    @abstractmethod
    def get(self, name: str) -> bytes: ...

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the archive is, for messages."""

    def token(self) -> object:
        """A value that changes whenever a blob is put or deleted, so readers can keep what
        they read until then; None: no such value, read again every time."""
        return None


class DirectoryStorage(ArchiveStorage):
    """Blobs as files in one directory (created if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return str(self.path)

    def put(self, name: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / _checked(name)
        temporary = self.path / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            with open(temporary, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(self.path)

    def get(self, name: str) -> bytes:
        return (self.path / _checked(name)).read_bytes()

    def token(self) -> object:
        # The names: every run adds files, and an erasure's rewrite swaps a data file for one
        # of a new name. (A directory's modification time is too coarse to tell two puts apart.)
        return hash(tuple(self.names()))

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if not p.name.startswith("."))

    def delete(self, name: str) -> None:
        (self.path / _checked(name)).unlink(missing_ok=True)
        _fsync_directory(self.path)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"an archive file name is letters, digits, '.', '_' and '-': {name!r}")
    return name


_encoder = msgspec.json.Encoder()
_encode = _encoder.encode
_encode_lines = _encoder.encode_lines
_decode_manifest = msgspec.json.Decoder(ArchiveManifest).decode
_decode_line = msgspec.json.Decoder(ArchivedEvent).decode
_MANIFEST: Final = ".manifest.json"


class Archive:
    """The archive's format over a storage. Blocking methods: call them in a worker thread
    (the `a`-prefixed coroutines do)."""

    def __init__(self, storage: ArchiveStorage, *, cached_files: int = 8) -> None:
        self.storage = storage
        self._cache: OrderedDict[tuple[str, str], dict[str, list[ArchivedEvent]]] = OrderedDict()
        self._cached_files = cached_files
        self._lock = threading.Lock()
        self._manifests: tuple[object, list[ArchiveManifest]] | None = None

    def __repr__(self) -> str:
        return f"<Archive at {self.storage.describe()}>"

    # --- writing ------------------------------------------------------------------------------

    def write_run(self, events: Sequence[ArchivedEvent], now: datetime) -> ArchiveManifest:
        """Archive one compaction run's events: the data file, then the manifest, each durable
        before the next step (and before compaction removes anything from the log)."""
        run = f"compaction-{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"
        data = _compress(events)
        manifest = _manifest(run, f"{run}.jsonl.gz", data, events, now)
        self.storage.put(manifest.file, data)
        self.storage.put(run + _MANIFEST, _encode(manifest))
        return manifest

    async def awrite_run(self, events: Sequence[ArchivedEvent], now: datetime) -> ArchiveManifest:
        return await anyio.to_thread.run_sync(self.write_run, events, now)

    def scrub(self, scope: str) -> int:
        """Erase the scope's plain values from every file holding them: each such file is
        written anew with the values null, the manifest switched to it, and the old file
        deleted. Returns the events scrubbed. Sealed values stay: their data key is gone."""
        scrubbed = 0
        for manifest in self.manifests():
            if scope not in manifest.scopes:
                continue
            events = self._read(manifest)
            changed = False
            out: list[ArchivedEvent] = []
            for e in events:
                if e.scope == scope and e.kind == "set":
                    event = decode_event(bytes(e.event))
                    assert isinstance(event, KeySet)
                    if bytes(event.value) != _NULL:
                        event = msgspec.structs.replace(event, value=msgspec.Raw(_NULL))
                        e = msgspec.structs.replace(e, event=msgspec.Raw(encode_event(event)))
                        scrubbed += 1
                        changed = True
                out.append(e)
            if not changed:
                continue
            now = datetime.now(UTC)
            data = _compress(out)
            file = f"{manifest.run}.{secrets.token_hex(4)}.jsonl.gz"
            rewritten = msgspec.structs.replace(
                _manifest(manifest.run, file, data, out, manifest.created_at), rewritten_at=now
            )
            self.storage.put(file, data)
            self.storage.put(manifest.run + _MANIFEST, _encode(rewritten))
            self.storage.delete(manifest.file)
        self._remove_replaced()
        with self._lock:
            self._cache.clear()
            self._manifests = None
        return scrubbed

    def _remove_replaced(self) -> None:
        """Delete data files an earlier rewrite replaced but did not get to delete (a crash
        between switching the manifest and deleting the old file): they may hold erased values.
        Only files of runs whose manifest names another file; a run being written has none."""
        names = set(self.storage.names())
        for manifest in self.manifests():
            for name in names:
                if (
                    name.startswith(manifest.run + ".")
                    and name.endswith(".jsonl.gz")
                    and name != manifest.file
                ):
                    self.storage.delete(name)

    async def ascrub(self, scope: str) -> int:
        return await anyio.to_thread.run_sync(self.scrub, scope)

    # --- reading ------------------------------------------------------------------------------

    def token(self) -> object:
        """Changes whenever a run is written or rewritten (see ArchiveStorage.token)."""
        return self.storage.token()

    def manifests(self) -> list[ArchiveManifest]:
        """Every complete run, oldest first (a data file without its manifest is not one)."""
        return self.snapshot()[1]

    def snapshot(self) -> tuple[object, list[ArchiveManifest]]:
        """The archive's token (see `token`) and every complete run then: one listing of the
        storage when nothing was written since the last call."""
        token = self.storage.token()
        with self._lock:
            if token is not None and self._manifests is not None and self._manifests[0] == token:
                return self._manifests
        found = []
        for name in self.storage.names():
            if name.endswith(_MANIFEST):
                found.append(_decode_manifest(self.storage.get(name)))
        found.sort(key=lambda m: (m.created_at, m.run))
        with self._lock:
            self._manifests = (token, found)
        return token, found

    async def amanifests(self) -> list[ArchiveManifest]:
        return await anyio.to_thread.run_sync(self.manifests)

    def scope_events(
        self, scope: str, manifests: list[ArchiveManifest] | None = None
    ) -> list[ArchivedEvent]:
        """Every archived event of one scope, by position, each once (in these runs, or in
        every run the archive holds now)."""
        found: dict[int, ArchivedEvent] = {}
        for manifest in self.manifests() if manifests is None else manifests:
            if scope in manifest.scopes:
                for e in self._by_scope(manifest).get(scope, ()):
                    found.setdefault(e.seq, e)
        return [found[s] for s in sorted(found)]

    async def ascope_events(self, scope: str) -> list[ArchivedEvent]:
        return await anyio.to_thread.run_sync(self.scope_events, scope)

    def all_events(self) -> list[ArchivedEvent]:
        """Every archived event, by position, each once (a crash may have archived one twice)."""
        found: dict[int, ArchivedEvent] = {}
        for manifest in self.manifests():
            for e in self._read(manifest):
                found.setdefault(e.seq, e)
        return [found[s] for s in sorted(found)]

    def check(self) -> list[str]:
        """Problems found: a data file missing, or whose checksum or size is not its
        manifest's. Empty when every run checks out."""
        problems = []
        for manifest in self.manifests():
            try:
                data = self.storage.get(manifest.file)
            except FileNotFoundError:
                problems.append(f"{manifest.file}: missing (its manifest is {manifest.run})")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != manifest.sha256 or len(data) != manifest.bytes:
                problems.append(
                    f"{manifest.file}: SHA-256 {digest} and {len(data)} bytes, but the manifest "
                    f"says {manifest.sha256} and {manifest.bytes}; restore it from a backup"
                )
        return problems

    async def acheck(self) -> list[str]:
        return await anyio.to_thread.run_sync(self.check)

    def _read(self, manifest: ArchiveManifest) -> list[ArchivedEvent]:
        try:
            data = self.storage.get(manifest.file)
        except FileNotFoundError:
            raise ArchiveError(
                f"the archive at {self.storage.describe()} lacks {manifest.file}, which the "
                f"manifest of run {manifest.run} names; restore it from a backup, or remove "
                f"{manifest.run}{_MANIFEST} to give up on that run's history"
            ) from None
        if hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise ArchiveError(
                f"{manifest.file} in the archive at {self.storage.describe()} does not match "
                f"its manifest's SHA-256; restore it from a backup (`tasktrail verify` lists "
                f"every such file)"
            )
        return [_decode_line(line) for line in gzip.decompress(data).splitlines() if line]

    def _by_scope(self, manifest: ArchiveManifest) -> dict[str, list[ArchivedEvent]]:
        cache_key = (manifest.file, manifest.sha256)
        with self._lock:
            grouped = self._cache.get(cache_key)
            if grouped is not None:
                self._cache.move_to_end(cache_key)
                return grouped
        grouped = {}
        for e in self._read(manifest):
            grouped.setdefault(e.scope, []).append(e)
        with self._lock:
            self._cache[cache_key] = grouped
            while len(self._cache) > self._cached_files:
                self._cache.popitem(last=False)
        return grouped


# Events encoded and compressed per chunk, the uncompressed lines never all at once. Compaction
# runs this in a worker thread beside the event loop: after each chunk (about half a
# millisecond) the GIL is handed back, or the loop thread, returning from each SQLite call of a
# writer's transaction, would wait up to a whole switch interval (5 ms) for it each time.
_CHUNK: Final = 256


def _compress(events: Sequence[ArchivedEvent]) -> bytes:
    # wbits 31: a gzip stream (header with mtime 0, so the same events give the same bytes).
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, 31)
    parts = []
    for i in range(0, len(events), _CHUNK):
        parts.append(compressor.compress(_encode_lines(events[i : i + _CHUNK])))
        time.sleep(0)  # hands the GIL to a thread waiting for it
    parts.append(compressor.flush())
    return b"".join(parts)


def _manifest(
    run: str, file: str, data: bytes, events: Sequence[ArchivedEvent], now: datetime
) -> ArchiveManifest:
    scopes: dict[str, int] = {}
    for e in events:
        scopes[e.scope] = scopes.get(e.scope, 0) + 1
    return ArchiveManifest(
        run=run,
        file=file,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        events=len(events),
        from_seq=min((e.seq for e in events), default=0),
        through_seq=max((e.seq for e in events), default=0),
        scopes=scopes,
        created_at=now.astimezone(UTC),
    )


def open_archive(url: str | None) -> Archive | None:
    """The archive at a directory path or a file:// URL; None for None or ""."""
    directory = archive_directory(url)
    return None if directory is None else Archive(DirectoryStorage(directory))

"""StoreConfig, retention and the clock: the settings every layer reads."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

import msgspec

from eventstore.log.errors import ConfigError, RetentionTypeError, RetentionValueError
from eventstore.log.master_keys import parse_master_keys

__all__ = [
    "MAX_RETENTION",
    "NEVER_EXPIRE",
    "Clock",
    "NeverExpire",
    "StoreConfig",
    "system_clock",
]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class NeverExpire:
    """The type of NEVER_EXPIRE: a value kept until it is deleted or cleared."""

    _instance: NeverExpire | None = None

    def __new__(cls) -> NeverExpire:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEVER_EXPIRE"

    def __reduce__(self) -> str:
        return "NEVER_EXPIRE"


NEVER_EXPIRE: Final = NeverExpire()

Retention = timedelta | NeverExpire | None

# The longest retention: an expiry must stay a datetime (before year 10000), which now + 1000 years
# is for any clock this side of year 9000. Longer means "keep it": NEVER_EXPIRE.
MAX_RETENTION: Final = timedelta(days=365_000)


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How a store keeps its data. Every field has a safe default."""

    # Retention of a set without an explicit retention; 0 means never expires.
    default_retention_days: float = 30
    # Largest encoded JSON value accepted; 0 disables the limit.
    max_value_bytes: int = 65_535
    # "full": an acknowledged write survives a machine crash; "normal": it survives a process crash.
    durability: Literal["full", "normal"] = "full"
    # Superseded history older than this many days may be compacted; None keeps all history.
    history_horizon_days: float | None = None
    # A write's idempotency id is remembered this many days: a retry within them gets the first
    # result back and appends nothing; compaction forgets older ones. None remembers them all.
    idempotency_days: float | None = 1
    # Group commit: most appends written in one transaction, and most waiting before callers block.
    max_batch: int = 256
    max_pending: int = 8192
    # Encryption at rest (eventstore.log.vault): master keys made by `tasktrail keygen`; the first
    # wraps new data keys, all of them unwrap. Empty: $TASKTRAIL_MASTER_KEYS, else no encryption.
    master_keys: tuple[str, ...] = ()
    # Where the wrapped data keys live, apart from the log: sqlite:///PATH, memory://, or
    # postgresql://USER@HOST/DB?schema=NAME (another schema or database than the log's).
    # None: the file PATH.keys beside a SQLite store PATH (in memory for an in-memory store).
    key_store: str | None = None
    # The audit archive (eventstore.log.archive): a directory path or a file:// URL. Compaction
    # writes every event it removes there first, and history reads log + archive. None:
    # $TASKTRAIL_ARCHIVE, else no archive.
    archive_url: str | None = None
    # Open without writing anything (no migration, no pragma that writes, no key store or file
    # made): reads, history, verify and the web page work; every write raises
    # ReadOnlyStoreError. For a read-only file, folder or mount, a full disk, or an auditor's
    # copy. A SQLite file must exist and have this tasktrail's schema.
    read_only: bool = False

    def __repr__(self) -> str:
        # The master keys are secrets: never in a repr, a log line or a traceback.
        fields = [
            f"{name}={getattr(self, name)!r}"
            for name in self.__struct_fields__
            if name != "master_keys"
        ]
        fields.append(f"master_keys=<{len(self.master_keys)} hidden>")
        return f"StoreConfig({', '.join(fields)})"

    def __post_init__(self) -> None:
        days = self.default_retention_days
        if not math.isfinite(days) or not 0 <= days <= MAX_RETENTION.days:
            raise ConfigError(
                f"default_retention_days must be >= 0 (0 means never expire) and at most "
                f"{MAX_RETENTION.days}, got {days}"
            )
        if self.max_value_bytes < 0:
            raise ConfigError(
                f"max_value_bytes must be >= 0 (0 disables the limit), got {self.max_value_bytes}"
            )
        if self.durability not in ("full", "normal"):
            raise ConfigError(f"durability must be 'full' or 'normal', got {self.durability!r}")
        if self.history_horizon_days is not None and self.history_horizon_days < 0:
            raise ConfigError(
                f"history_horizon_days must be >= 0 or None, got {self.history_horizon_days}"
            )
        remember = self.idempotency_days
        if remember is not None and not (math.isfinite(remember) and remember > 0):
            raise ConfigError(
                f"idempotency_days must be > 0 or None (remember every id), got {remember}"
            )
        if self.max_batch < 1 or self.max_pending < 1:
            raise ConfigError("max_batch and max_pending must be at least 1")
        if isinstance(self.master_keys, str):  # type: ignore[unreachable]
            raise ConfigError("master_keys takes a list of keys, not one str")
        archive_directory(self.archive_url)  # a URL it cannot use is refused here
        if self.master_keys:
            parse_master_keys(self.master_keys)


def check_retention(retention: object) -> None:
    """Refuse a retention `set` cannot use, before anything is queued: the append path then
    takes every retention it is given as valid (a bad one would fail its whole batch)."""
    if retention is None or retention is NEVER_EXPIRE:
        return
    if isinstance(retention, timedelta):
        if retention <= timedelta(0):
            raise RetentionValueError(retention)
        if retention > MAX_RETENTION:
            raise RetentionValueError(retention, MAX_RETENTION)
        return
    raise RetentionTypeError(retention)


def archive_directory(url: str | None) -> str | None:
    """The directory an archive URL names: a path or a file:// URL; None for None or ""."""
    if not url:
        return None
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"archive_url takes a directory path or a file:// URL, got {url!r}; "
            f"e.g. file:///var/lib/tasktrail/archive"
        )
    return unquote(parts.path)

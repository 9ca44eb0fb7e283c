"""The store's rules, run against every backend: each test fails when its rule is broken.

Rejected input must leave nothing behind, so every rejection also compares the whole log, the
projection and the scope heads before and after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from eventstore import (
    NEVER_EXPIRE,
    AssetScope,
    ConcurrencyError,
    StaleAttemptError,
    Store,
    StoreClosedError,
    StoreConfig,
    TaskScope,
    TaskStore,
)
from eventstore.log.backends.rows import CurrentRow, EventRow, ScopeRow
from eventstore.log.config import MAX_RETENTION
from eventstore.log.errors import ValueTooDeepError
from eventstore.log.events import KeySet, ScopeCleared, decode_event, to_micros
from eventstore.log.values import MAX_VALUE_DEPTH

if TYPE_CHECKING:
    from conftest import FakeClock, StoreFactory

Snapshot = tuple[list[EventRow], list[CurrentRow], list[ScopeRow]]


async def snapshot(store: Store) -> Snapshot:
    """Everything a write could change: the whole log, the projection and the scope heads."""
    backend = store.backend
    events = [row async for row in backend.select_all_events()]
    current = sorted(await backend.select_current(), key=lambda r: (r.scope_id, r.key))
    scopes = sorted(await backend.select_scopes(), key=lambda r: r.scope_id)
    return events, current, scopes


async def events_of(store: Store) -> list[EventRow]:
    return [row async for row in store.backend.select_all_events()]


async def assert_rejected(
    store: Store,
    accessor: TaskStore,
    call: Callable[[], Awaitable[Any]],
    error: type[BaseException],
    match: str,
) -> None:
    """`call` raises `error` with `match` and leaves the log, projection and version unchanged."""
    before = await snapshot(store)
    version = await accessor.version()
    items = await accessor.items()
    with pytest.raises(error, match=match):
        await call()
    assert await snapshot(store) == before
    assert await accessor.version() == version
    assert await accessor.items() == items
    assert (await store.verify()).ok


@pytest.fixture
def ts(store: Store) -> TaskStore:
    return store.task_store("etl", "run_1", "ingest")


# --- the accessor methods ------------------------------------------------------------------


async def test_set_then_get_returns_the_value(ts: TaskStore) -> None:
    await ts.set("job_id", "spark-123")
    assert await ts.get("job_id") == "spark-123"


async def test_get_of_absent_key_returns_the_default(ts: TaskStore) -> None:
    assert await ts.get("missing") is None
    assert await ts.get("missing", default=7) == 7
    await ts.set("present", 1)
    assert await ts.get("missing", 7) == 7


async def test_set_overwrites_and_each_write_bumps_the_scope_version(ts: TaskStore) -> None:
    first = await ts.set("offset", 1)
    second = await ts.set("offset", 2)
    assert await ts.get("offset") == 2
    assert (first.version, second.version) == (1, 2)
    assert await ts.version() == 2
    assert first.seq is not None
    assert second.seq is not None
    assert second.seq > first.seq


async def test_delete_removes_the_key(ts: TaskStore) -> None:
    await ts.set("a", 1)
    await ts.set("b", 2)
    result = await ts.delete("a")
    assert result.events == 1
    assert await ts.get("a") is None
    assert await ts.items() == {"b": 2}


async def test_delete_of_absent_key_appends_nothing(store: Store, ts: TaskStore) -> None:
    await ts.set("a", 1)
    before = await snapshot(store)
    result = await ts.delete("never-set")
    assert (result.events, result.seq, result.version) == (0, None, 1)
    assert await snapshot(store) == before


async def test_delete_of_never_written_scope_appends_nothing(store: Store, ts: TaskStore) -> None:
    result = await ts.delete("a")
    assert (result.events, result.seq, result.version) == (0, None, 0)
    assert await events_of(store) == []
    assert await store.backend.select_scopes() == []


async def test_clear_removes_every_key_of_this_map_index_only(store: Store) -> None:
    zero = store.task_store("etl", "run_1", "ingest", map_index=0)
    one = store.task_store("etl", "run_1", "ingest", map_index=1)
    await zero.set_many({"a": 1, "b": 2})
    await one.set("a", 10)
    result = await zero.clear()
    assert result.events == 1
    assert await zero.items() == {}
    assert await zero.get("a") is None
    assert await one.items() == {"a": 10}


async def test_clear_of_empty_scope_appends_nothing(store: Store, ts: TaskStore) -> None:
    result = await ts.clear()
    assert (result.events, result.seq) == (0, None)
    assert await events_of(store) == []
    await ts.set("a", 1)
    await ts.delete("a")
    before = await snapshot(store)
    result = await ts.clear()
    assert (result.events, result.seq, result.version) == (0, None, 2)
    assert await snapshot(store) == before


async def test_items_returns_every_current_key(ts: TaskStore) -> None:
    assert await ts.items() == {}
    await ts.set("b", [1, 2])
    await ts.set("a", {"x": 1})
    await ts.set("b", "again")
    assert await ts.items() == {"a": {"x": 1}, "b": "again"}


async def test_set_many_writes_every_key_in_one_transaction(store: Store, ts: TaskStore) -> None:
    result = await ts.set_many({"offset": 1200, "progress": {"rows": 5}, "done": False})
    assert await ts.items() == {"offset": 1200, "progress": {"rows": 5}, "done": False}
    events = await events_of(store)
    assert [e.key for e in events] == ["offset", "progress", "done"]
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.seq for e in events] == [1, 2, 3]
    assert len({e.recorded_at for e in events}) == 1
    assert (result.version, result.seq, result.events) == (3, 3, 3)


async def test_set_many_with_one_bad_value_writes_nothing(store: Store, ts: TaskStore) -> None:
    await ts.set("kept", 1)
    await assert_rejected(
        store,
        ts,
        lambda: ts.set_many({"good": 1, "bad": float("nan"), "also": 2}),
        ValueError,
        "value for key 'bad' contains NaN or Infinity",
    )


async def test_set_many_with_one_bad_key_writes_nothing(store: Store, ts: TaskStore) -> None:
    await assert_rejected(
        store, ts, lambda: ts.set_many({"good": 1, "": 2}), ValueError, "must not be empty"
    )


async def test_set_many_rejects_a_non_mapping(store: Store, ts: TaskStore) -> None:
    await assert_rejected(
        store,
        ts,
        lambda: ts.set_many([("a", 1)]),  # type: ignore[arg-type]
        TypeError,
        "set_many takes a mapping",
    )


async def test_async_aliases_do_what_the_plain_methods_do(store: Store, ts: TaskStore) -> None:
    await ts.aset("a", 1)
    await ts.aset("b", 2, retention=NEVER_EXPIRE)
    assert await ts.aget("a") == 1
    assert await ts.aget("missing", "dflt") == "dflt"
    await ts.adelete("a")
    assert await ts.aget("a") is None
    await ts.aclear()
    assert await ts.items() == {}
    assert [e.kind for e in await events_of(store)] == ["set", "set", "delete", "clear"]

    assets = store.asset_store(name="warehouse.orders")
    await assets.aset("watermark", 1042)
    assert await assets.aget("watermark") == 1042
    await assets.adelete("watermark")
    assert await assets.aget("watermark", 0) == 0
    await assets.aset("watermark", 1043)
    await assets.aclear()
    assert await assets.items() == {}


async def test_aclear_takes_all_map_indices(store: Store) -> None:
    zero = store.task_store("etl", "run_1", "ingest", map_index=0)
    one = store.task_store("etl", "run_1", "ingest", map_index=1)
    await zero.set("a", 1)
    await one.set("a", 1)
    await zero.aclear(all_map_indices=True)
    assert await one.items() == {}


@pytest.mark.parametrize(
    "other",
    [
        ("etl", "run_1", "ingest", 0),
        ("etl", "run_1", "load", -1),
        ("etl", "run_2", "ingest", -1),
        ("other", "run_1", "ingest", -1),
    ],
)
async def test_each_task_instance_has_its_own_keys(
    store: Store, ts: TaskStore, other: tuple[str, str, str, int]
) -> None:
    neighbour = store.task_store(*other)
    await ts.set("k", "mine")
    await neighbour.set("k", "theirs")
    assert await ts.get("k") == "mine"
    assert await neighbour.get("k") == "theirs"
    await neighbour.clear()
    assert await ts.items() == {"k": "mine"}


async def test_positions_increase_and_versions_count_per_scope(store: Store) -> None:
    a = store.task_store("etl", "run_1", "a")
    b = store.task_store("etl", "run_1", "b")
    await a.set("k", 1)
    await b.set("k", 1)
    await a.set("k", 2)
    await b.delete("k")
    await a.clear()
    events = await events_of(store)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    by_scope: dict[int, list[int]] = {}
    for e in events:
        by_scope.setdefault(e.scope_id, []).append(e.version)
    assert sorted(by_scope.values()) == [[1, 2], [1, 2, 3]]


# --- values --------------------------------------------------------------------------------

VALID_VALUES: list[Any] = [
    "spark-123",
    "",
    0,
    -17,
    2**70,
    -(2**80),
    3.25,
    -0.5,
    1e300,
    True,
    False,
    [],
    {},
    [1, "two", 3.0, None, [None], {"x": None}],
    {"a": None, "b": [1, {"c": None}], "d": {"e": {"f": [True, False]}}},
    "ünïcødé ✓ 日本語 🎉 \x00 \n",
    {"ключ": "值", "🔑": ["ü"]},
]


@pytest.mark.parametrize("value", VALID_VALUES, ids=repr)
async def test_every_json_value_round_trips(ts: TaskStore, value: Any) -> None:
    await ts.set("k", value)
    got = await ts.get("k")
    assert got == value
    assert type(got) is type(value)
    assert (await ts.items())["k"] == value


async def test_bool_values_stay_bools_and_ints_stay_ints(ts: TaskStore) -> None:
    await ts.set_many({"flag": True, "one": 1, "float": 1.0})
    got = await ts.items()
    assert [type(got[k]) for k in ("flag", "one", "float")] == [bool, int, float]


async def test_top_level_none_is_rejected(store: Store, ts: TaskStore) -> None:
    await ts.set("k", 1)
    await assert_rejected(store, ts, lambda: ts.set("k", None), ValueError, "cannot be None")
    await assert_rejected(
        store, ts, lambda: ts.set_many({"a": 1, "k": None}), ValueError, "cannot be None"
    )
    assert await ts.get("k") == 1


class _Thing:
    pass


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 1, 1, tzinfo=UTC),
        {1, 2},
        frozenset({1}),
        b"bytes",
        bytearray(b"x"),
        (1, 2),
        _Thing(),
        {1: "int key"},
        {("a",): "tuple key"},
        {"nested": {2: "int key"}},
        [1, datetime(2026, 1, 1, tzinfo=UTC)],
        {"a": [b"deep"]},
        timedelta(days=1),
    ],
    ids=repr,
)
async def test_non_json_values_are_rejected_with_type_error(
    store: Store, ts: TaskStore, value: Any
) -> None:
    await assert_rejected(store, ts, lambda: ts.set("k", value), TypeError, "is not JSON")


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        [1.0, float("nan")],
        {"a": {"b": [float("inf")]}},
    ],
    ids=repr,
)
async def test_nan_and_infinity_are_rejected_anywhere_in_the_value(
    store: Store, ts: TaskStore, value: Any
) -> None:
    await assert_rejected(store, ts, lambda: ts.set("k", value), ValueError, "NaN or Infinity")


async def test_value_over_max_value_bytes_is_rejected(make_store: StoreFactory) -> None:
    async with make_store(StoreConfig(max_value_bytes=10)) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set("exact", "x" * 8)  # '"xxxxxxxx"' is exactly 10 bytes
        assert await ts.get("exact") == "x" * 8
        await assert_rejected(
            store,
            ts,
            lambda: ts.set("big", "x" * 9),
            ValueError,
            r"value for key 'big' is 11 bytes as JSON, over the limit of 10",
        )
        # The limit counts encoded bytes, not characters.
        await assert_rejected(store, ts, lambda: ts.set("big", "é" * 5), ValueError, "12 bytes")


async def test_default_limit_is_65535_bytes(store: Store, ts: TaskStore) -> None:
    await ts.set("fits", "x" * 65_533)
    await assert_rejected(
        store, ts, lambda: ts.set("big", "x" * 65_534), ValueError, "over the limit of 65535"
    )


async def test_max_value_bytes_zero_disables_the_limit(make_store: StoreFactory) -> None:
    async with make_store(StoreConfig(max_value_bytes=0)) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        big = {"blob": "x" * 200_000}
        await ts.set("big", big)
        assert await ts.get("big") == big


def test_negative_max_value_bytes_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="max_value_bytes must be >= 0"):
        StoreConfig(max_value_bytes=-1)


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "match"),
    [("", "key must not be empty"), ("k" * 513, "513 characters long, the limit is 512")],
)
async def test_empty_and_overlong_keys_are_rejected(
    store: Store, ts: TaskStore, key: str, match: str
) -> None:
    await assert_rejected(store, ts, lambda: ts.set(key, 1), ValueError, match)
    await assert_rejected(store, ts, lambda: ts.delete(key), ValueError, match)
    await assert_rejected(store, ts, lambda: ts.get(key), ValueError, match)


@pytest.mark.parametrize("key", [1, None, b"k", ("a",), 1.5], ids=repr)
async def test_non_str_keys_are_rejected(store: Store, ts: TaskStore, key: Any) -> None:
    match = "key must be a str"
    await assert_rejected(store, ts, lambda: ts.set(key, 1), TypeError, match)
    await assert_rejected(store, ts, lambda: ts.set_many({key: 1}), TypeError, match)
    await assert_rejected(store, ts, lambda: ts.delete(key), TypeError, match)
    await assert_rejected(store, ts, lambda: ts.get(key), TypeError, match)


async def test_key_of_512_characters_is_accepted(ts: TaskStore) -> None:
    key = "k" * 511 + "é"
    await ts.set(key, 1)
    assert await ts.get(key) == 1
    assert await ts.items() == {key: 1}


@pytest.mark.parametrize("key", ["a/b/c", "/", "//lead/", "s3://bucket/key", "ü/日本", " "])
async def test_keys_with_any_characters_are_accepted(ts: TaskStore, key: str) -> None:
    await ts.set(key, key)
    await ts.set("a", "other")
    assert await ts.get(key) == key
    assert (await ts.items())[key] == key
    await ts.delete(key)
    assert await ts.get(key) is None


# --- retention and expiry ------------------------------------------------------------------


async def test_retention_none_uses_default_retention_days(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(default_retention_days=2)) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set("k", 1)
        clock.advance(timedelta(days=2) - timedelta(microseconds=1))
        assert await ts.get("k") == 1
        clock.advance(timedelta(microseconds=1))
        assert await ts.get("k") is None


async def test_fractional_default_retention_days_expire_to_the_microsecond(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(default_retention_days=0.7)) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        start = clock.now
        await ts.set("k", 1)
        (event,) = await events_of(store)
        assert event.expires_at == to_micros(start + timedelta(days=0.7))
        clock.advance(timedelta(days=0.7) - timedelta(microseconds=1))
        assert await ts.get("k") == 1


async def test_default_retention_is_thirty_days(store: Store, clock: FakeClock) -> None:
    ts = store.task_store("etl", "run_1", "ingest")
    await ts.set("k", 1)
    clock.advance(timedelta(days=30) - timedelta(microseconds=1))
    assert await ts.get("k") == 1
    clock.advance(timedelta(microseconds=1))
    assert await ts.get("k") is None


async def test_default_retention_days_zero_never_expires(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(default_retention_days=0)) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set("k", 1)
        clock.advance(timedelta(days=365 * 100))
        assert await ts.get("k") == 1
        (event,) = await events_of(store)
        assert event.expires_at is None


@pytest.mark.parametrize("days", [-1, -0.5])
def test_negative_default_retention_days_is_rejected_by_the_config(days: float) -> None:
    with pytest.raises(ValueError, match="default_retention_days must be >= 0"):
        StoreConfig(default_retention_days=days)


async def test_timedelta_retention_expires_at_now_plus_retention(
    store: Store, ts: TaskStore, clock: FakeClock
) -> None:
    start = clock.now
    await ts.set("k", 1, retention=timedelta(hours=1))
    (event,) = await events_of(store)
    assert event.expires_at == to_micros(start + timedelta(hours=1))
    payload = decode_event(event.payload)
    assert isinstance(payload, KeySet)
    assert payload.expires_at == start + timedelta(hours=1)
    clock.advance(timedelta(minutes=59, seconds=59))
    assert await ts.get("k") == 1


async def test_expired_key_reads_as_absent_from_the_exact_expiry_instant(
    ts: TaskStore, clock: FakeClock
) -> None:
    await ts.set("short", "s", retention=timedelta(seconds=10))
    await ts.set("long", "l", retention=timedelta(seconds=11))
    clock.advance(timedelta(seconds=10) - timedelta(microseconds=1))
    assert await ts.get("short") == "s"
    assert await ts.items() == {"short": "s", "long": "l"}
    clock.advance(timedelta(microseconds=1))
    assert await ts.get("short") is None
    assert await ts.get("short", "gone") == "gone"
    assert await ts.items() == {"long": "l"}
    clock.advance(timedelta(seconds=1))
    assert await ts.items() == {}


async def test_expired_key_can_be_set_again(ts: TaskStore, clock: FakeClock) -> None:
    await ts.set("k", 1, retention=timedelta(seconds=1))
    clock.advance(timedelta(seconds=1))
    assert await ts.get("k") is None
    await ts.set("k", 2, retention=timedelta(seconds=1))
    assert await ts.get("k") == 2


async def test_overwrite_takes_the_new_expiry(ts: TaskStore, clock: FakeClock) -> None:
    await ts.set("k", 1, retention=timedelta(seconds=5))
    await ts.set("k", 2, retention=NEVER_EXPIRE)
    clock.advance(timedelta(days=1000))
    assert await ts.get("k") == 2
    await ts.set("k", 3, retention=timedelta(seconds=5))
    clock.advance(timedelta(seconds=5))
    assert await ts.get("k") is None


async def test_never_expire_outlives_the_default_retention(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(default_retention_days=1)) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set("job_id", "spark-1", retention=NEVER_EXPIRE)
        await ts.set("scratch", 1)
        clock.advance(timedelta(days=3650))
        assert await ts.items() == {"job_id": "spark-1"}
        assert (await events_of(store))[0].expires_at is None


@pytest.mark.parametrize("retention", [7, 7.5, "7d", True, 0], ids=repr)
async def test_retention_that_is_not_a_timedelta_is_a_type_error(
    store: Store, ts: TaskStore, retention: Any
) -> None:
    await assert_rejected(
        store,
        ts,
        lambda: ts.set("k", 1, retention=retention),
        TypeError,
        "retention takes a timedelta",
    )


@pytest.mark.parametrize(
    "retention", [timedelta(0), timedelta(seconds=-1), timedelta(days=-30)], ids=repr
)
async def test_zero_or_negative_timedelta_retention_is_a_value_error(
    store: Store, ts: TaskStore, retention: timedelta
) -> None:
    await assert_rejected(
        store,
        ts,
        lambda: ts.set_many({"a": 1}, retention=retention),
        ValueError,
        "retention must be a positive timedelta",
    )


async def test_retention_beyond_the_longest_is_a_value_error(store: Store, ts: TaskStore) -> None:
    await assert_rejected_alone(
        store,
        lambda: ts.set("k", 1, retention=timedelta.max),
        ValueError,
        "longer than the longest allowed",
    )
    await ts.set("k", 1, retention=MAX_RETENTION)
    assert await ts.get("k") == 1


@pytest.mark.parametrize("days", [365_001, 1e12, float("inf"), float("nan")])
def test_default_retention_days_beyond_the_longest_is_rejected_by_the_config(
    days: float,
) -> None:
    with pytest.raises(ValueError, match=r"default_retention_days must be >= 0 .* at most 365000"):
        StoreConfig(default_retention_days=days)


async def test_expires_at_sets_an_absolute_expiry(ts: TaskStore, clock: FakeClock) -> None:
    await ts.set("k", 1, expires_at=clock.now + timedelta(seconds=3))
    clock.advance(timedelta(seconds=3) - timedelta(microseconds=1))
    assert await ts.get("k") == 1
    clock.advance(timedelta(microseconds=1))
    assert await ts.get("k") is None


async def test_expires_at_past_the_last_utc_datetime_is_rejected(
    store: Store, ts: TaskStore
) -> None:
    late = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))
    await assert_rejected_alone(
        store, lambda: ts.set("k", 1, expires_at=late), ValueError, "outside the UTC calendar"
    )


def _nested(depth: int) -> object:
    """Lists and dicts, `depth` levels of them."""
    value: object = []
    for level in range(depth - 1):
        value = [value] if level % 2 else {"a": value}
    return value


async def test_value_nested_past_the_depth_limit_is_rejected(store: Store, ts: TaskStore) -> None:
    await ts.set("deepest", _nested(MAX_VALUE_DEPTH))
    assert await ts.get("deepest") == _nested(MAX_VALUE_DEPTH)
    for depth in (MAX_VALUE_DEPTH + 1, 5_000):
        await assert_rejected_alone(
            store,
            lambda depth=depth: ts.set("k", {"a": _nested(depth - 1)}),  # type: ignore[misc]
            ValueTooDeepError,
            f"more than {MAX_VALUE_DEPTH} levels deep",
        )


# --- attempt fencing -----------------------------------------------------------------------


def tries(store: Store, *numbers: int | None, map_index: int = -1) -> list[TaskStore]:
    return [store.task_store("etl", "run_1", "ingest", map_index, try_number=n) for n in numbers]


async def test_writes_are_stamped_with_their_try(store: Store) -> None:
    one, two, untracked = tries(store, 1, 2, None)
    await one.set("a", 1)
    await two.set("a", 2)
    await untracked.set("a", 3)
    assert [e.try_number for e in await events_of(store)] == [1, 2, None]


@pytest.mark.parametrize("write", ["set", "set_many", "delete", "clear"])
async def test_lower_try_cannot_write_after_a_newer_try_wrote(store: Store, write: str) -> None:
    one, two = tries(store, 1, 2)
    await one.set("a", "from try 1")
    await two.set("a", "from try 2")
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "set": lambda: one.set("a", "zombie"),
        "set_many": lambda: one.set_many({"a": "zombie", "b": 1}),
        "delete": lambda: one.delete("a"),
        "clear": lambda: one.clear(),
    }
    await assert_rejected(
        store,
        one,
        calls[write],
        StaleAttemptError,
        r"try 1 of task etl/run_1/ingest cannot write: try 2 has already written",
    )
    assert await two.get("a") == "from try 2"


async def test_stale_attempt_error_carries_the_tries(store: Store) -> None:
    one, three = tries(store, 1, 3)
    await three.set("a", 1)
    with pytest.raises(StaleAttemptError) as caught:
        await one.set("a", 2)
    assert (caught.value.try_number, caught.value.latest_try) == (1, 3)
    assert caught.value.scope == TaskScope("etl", "run_1", "ingest")


async def test_same_and_newer_tries_keep_writing(store: Store) -> None:
    one, one_again, two = tries(store, 1, 1, 2)
    await one.set("a", 1)
    await one_again.set("a", 2)
    await two.set("a", 3)
    await two.delete("a")
    assert await two.items() == {}


async def test_a_try_that_never_wrote_does_not_fence(store: Store) -> None:
    one, two = tries(store, 1, 2)
    await two.delete("absent")  # appends nothing, so try 2 has not written
    await one.set("a", 1)
    assert await one.get("a") == 1


async def test_untracked_try_is_not_fenced(store: Store) -> None:
    one, five, untracked = tries(store, 1, 5, None)
    await one.set("a", 1)
    await five.set("a", 5)
    await untracked.set("a", "admin")
    await untracked.delete("a")
    await untracked.set("b", 1)
    await untracked.clear()
    assert [e.try_number for e in await events_of(store)] == [1, 5, None, None, None, None]
    # An untracked write does not lower the fence either.
    with pytest.raises(StaleAttemptError):
        await one.set("a", 1)


async def test_fencing_is_per_map_index(store: Store) -> None:
    (zero_two,) = tries(store, 2, map_index=0)
    (one_one,) = tries(store, 1, map_index=1)
    await zero_two.set("a", 1)
    await one_one.set("a", 1)
    assert await one_one.get("a") == 1


async def test_try_number_must_be_a_non_negative_int(store: Store) -> None:
    with pytest.raises(ValueError, match="try_number must be an int >= 0"):
        store.task_store("etl", "run_1", "ingest", try_number=-1)


# --- expected version ----------------------------------------------------------------------


async def test_expected_version_matching_the_scope_appends(ts: TaskStore) -> None:
    await ts.set("a", 1, expected_version=0)
    await ts.set("a", 2, expected_version=1)
    await ts.set_many({"b": 1, "c": 2}, expected_version=2)
    await ts.delete("b", expected_version=4)
    await ts.clear(expected_version=5)
    assert await ts.version() == 6


@pytest.mark.parametrize("write", ["set", "set_many", "delete", "clear"])
async def test_stale_expected_version_raises_concurrency_error(
    store: Store, ts: TaskStore, write: str
) -> None:
    await ts.set("a", 1)
    await ts.set("a", 2)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "set": lambda: ts.set("a", 3, expected_version=1),
        "set_many": lambda: ts.set_many({"a": 3}, expected_version=1),
        "delete": lambda: ts.delete("a", expected_version=1),
        "clear": lambda: ts.clear(expected_version=1),
    }
    await assert_rejected(
        store,
        ts,
        calls[write],
        ConcurrencyError,
        r"task etl/run_1/ingest is at version 2, the write expected 1",
    )


async def test_expected_version_ahead_of_the_scope_is_stale_too(
    store: Store, ts: TaskStore
) -> None:
    with pytest.raises(ConcurrencyError, match="is at version 0, the write expected 3") as caught:
        await ts.set("a", 1, expected_version=3)
    assert (caught.value.expected_version, caught.value.actual_version) == (3, 0)
    assert await events_of(store) == []


async def test_concurrent_writers_with_the_same_expected_version_only_one_wins(
    ts: TaskStore,
) -> None:
    results = await asyncio.gather(
        *(ts.set("a", i, expected_version=0) for i in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if isinstance(r, BaseException))
    assert await ts.version() == 1


# --- idempotency ---------------------------------------------------------------------------


async def test_repeated_idempotency_id_returns_the_first_result_and_appends_nothing(
    store: Store, ts: TaskStore, clock: FakeClock
) -> None:
    first = await ts.set("a", 1, idempotency_id="op-1")
    before = await snapshot(store)
    clock.advance()
    again = await ts.set("a", 2, idempotency_id="op-1")
    assert again == first
    assert await ts.get("a") == 1
    assert await snapshot(store) == before


@pytest.mark.parametrize("write", ["set_many", "delete", "clear"])
async def test_idempotency_id_covers_every_write(store: Store, ts: TaskStore, write: str) -> None:
    await ts.set_many({"a": 1, "b": 2})
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "set_many": lambda: ts.set_many({"a": 10, "c": 3}, idempotency_id="op"),
        "delete": lambda: ts.delete("a", idempotency_id="op"),
        "clear": lambda: ts.clear(idempotency_id="op"),
    }
    first = await calls[write]()
    before = await snapshot(store)
    assert await calls[write]() == first
    assert await snapshot(store) == before


@pytest.mark.parametrize("scope_exists", [True, False])
async def test_idempotency_id_repeated_in_one_batch_appends_once(
    store: Store, ts: TaskStore, scope_exists: bool
) -> None:
    if scope_exists:
        await ts.set("seed", 0)
    results = await asyncio.gather(*(ts.set("a", i, idempotency_id="op") for i in range(5)))
    assert all(r == results[0] for r in results)
    assert await ts.get("a") == 0
    assert len(await events_of(store)) == 1 + scope_exists


async def test_idempotency_ids_are_per_scope(store: Store) -> None:
    a = store.task_store("etl", "run_1", "a")
    b = store.task_store("etl", "run_1", "b")
    await a.set("k", 1, idempotency_id="op")
    await b.set("k", 2, idempotency_id="op")
    assert (await a.get("k"), await b.get("k")) == (1, 2)


async def test_idempotent_retries_of_many_scopes_in_one_batch_each_return_their_own_result(
    store: Store,
) -> None:
    stores = [store.task_store("etl", "run_1", f"t{i}") for i in range(6)]
    first = [await s.set("k", i, idempotency_id=f"op{i % 2}") for i, s in enumerate(stores)]
    before = await events_of(store)
    # The retries land in one batch: their stored results are loaded together.
    again = await asyncio.gather(
        *(s.set("k", -1, idempotency_id=f"op{i % 2}") for i, s in enumerate(stores))
    )
    assert again == first
    assert [await s.get("k") for s in stores] == list(range(6))
    assert await events_of(store) == before


async def test_idempotent_repeat_is_not_checked_against_expected_version(ts: TaskStore) -> None:
    first = await ts.set("a", 1, expected_version=0, idempotency_id="op")
    await ts.set("b", 1)
    assert await ts.set("a", 1, expected_version=0, idempotency_id="op") == first


# --- clear of every map index --------------------------------------------------------------


async def test_clear_all_map_indices_clears_the_task_in_one_step(
    store: Store, clock: FakeClock
) -> None:
    mapped = [store.task_store("etl", "run_1", "ingest", map_index=i) for i in (-1, 0, 1, 2)]
    for i, accessor in enumerate(mapped):
        await accessor.set_many({"k": i, "shared": "x"})
        clock.advance()
    others = [
        store.task_store("etl", "run_1", "load", map_index=0),
        store.task_store("etl", "run_2", "ingest", map_index=0),
        store.task_store("other", "run_1", "ingest", map_index=0),
    ]
    for other in others:
        await other.set("k", "keep")
    before = await events_of(store)
    clock.advance()

    result = await mapped[1].clear(all_map_indices=True)

    for accessor in mapped:
        assert await accessor.items() == {}
    for other in others:
        assert await other.items() == {"k": "keep"}
    appended = (await events_of(store))[len(before) :]
    assert [e.kind for e in appended] == ["clear"] * 4
    assert [e.seq for e in appended] == list(range(before[-1].seq + 1, before[-1].seq + 5))
    assert len({e.recorded_at for e in appended}) == 1  # one transaction, one time
    for event in appended:
        assert decode_event(event.payload) == ScopeCleared(all_map_indices=True)
    assert result.events == 4
    assert result.version == 3  # the addressed scope: two sets, one clear
    assert (await store.verify()).ok


async def test_clear_all_map_indices_skips_empty_map_indices(store: Store) -> None:
    zero, one, two = (store.task_store("etl", "run_1", "ingest", i) for i in (0, 1, 2))
    await zero.set("a", 1)
    await one.set("a", 1)
    await one.delete("a")
    await two.set("a", 1)
    before = len(await events_of(store))
    result = await zero.clear(all_map_indices=True)
    assert result.events == 2
    assert len(await events_of(store)) == before + 2
    assert await one.version() == 2


async def test_clear_all_map_indices_from_a_map_index_that_never_wrote(store: Store) -> None:
    zero, five = (store.task_store("etl", "run_1", "ingest", i) for i in (0, 5))
    await zero.set("a", 1)
    await five.clear(all_map_indices=True)
    assert await zero.items() == {}
    assert await five.version() == 0


async def test_clear_without_all_map_indices_leaves_siblings(store: Store) -> None:
    zero, one = (store.task_store("etl", "run_1", "ingest", i) for i in (0, 1))
    await zero.set("a", 1)
    await one.set("a", 1)
    await zero.clear(all_map_indices=False)
    assert await one.items() == {"a": 1}


# --- writes that land in one batch see each other ------------------------------------------


async def test_clear_in_the_same_batch_as_a_set_removes_it(ts: TaskStore) -> None:
    await asyncio.gather(ts.set("a", 1), ts.clear())
    assert await ts.items() == {}


async def test_delete_in_the_same_batch_as_a_set_removes_it(ts: TaskStore) -> None:
    await asyncio.gather(ts.set("a", 1), ts.delete("a"))
    assert await ts.items() == {}


async def test_clear_all_map_indices_in_the_same_batch_as_a_new_sibling(store: Store) -> None:
    zero, one = (store.task_store("etl", "run_1", "ingest", i) for i in (0, 1))
    await zero.set("a", 1)
    await asyncio.gather(one.set("b", 1), zero.clear(all_map_indices=True))
    assert await zero.items() == {}
    assert await one.items() == {}
    assert (await store.verify()).ok


# --- assets --------------------------------------------------------------------------------


async def test_asset_entries_never_expire(make_store: StoreFactory, clock: FakeClock) -> None:
    async with make_store(StoreConfig(default_retention_days=1)) as store:
        assets = store.asset_store(name="warehouse.orders")
        await assets.set("watermark", 1042)
        await assets.set_many({"rows": 5, "schema": {"v": 2}})
        clock.advance(timedelta(days=3650))
        assert await assets.items() == {"watermark": 1042, "rows": 5, "schema": {"v": 2}}
        assert all(e.expires_at is None for e in await events_of(store))


async def test_asset_scopes_by_name_and_by_uri_are_separate(store: Store) -> None:
    by_name = store.asset_store(name="orders")
    by_uri = store.asset_store(uri="s3://bucket/orders")
    await by_name.set("k", "name")
    await by_uri.set("k", "uri")
    assert (await by_name.get("k"), await by_uri.get("k")) == ("name", "uri")
    assert by_uri.scope == AssetScope(uri="s3://bucket/orders")


async def test_asset_scope_needs_a_name_or_a_uri(store: Store) -> None:
    with pytest.raises(ValueError, match="AssetScope needs a name or a uri"):
        AssetScope()
    with pytest.raises(ValueError, match="AssetScope needs a name or a uri"):
        store.asset_store()
    assert await events_of(store) == []


async def test_asset_store_applies_the_value_rules(store: Store) -> None:
    assets = store.asset_store(name="orders")
    await assets.set("k", 1)
    before = await snapshot(store)
    with pytest.raises(ValueError, match="cannot be None"):
        await assets.set("k", None)
    with pytest.raises(TypeError, match="key must be a str"):
        await assets.set(1, 1)  # type: ignore[arg-type]
    assert await snapshot(store) == before


# --- recorded time -------------------------------------------------------------------------


async def test_recorded_at_comes_from_the_injected_clock(
    store: Store, ts: TaskStore, clock: FakeClock
) -> None:
    first = await ts.set("a", 1)
    clock.advance(timedelta(minutes=5))
    second = await ts.set("a", 2)
    assert first.recorded_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert second.recorded_at == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    assert [e.recorded_at for e in await events_of(store)] == [
        to_micros(first.recorded_at),
        to_micros(second.recorded_at),
    ]


async def test_recorded_at_never_goes_backwards(
    store: Store, ts: TaskStore, clock: FakeClock
) -> None:
    await ts.set("a", 1)
    clock.advance(timedelta(hours=-1))
    result = await ts.set("a", 2)
    assert result.recorded_at == datetime(2026, 1, 1, tzinfo=UTC)
    times = [e.recorded_at for e in await events_of(store)]
    assert times == sorted(times)


async def test_recorded_at_and_expiry_are_utc_whatever_zone_the_clock_answers_in(
    make_store: StoreFactory,
) -> None:
    # 19:00 the day before in New York's winter zone is 2026-01-01 00:00:00.000007 UTC.
    eastern = datetime(2025, 12, 31, 19, 0, 0, 7, tzinfo=timezone(timedelta(hours=-5)))
    config = StoreConfig(default_retention_days=1.5)
    async with make_store(config, clock_=lambda: eastern) as store:
        result = await store.task_store("etl", "run_1", "ingest").set("a", 1)
        [event] = await store.history(TaskScope("etl", "run_1", "ingest")).events()
    assert result.recorded_at == eastern
    assert result.recorded_at.utcoffset() == timedelta(0)
    assert event.recorded_at == result.recorded_at
    assert event.expires_at == datetime(2026, 1, 2, 12, 0, 0, 7, tzinfo=UTC)
    assert event.expires_at is not None
    assert event.expires_at.utcoffset() == timedelta(0)


async def test_naive_clock_is_refused(make_store: StoreFactory) -> None:
    async with make_store(clock_=lambda: datetime(2026, 1, 1)) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        with pytest.raises(ValueError, match="naive datetime"):
            await ts.set("a", 1)
        assert await events_of(store) == []


# --- verify and reopening ------------------------------------------------------------------


async def test_verify_is_ok_after_every_kind_of_write(store: Store, clock: FakeClock) -> None:
    zero, one = (store.task_store("etl", "run_1", "ingest", i, try_number=1) for i in (0, 1))
    retry = store.task_store("etl", "run_1", "ingest", 0, try_number=2)
    assets = store.asset_store(name="orders", uri="s3://b/orders")
    await zero.set("a", 1, retention=timedelta(seconds=5))
    await zero.set_many({"b": [1, None], "c": {"d": "é"}}, retention=NEVER_EXPIRE)
    await one.set("a", 2, idempotency_id="x")
    await one.set("a", 2, idempotency_id="x")
    await retry.delete("b")
    with pytest.raises(StaleAttemptError):
        await zero.set("a", 3)
    with pytest.raises(ConcurrencyError):
        await one.set("a", 3, expected_version=0)
    clock.advance(timedelta(seconds=5))
    await retry.delete("a")  # expired: appends nothing
    await assets.set("w", 1)
    await one.clear(all_map_indices=True)
    await assets.clear()
    report = await store.verify()
    assert report.ok
    assert report.mismatches == []
    assert report.events == len(await events_of(store)) == 9


async def test_verify_reports_a_projection_that_disagrees_with_the_log(
    store: Store, ts: TaskStore
) -> None:
    await ts.set("a", 1)
    await ts.set("b", 2)
    (row, _) = await store.backend.select_current()
    async with store.backend.write() as tx:
        await tx.delete_current([(row.scope_id, row.key)])
    report = await store.verify()
    assert not report.ok
    assert [(m.key, m.in_projection, m.from_log) for m in report.mismatches] == [
        (row.key, None, row)
    ]
    assert await store.rebuild() == 2
    assert (await store.verify()).ok


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
async def test_data_survives_reopening_the_sqlite_file(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        two = store.task_store("etl", "run_1", "ingest", try_number=2)
        await two.set("job_id", "spark-1", retention=NEVER_EXPIRE)
        await two.set_many({"offset": 2**70, "text": "ü"}, retention=timedelta(hours=1))
        first = await two.set("p", {"n": None}, idempotency_id="op")
        await store.asset_store(name="orders").set("w", 1)
        before = await snapshot(store)

    async with make_store() as store:
        assert await snapshot(store) == before
        two = store.task_store("etl", "run_1", "ingest", try_number=2)
        assert await two.items() == {
            "job_id": "spark-1",
            "offset": 2**70,
            "text": "ü",
            "p": {"n": None},
        }
        assert await store.asset_store(name="orders").get("w") == 1
        assert await two.set("p", 0, idempotency_id="op") == first
        with pytest.raises(StaleAttemptError):
            await store.task_store("etl", "run_1", "ingest", try_number=1).set("x", 1)
        result = await two.set("after", 1)
        assert (result.version, result.seq) == (5, 6)
        clock.advance(timedelta(hours=1))
        assert set(await two.items()) == {"job_id", "p", "after"}
        assert (await store.verify()).ok


# --- text that UTF-8 cannot carry never reaches a batch ------------------------------------

LONE_SURROGATE = "bad\ud800"


async def assert_rejected_alone(
    store: Store, call: Callable[[], Awaitable[Any]], error: type[BaseException], match: str
) -> None:
    """`call` fails with its own clear error; an innocent write sent with it still lands."""
    innocent = store.task_store("etl", "run_1", "innocent")
    before = len(await events_of(store))
    results = await asyncio.gather(call(), innocent.set("k", 1), return_exceptions=True)
    assert isinstance(results[0], error), results[0]
    with pytest.raises(error, match=match):
        raise results[0]
    assert not isinstance(results[1], BaseException), results[1]
    assert await innocent.get("k") == 1
    assert len(await events_of(store)) == before + 1
    assert (await store.verify()).ok


async def test_key_with_a_lone_surrogate_is_rejected(store: Store, ts: TaskStore) -> None:
    await assert_rejected_alone(
        store, lambda: ts.set(LONE_SURROGATE, 1), ValueError, "not valid Unicode"
    )
    await assert_rejected(
        store, ts, lambda: ts.delete(LONE_SURROGATE), ValueError, "not valid Unicode"
    )


@pytest.mark.parametrize("value", [LONE_SURROGATE, [LONE_SURROGATE], {LONE_SURROGATE: 1}])
async def test_value_with_a_lone_surrogate_is_rejected(
    store: Store, ts: TaskStore, value: Any
) -> None:
    await assert_rejected(
        store, ts, lambda: ts.set("k", value), ValueError, "value for key 'k' .*not valid Unicode"
    )


@pytest.mark.parametrize("field", ["dag_id", "run_id", "task_id"])
def test_task_scope_with_a_lone_surrogate_is_rejected(field: str) -> None:
    parts = {"dag_id": "d", "run_id": "r", "task_id": "t", field: LONE_SURROGATE}
    with pytest.raises(ValueError, match=f"TaskScope.{field} .*not valid Unicode"):
        TaskScope(**parts)


def test_asset_scope_with_a_lone_surrogate_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"AssetScope.uri .*not valid Unicode"):
        AssetScope(name="n", uri=LONE_SURROGATE)


async def test_idempotency_id_must_be_valid_text(store: Store, ts: TaskStore) -> None:
    await assert_rejected_alone(
        store,
        lambda: ts.set("k", 1, idempotency_id=LONE_SURROGATE),
        ValueError,
        "idempotency_id .*not valid Unicode",
    )
    await assert_rejected_alone(
        store,
        lambda: ts.set("k", 1, idempotency_id=7),  # type: ignore[arg-type]
        TypeError,
        "idempotency_id must be a non-empty str",
    )


async def test_actor_must_be_valid_text(store: Store) -> None:
    with pytest.raises(ValueError, match=r"actor .*not valid Unicode"):
        store.task_store("etl", "run_1", "ingest", actor=LONE_SURROGATE)
    with pytest.raises(TypeError, match="actor must be a non-empty str"):
        store.asset_store(name="orders", actor=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("expected", ["1", 1.0, -1, True], ids=repr)
async def test_expected_version_must_be_a_non_negative_int(
    store: Store, ts: TaskStore, expected: Any
) -> None:
    await ts.set("k", 1)
    await assert_rejected(
        store,
        ts,
        lambda: ts.set("k", 2, expected_version=expected),
        (TypeError, ValueError),  # type: ignore[arg-type]
        "expected_version must be an int >= 0",
    )


async def test_writes_after_the_store_closed_raise_store_closed_error(
    make_store: StoreFactory,
) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set("k", 1)
    with pytest.raises(StoreClosedError, match="is closed"):
        await ts.set("k", 2)
    with pytest.raises(StoreClosedError, match="is closed"):
        await ts.get("k")

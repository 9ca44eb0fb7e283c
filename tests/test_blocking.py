"""The blocking facade from plain sync code: the same methods, the same errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from eventstore import (
    NEVER_EXPIRE,
    ConcurrencyError,
    StaleAttemptError,
    StoreConfig,
    open_blocking_store,
)
from eventstore.testing import FakeClock


@pytest.fixture
def url(backend_url: str) -> str:
    return backend_url


def test_blocking_store_sets_gets_deletes_and_clears(url: str) -> None:
    with open_blocking_store(url) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        result = ts.set("job_id", "spark-123", retention=NEVER_EXPIRE)
        assert result.version == 1
        assert ts.get("job_id") == "spark-123"
        assert ts.get("missing", "dflt") == "dflt"
        ts.set_many({"offset": 1200, "progress": {"rows": 5}})
        assert ts.items() == {"job_id": "spark-123", "offset": 1200, "progress": {"rows": 5}}
        ts.delete("offset")
        assert ts.get("offset") is None
        assert ts.version() == 4
        ts.clear()
        assert ts.items() == {}
        assert store.verify().ok


def test_blocking_clear_all_map_indices(url: str) -> None:
    with open_blocking_store(url) as store:
        zero = store.task_store("etl", "run_1", "ingest", 0)
        one = store.task_store("etl", "run_1", "ingest", 1)
        zero.set("a", 1)
        one.set("a", 1)
        zero.clear(all_map_indices=True)
        assert (zero.items(), one.items()) == ({}, {})


def test_blocking_asset_store(url: str) -> None:
    with open_blocking_store(url) as store:
        assets = store.asset_store(name="warehouse.orders")
        assets.set("watermark", 1042)
        assert assets.get("watermark") == 1042
        assert assets.items() == {"watermark": 1042}


def test_blocking_store_raises_the_async_errors_with_their_types(url: str) -> None:
    with open_blocking_store(url, StoreConfig(max_value_bytes=100)) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=2)
        ts.set("a", 1)
        with pytest.raises(ValueError, match="cannot be None"):
            ts.set("a", None)
        with pytest.raises(TypeError, match="is not JSON"):
            ts.set("a", {1, 2})
        with pytest.raises(ValueError, match="NaN or Infinity"):
            ts.set_many({"a": float("nan")})
        with pytest.raises(ValueError, match="over the limit of 100"):
            ts.set("a", "x" * 200)
        with pytest.raises(TypeError, match="key must be a str"):
            ts.get(1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="key must not be empty"):
            ts.delete("")
        with pytest.raises(TypeError, match="retention takes a timedelta"):
            ts.set("a", 1, retention=7)
        with pytest.raises(ValueError, match="positive timedelta"):
            ts.set("a", 1, retention=timedelta(0))
        with pytest.raises(ConcurrencyError, match="is at version 1, the write expected 0"):
            ts.set("a", 2, expected_version=0)
        with pytest.raises(StaleAttemptError, match=r"try 1 .* cannot write: try 2"):
            store.task_store("etl", "run_1", "ingest", try_number=1).set("a", 3)
        assert ts.items() == {"a": 1}
        assert ts.version() == 1
        assert store.verify().ok


def test_blocking_store_uses_the_injected_clock(url: str) -> None:
    clock = FakeClock()
    with open_blocking_store(url, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest")
        result = ts.set("a", 1, retention=timedelta(seconds=10))
        assert result.recorded_at == clock.now
        clock.now += timedelta(seconds=10)
        assert ts.get("a") is None


def test_blocking_store_data_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    with open_blocking_store(url) as store:
        store.task_store("etl", "run_1", "ingest").set("a", [1, None])
    with open_blocking_store(url) as store:
        assert store.task_store("etl", "run_1", "ingest").get("a") == [1, None]

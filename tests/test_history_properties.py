"""Properties of history over random histories of sets, deletes, clears and expiries across
several tries: every point-in-time state equals the fold of the log's prefix, diffs are the
dictionary difference of states, and a timeline is the events of its key."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import NEVER_EXPIRE, RecordedEvent, StoreConfig, TaskScope, open_store
from projections import At
from tests.conftest import FakeClock

SCOPE = TaskScope("prop", "run", "task")
KEYS = ["a", "b", "c", "d/e"]

values = st.one_of(
    st.integers(-3, 3),
    st.booleans(),
    st.text(max_size=3),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["x", "y"]), st.none() | st.integers(0, 2), max_size=2),
)
retentions = st.one_of(st.none(), st.integers(1, 20).map(lambda s: timedelta(seconds=s)))
ops = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KEYS), values, retentions),
    st.tuples(
        st.just("set_many"),
        st.dictionaries(st.sampled_from(KEYS), values, min_size=1, max_size=3),
        retentions,
    ),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("advance"), st.integers(1, 15)),
    st.tuples(st.just("next_try")),
    st.tuples(st.just("untracked"), st.sampled_from(KEYS), values),
    st.tuples(st.just("other_scope"), st.sampled_from(KEYS), values),
)
histories = st.lists(ops, min_size=1, max_size=25)


@dataclass
class Observed:
    events: list[RecordedEvent]
    last_seq: int
    states: dict[int, dict[str, Any]]  # seq -> state(At.seq(seq)), for every seq 0..last+1
    by_version: dict[int, dict[str, Any]]
    by_time: dict[datetime, dict[str, Any]]
    ends: dict[int, dict[str, Any]]
    starts: dict[int, dict[str, Any]]
    diffs: list[tuple[int, int, Any]]
    timelines: dict[str, list[RecordedEvent]]
    items_at_end: dict[str, Any]
    end_time: datetime


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def fold(events: list[RecordedEvent], now: datetime | None) -> dict[str, Any]:
    """The reference: apply events in order, then drop what has expired as of `now`."""
    state: dict[str, RecordedEvent] = {}
    for e in events:
        match e.kind:
            case "set":
                assert e.key is not None
                state[e.key] = e
            case "delete":
                assert e.key is not None
                state.pop(e.key, None)
            case "clear":
                state.clear()
    return {
        k: e.value
        for k, e in sorted(state.items())
        if now is None or e.expires_at is None or e.expires_at > now
    }


def upto(events: list[RecordedEvent], p: int) -> tuple[list[RecordedEvent], datetime | None]:
    prefix = [e for e in events if e.seq <= p]
    return prefix, (prefix[-1].recorded_at if prefix else None)


def dict_diff(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    return (
        {k: v for k, v in new.items() if k not in old},
        {k: v for k, v in old.items() if k not in new},
        {
            k: (old[k], new[k])
            for k in old.keys() & new.keys()
            if canonical(old[k]) != canonical(new[k])
        },
    )


async def play(url: str, history: list[tuple[Any, ...]]) -> Observed:
    clock = FakeClock()
    config = StoreConfig(default_retention_days=0)
    async with open_store(url, config=config, clock=clock) as store:
        try_number = 1
        for op in history:
            accessor = store.task_store(SCOPE.dag_id, SCOPE.run_id, SCOPE.task_id, -1, try_number)
            match op:
                case ("set", key, value, retention):
                    await accessor.set(key, value, retention=retention or NEVER_EXPIRE)
                case ("set_many", mapping, retention):
                    await accessor.set_many(mapping, retention=retention or NEVER_EXPIRE)
                case ("delete", key):
                    await accessor.delete(key)
                case ("clear",):
                    await accessor.clear()
                case ("advance", seconds):
                    clock.advance(timedelta(seconds=seconds))
                case ("next_try",):
                    try_number += 1
                case ("untracked", key, value):
                    await store.task_store(SCOPE.dag_id, SCOPE.run_id, SCOPE.task_id).set(
                        key, value
                    )
                case ("other_scope", key, value):
                    await store.task_store("prop", "run", "other", -1, 1).set(key, value)
        h = store.history(SCOPE)
        events = await h.events()
        last = max((e.seq for e in events), default=0)
        states = {p: await h.state(At.seq(p)) for p in range(last + 2)}
        by_version = {v: await h.state(At.version(v)) for v in range(len(events) + 1)}
        times = sorted({e.recorded_at for e in events} | {clock.now})
        expiries = {e.expires_at for e in events if e.expires_at is not None}
        probes = set(times) | {t + timedelta(seconds=7) for t in times} | expiries
        probes |= {t - timedelta(microseconds=1) for t in expiries}
        by_time = {t: await h.state(At.time(t)) for t in probes}
        tries = sorted({e.try_number for e in events if e.try_number is not None})
        ends = {n: await h.state(At.end_of_try(n)) for n in tries}
        starts = {n: await h.state(At.start_of_try(n)) for n in tries}
        points = sorted({0, last, *(e.seq for e in events[:: max(1, len(events) // 4)])})
        diffs = [(a, b, await h.diff(At.seq(a), At.seq(b))) for a in points for b in points]
        timelines = {k: await h.timeline(k) for k in KEYS}
        # The projection, read at the time of the last event, is the fold of the whole log.
        end_time = events[-1].recorded_at if events else clock.now
        clock.now = end_time
        items = await store.task_store(SCOPE.dag_id, SCOPE.run_id, SCOPE.task_id).items()
        return Observed(
            events,
            last,
            states,
            by_version,
            by_time,
            ends,
            starts,
            diffs,
            timelines,
            items,
            end_time,
        )


def check(observed: Observed) -> None:
    events = observed.events
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), "positions strictly increase"
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    for p, state in observed.states.items():
        prefix, now = upto(events, p)
        assert state == fold(prefix, now), f"state(At.seq({p}))"
    for v, state in observed.by_version.items():
        prefix = [e for e in events if e.version <= v]
        assert state == fold(prefix, prefix[-1].recorded_at if prefix else None), f"At.version({v})"
    for t, state in observed.by_time.items():
        assert state == fold([e for e in events if e.recorded_at <= t], t), f"At.time({t})"
    for n, state in observed.ends.items():
        last = max(e.seq for e in events if e.try_number == n)
        assert state == fold(*upto(events, last)), f"At.end_of_try({n})"
    for n, state in observed.starts.items():
        first = next(e for e in events if e.try_number == n)
        before = [e for e in events if e.seq < first.seq]
        assert state == fold(before, first.recorded_at), f"At.start_of_try({n})"
    for a, b, d in observed.diffs:
        added, removed, changed = dict_diff(observed.states[a], observed.states[b])
        assert (d.added, d.removed, d.changed) == (added, removed, changed), f"diff({a}, {b})"
    for key, timeline in observed.timelines.items():
        assert timeline == [e for e in events if e.key == key], f"timeline({key!r})"
    assert observed.items_at_end == fold(events, observed.end_time)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories)
def test_history_answers_equal_folds_of_the_log(backend: str, history: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if backend == "memory" else f"sqlite:///{Path(tmp) / 'trail.db'}"
        check(anyio.run(play, url, history))

"""Compaction refuses only what it removed, and never changes an answer it still gives.

Random histories of sets, deletes, clears, tries and clock moves, with random retention and a
random history horizon, are compacted at random moments. Right before each compaction every
history question whose answer can no longer change is asked and remembered; after it, and again
at the end, each one gets the same answer, or raises HistoryCompactedError only if a model of the
whole log (every event ever appended, removed ones included) says the answer needs a removed
event. `events()` lists exactly the events still held, and never raises. With an archive,
every question answers exactly as before. verify() stays ok and the live values read the same
before and after every compaction.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from eventstore import (
    NEVER_EXPIRE,
    HistoryCompactedError,
    RecordedEvent,
    Store,
    StoreConfig,
    TaskScope,
    open_store,
)
from projections import At, History
from tests.conftest import FakeClock, postgres_schema_url, require_postgres_url

SCOPES = [TaskScope("prop", "run", "task"), TaskScope("prop", "run", "other")]
KEYS = ["a", "b", "c/d"]

values = st.one_of(st.integers(-3, 3), st.text(max_size=2), st.lists(st.booleans(), max_size=2))
retentions = st.one_of(
    st.none(),
    st.just(NEVER_EXPIRE),
    st.integers(1, 30).map(lambda s: timedelta(seconds=s)),
)
ops = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1), st.sampled_from(KEYS), values, retentions),
    st.tuples(
        st.just("set_many"),
        st.integers(0, 1),
        st.dictionaries(st.sampled_from(KEYS), values, min_size=1, max_size=3),
        retentions,
    ),
    st.tuples(st.just("delete"), st.integers(0, 1), st.sampled_from(KEYS)),
    st.tuples(st.just("clear"), st.integers(0, 1)),
    st.tuples(st.just("advance"), st.integers(1, 20)),
    st.tuples(st.just("next_try")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("advance"), st.integers(1, 20)),
    st.tuples(st.just("compact")),
)
histories = st.lists(ops, min_size=1, max_size=30)
configs = st.builds(
    lambda retention, horizon: StoreConfig(
        default_retention_days=retention / 86_400,
        history_horizon_days=None if horizon is None else horizon / 86_400,
    ),
    st.sampled_from([0, 5, 25]),
    st.none() | st.integers(0, 40),
)

Question = tuple[int, str, Callable[[History], Awaitable[Any]]]
# Per question, what the model needs to judge a refusal: ("state", At) or ("timeline", key).
Need = tuple[str, Any]


def canonical(answer: Any) -> str:
    def plain(x: Any) -> Any:
        if isinstance(x, RecordedEvent):
            return (x.seq, x.version, x.kind, x.key, x.value, str(x.expires_at), str(x.recorded_at))
        if isinstance(x, list):
            return [plain(i) for i in x]
        return x

    return json.dumps(plain(answer), sort_keys=True, default=str)


async def stable_questions(
    store: Store, clock: FakeClock, current_try: int
) -> list[tuple[Question, Need]]:
    """Questions about the past whose answer later writes cannot change."""
    questions: list[tuple[Question, Need]] = []
    for index, scope in enumerate(SCOPES):
        h = store.history(scope)
        events = await h.events()
        if not events:
            continue
        last = events[-1].seq
        versions = events[-1].version

        def within(
            query: Callable[[History], Awaitable[list[RecordedEvent]]], bound: int = last
        ) -> Callable[[History], Awaitable[Any]]:
            async def run(history: History) -> Any:
                return [e for e in await query(history) if e.seq <= bound]

            return run

        def state(at: At, name: str, index: int = index) -> tuple[Question, Need]:
            return (index, name, lambda history, at=at: history.state(at)), ("state", at)

        for p in range(last + 1):
            questions.append(state(At.seq(p), f"state(seq {p})"))
        for v in range(versions + 1):
            questions.append(state(At.version(v), f"state(version {v})"))
        times = sorted({e.recorded_at for e in events})
        expiries = {e.expires_at for e in events if e.expires_at is not None}
        probes = {t for t in {*times, *expiries} if t < clock.now}
        probes |= {t - timedelta(microseconds=1) for t in expiries if t <= clock.now}
        for t in sorted(probes):
            questions.append(state(At.time(t), f"state(time {t})"))
        tries = sorted({e.try_number for e in events if e.try_number is not None})
        for n in tries:
            questions.append(state(At.start_of_try(n), f"start_of_try({n})"))
            if n < current_try:
                questions.append(state(At.end_of_try(n), f"end_of_try({n})"))
        for key in KEYS:
            questions.append(
                (
                    (index, f"timeline({key})", within(lambda h, k=key: h.timeline(k))),
                    ("timeline", key),
                )
            )
    return questions


class Model:
    """Every event ever appended to each scope, removed ones included, and which went."""

    def __init__(self) -> None:
        self.events: list[dict[int, RecordedEvent]] = [{} for _ in SCOPES]
        self.removed: list[set[int]] = [set() for _ in SCOPES]

    async def record(self, store: Store) -> None:
        """Take in new events, and note the ones no longer held."""
        for index, scope in enumerate(SCOPES):
            held = {e.seq: e for e in await store.history(scope).events()}
            for seq, e in held.items():
                self.events[index].setdefault(seq, e)
            self.removed[index] |= set(self.events[index]) - set(held)

    def held(self, index: int) -> list[RecordedEvent]:
        gone = self.removed[index]
        return [e for s, e in sorted(self.events[index].items()) if s not in gone]

    def needs_removed(self, index: int, need: Need) -> bool:
        """Whether the answer depends on a removed event: the issue's rule, plus the one case
        history cannot tell, a position or version landing on or among removed events whose
        recorded times (and so the state's expiry time) are gone."""
        what, subject = need
        events = [e for _, e in sorted(self.events[index].items())]
        gone = self.removed[index]
        if what == "timeline":
            return any(e.key == subject and e.seq in gone for e in events)
        at: At = subject
        point: RecordedEvent | None = None
        expiry = None
        match at.kind:
            case "seq":
                point = next((e for e in reversed(events) if e.seq <= at.number), None)
            case "version":
                point = next((e for e in events if e.version == at.number), None)
            case "time":
                assert at.moment is not None
                point = next((e for e in reversed(events) if e.recorded_at <= at.moment), None)
                expiry = at.moment
            case "end_of_try":
                point = next((e for e in reversed(events) if e.try_number == at.number), None)
            case "start_of_try":
                first = next(e for e in events if e.try_number == at.number)
                point = next((e for e in reversed(events) if e.seq < first.seq), None)
                expiry = first.recorded_at
        if point is None:
            return False
        if expiry is None:
            expiry = point.recorded_at
            if at.kind in ("seq", "version"):
                kept_after = [e.seq for e in events if e.seq > point.seq and e.seq not in gone]
                upto = kept_after[0] if kept_after else float("inf")
                if point.seq in gone or any(point.seq < s < upto for s in gone):
                    return True  # history cannot know the expiry time: it may refuse
        latest: dict[str, RecordedEvent] = {}
        for e in events:
            if e.seq > point.seq:
                break
            if e.kind == "clear":
                latest.clear()
            elif e.key is not None:
                latest[e.key] = e
        return any(
            e.seq in gone and e.kind == "set" and (e.expires_at is None or e.expires_at > expiry)
            for e in latest.values()
        )


async def ask(
    store: Store, questions: list[tuple[Question, Need]], model: Model | None = None
) -> dict[tuple[int, str], str | None]:
    answers: dict[tuple[int, str], str | None] = {}
    for (index, name, question), need in questions:
        h = store.history(SCOPES[index])
        try:
            answers[(index, name)] = canonical(await question(h))
        except HistoryCompactedError as error:
            if model is not None and not model.needs_removed(index, need):
                pytest.fail(f"{SCOPES[index]} {name} needs no removed event, yet: {error}")
            # The point it names can be answered.
            if need[0] == "timeline":
                await h.timeline(need[1], after_seq=error.earliest_seq - 1)
            else:
                await h.state(At.seq(error.earliest_seq))
            answers[(index, name)] = None
    return answers


async def live(store: Store) -> list[dict[str, Any]]:
    return [await store.task_store(s.dag_id, s.run_id, s.task_id).items() for s in SCOPES]


async def play(
    url: str, config: StoreConfig, history: list[tuple[Any, ...]], archived: bool = False
) -> int:
    clock = FakeClock()
    remembered: dict[tuple[int, str], str] = {}
    questions: dict[tuple[int, str], tuple[Question, Need]] = {}
    model = Model()
    removed = 0
    outcomes: dict[str, bool] = {}
    async with open_store(url, config=config, clock=clock) as store:
        try_number = 1

        async def check_remembered() -> None:
            await model.record(store)
            after = await ask(store, list(questions.values()), model)
            for name, answer in after.items():
                if answer is not None:
                    assert answer == remembered[name], f"{SCOPES[name[0]]} {name[1]}"
                    outcomes["same answer"] = True
                else:
                    assert not archived, f"{SCOPES[name[0]]} {name[1]} refused with an archive"
                    outcomes["HistoryCompactedError"] = True
            for index, scope in enumerate(SCOPES):
                held = await store.history(scope).events()
                if archived:
                    assert [e.seq for e in held] == sorted(model.events[index])
                else:
                    assert [e.seq for e in held] == [e.seq for e in model.held(index)]

        async def compact_checked() -> int:
            """Remember the answers of stable questions, compact, and check them."""
            await model.record(store)
            asked = await stable_questions(store, clock, try_number)
            before = await ask(store, asked)
            for (index, name, question), need in asked:
                answer = before[(index, name)]
                if answer is not None and (index, name) not in remembered:
                    remembered[(index, name)] = answer
                    questions[(index, name)] = ((index, name, question), need)
            values_before = await live(store)
            report = await store.compact()
            assert await live(store) == values_before
            assert (await store.verify()).ok
            await check_remembered()
            return report.events_removed

        for op in history:
            match op:
                case ("set", s, key, value, retention):
                    accessor = store.task_store("prop", "run", SCOPES[s].task_id, -1, try_number)
                    await accessor.set(key, value, retention=retention)
                case ("set_many", s, mapping, retention):
                    accessor = store.task_store("prop", "run", SCOPES[s].task_id, -1, try_number)
                    await accessor.set_many(mapping, retention=retention)
                case ("delete", s, key):
                    accessor = store.task_store("prop", "run", SCOPES[s].task_id, -1, try_number)
                    await accessor.delete(key)
                case ("clear", s):
                    accessor = store.task_store("prop", "run", SCOPES[s].task_id, -1, try_number)
                    await accessor.clear()
                case ("advance", seconds):
                    clock.advance(timedelta(seconds=seconds))
                case ("next_try",):
                    try_number += 1
                case ("compact",):
                    removed += await compact_checked()
        clock.advance(timedelta(seconds=60))
        removed += await compact_checked()
    for outcome in outcomes:
        event(outcome)
    event("events removed" if removed else "nothing removed")
    return removed


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, history=histories)
def test_compaction_never_changes_an_answer_it_still_gives(
    backend: str, config: StoreConfig, history: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if backend == "memory" else f"sqlite:///{Path(tmp) / 'trail.db'}"
        anyio.run(play, url, config, history)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, history=histories)
def test_with_an_archive_every_question_answers_as_before_compaction(
    backend: str, config: StoreConfig, history: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if backend == "memory" else f"sqlite:///{Path(tmp) / 'trail.db'}"
        archived = msgspec.structs.replace(config, archive_url=str(Path(tmp) / "archive"))
        anyio.run(play, url, archived, history, True)


@pytest.fixture
def postgres_base() -> str:
    return require_postgres_url()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(config=configs, history=histories)
def test_compaction_never_changes_an_answer_it_still_gives_on_postgres(
    postgres_base: str, config: StoreConfig, history: list[Any]
) -> None:
    with postgres_schema_url() as url:
        anyio.run(play, url, config, history)

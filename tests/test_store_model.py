"""Random sequences of writes, clock moves and tries agree with a plain dictionary model.

The store runs on an event loop in a background thread (an anyio blocking portal) that lives as
long as one hypothesis example; each step is one call through the portal. A step is a burst of
one to four writes sent together, so they can share a group-commit batch: the writer appends
them in the order they were sent, so the model applies them one after another.
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from eventstore import (
    NEVER_EXPIRE,
    ConcurrencyError,
    StaleAttemptError,
    StoreConfig,
    TaskStore,
    open_store,
)
from eventstore.log.config import NeverExpire
from eventstore.testing import FakeClock

DAGS = ("dag_a", "dag_b")
MAP_INDICES = (0, 1)
SCOPES = [(dag, index) for dag in DAGS for index in MAP_INDICES]
KEYS = ("a", "b", "c/d")
TRIES = (None, 1, 2, 3)
DEFAULT_RETENTION = timedelta(seconds=60)
CONFIG = StoreConfig(
    default_retention_days=DEFAULT_RETENTION / timedelta(days=1), durability="normal"
)

Retention = timedelta | NeverExpire | None


@dataclass(frozen=True)
class Write:
    kind: str  # "set", "delete" or "clear"
    scope: int
    try_number: int | None
    arg: Any  # set: {key: value}; delete: the key; clear: all_map_indices
    retention: Retention = None
    # Send the scope's version from before the burst as expected_version: a second such write to
    # the same scope in one burst is stale.
    cas: bool = False
    idempotency_id: str | None = None


json_values = st.recursive(
    st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner | st.none(), max_size=3)
        | st.dictionaries(st.text(max_size=3), inner | st.none(), max_size=3)
    ),
    max_leaves=6,
)
scopes = st.integers(0, len(SCOPES) - 1)
try_numbers = st.sampled_from(TRIES)
keys = st.sampled_from(KEYS)
retentions: st.SearchStrategy[Retention] = st.one_of(
    st.none(),
    st.just(NEVER_EXPIRE),
    st.integers(1, 90).map(lambda s: timedelta(seconds=s)),
)
idempotency_ids = st.one_of(st.none(), st.sampled_from(["op-1", "op-2"]))
writes: st.SearchStrategy[Write] = st.one_of(
    st.builds(
        Write,
        st.just("set"),
        scopes,
        try_numbers,
        st.dictionaries(keys, json_values, min_size=1, max_size=3),
        retentions,
        st.booleans(),
        idempotency_ids,
    ),
    st.builds(
        Write,
        st.just("delete"),
        scopes,
        try_numbers,
        keys,
        cas=st.booleans(),
        idempotency_id=idempotency_ids,
    ),
    st.builds(
        Write,
        st.just("clear"),
        scopes,
        try_numbers,
        st.booleans(),
        cas=st.booleans(),
        idempotency_id=idempotency_ids,
    ),
)


class ScopeModel:
    def __init__(self) -> None:
        self.values: dict[str, tuple[Any, datetime | None]] = {}
        self.version = 0
        self.max_try: int | None = None
        self.results: dict[str, int] = {}  # idempotency id -> version of the first result

    def live(self, now: datetime) -> dict[str, Any]:
        return {k: v for k, (v, exp) in self.values.items() if exp is None or exp > now}


class StoreModelMachine(RuleBasedStateMachine):
    url_template = "memory://"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.model = [ScopeModel() for _ in SCOPES]
        self.stack = ExitStack()
        tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        url = self.url_template.format(tmp=tmp)
        self.portal = self.stack.enter_context(start_blocking_portal())
        self.store = self.stack.enter_context(
            self.portal.wrap_async_context_manager(open_store(url, CONFIG, self.clock))
        )

    def teardown(self) -> None:
        self.stack.close()

    def accessor(self, scope: int, try_number: int | None) -> TaskStore:
        dag, index = SCOPES[scope]
        return self.store.task_store(dag, "run", "task", index, try_number=try_number)

    # --- the model ---------------------------------------------------------------------------

    def expect(self, write: Write, expected_version: int | None) -> tuple[str, int | None]:
        """Apply a write to the model; return what the store must answer: the outcome and, for
        "ok", the scope's version in the result."""
        state = self.model[write.scope]
        now = self.clock.now
        if write.idempotency_id is not None:
            first = state.results.get(write.idempotency_id)
            if first is not None:
                return "ok", first
        fence = state.max_try
        if write.try_number is not None and fence is not None and write.try_number < fence:
            return "stale", None
        if expected_version is not None and expected_version != state.version:
            return "conflict", None
        appended = 0  # events of this scope, which raise its fence
        match write.kind:
            case "set":
                expires = _expiry(write.retention, now)
                for key, value in write.arg.items():
                    state.values[key] = (value, expires)
                    state.version += 1
                    appended += 1
            case "delete":
                if write.arg in state.live(now):
                    del state.values[write.arg]
                    state.version += 1
                    appended += 1
            case "clear":
                targets = [write.scope]
                if write.arg:  # every map index of the same task
                    dag = SCOPES[write.scope][0]
                    targets += [
                        i for i, (d, _) in enumerate(SCOPES) if d == dag and i != write.scope
                    ]
                for target in targets:
                    other = self.model[target]
                    if other.live(now):
                        other.values.clear()
                        other.version += 1
                        appended += target == write.scope
        if appended and write.try_number is not None:
            state.max_try = max(state.max_try or 0, write.try_number)
        # The log keeps the result once the scope exists, i.e. once it has had an event.
        if write.idempotency_id is not None and state.version:
            state.results[write.idempotency_id] = state.version
        return "ok", state.version

    async def run(self, write: Write, expected_version: int | None) -> tuple[str, int | None]:
        accessor = self.accessor(write.scope, write.try_number)
        options: dict[str, Any] = {
            "expected_version": expected_version,
            "idempotency_id": write.idempotency_id,
        }
        try:
            match write.kind:
                case "set":
                    result = await accessor.set_many(
                        write.arg, retention=write.retention, **options
                    )
                case "delete":
                    result = await accessor.delete(write.arg, **options)
                case _:
                    result = await accessor.clear(all_map_indices=write.arg, **options)
        except StaleAttemptError:
            return "stale", None
        except ConcurrencyError:
            return "conflict", None
        return "ok", result.version

    # --- rules -------------------------------------------------------------------------------

    @rule(burst=st.lists(writes, min_size=1, max_size=4))
    def write(self, burst: list[Write]) -> None:
        versions = [self.model[w.scope].version if w.cas else None for w in burst]
        expected = [self.expect(w, v) for w, v in zip(burst, versions, strict=True)]

        async def together() -> list[tuple[str, int | None]]:
            runs = (self.run(w, v) for w, v in zip(burst, versions, strict=True))
            return list(await asyncio.gather(*runs))

        assert self.portal.call(together) == expected

    @rule(seconds=st.sampled_from([1, 5, 30, 59, 60]))
    def advance(self, seconds: int) -> None:
        self.clock.now += timedelta(seconds=seconds)

    # --- what must hold after every step -----------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        async def read() -> list[tuple[dict[str, Any], dict[str, Any], int]]:
            found = []
            for scope in range(len(SCOPES)):
                accessor = self.accessor(scope, None)
                got = {key: await accessor.get(key, _ABSENT) for key in KEYS}
                found.append((await accessor.items(), got, await accessor.version()))
            return found

        now = self.clock.now
        for state, (items, got, version) in zip(self.model, self.portal.call(read), strict=True):
            live = state.live(now)
            assert items == live
            assert {k: v for k, v in got.items() if v is not _ABSENT} == live
            assert version == state.version

    @invariant()
    def verify_is_ok(self) -> None:
        report = self.portal.call(self.store.verify)
        assert report.ok, report.mismatches


_ABSENT = object()


def _expiry(retention: Retention, now: datetime) -> datetime | None:
    if retention is None:
        return now + DEFAULT_RETENTION
    if isinstance(retention, NeverExpire):
        return None
    return now + retention


MODEL_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class MemoryModel(StoreModelMachine):
    url_template = "memory://"


class SQLiteModel(StoreModelMachine):
    url_template = "sqlite:///{tmp}/trail.db"


TestMemoryStoreAgreesWithDictModel = MemoryModel.TestCase
TestMemoryStoreAgreesWithDictModel.settings = MODEL_SETTINGS
TestSQLiteStoreAgreesWithDictModel = SQLiteModel.TestCase
TestSQLiteStoreAgreesWithDictModel.settings = MODEL_SETTINGS

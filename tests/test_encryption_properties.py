"""Property: an encrypted store answers every question exactly as a plaintext one does."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import StoreConfig, TaskScope, generate_master_key, open_store
from projections import At
from tests.conftest import FakeClock

SCOPE = TaskScope("etl", "run_1", "ingest")
KEYS = st.sampled_from(["a", "b", "c/d"])
VALUES = st.one_of(
    st.integers(), st.text(max_size=8), st.dictionaries(st.text(max_size=3), st.booleans())
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES, st.booleans()),
        st.tuples(st.just("delete"), KEYS),
        st.tuples(st.just("clear")),
        st.tuples(st.just("erase")),
        st.tuples(st.just("try")),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
async def test_encrypted_and_plain_stores_agree(ops: list[tuple], tmp_path: Path) -> None:  # type: ignore[type-arg]
    clock = FakeClock()
    key = generate_master_key()
    folder = tmp_path / generate_master_key().split(".")[0]
    plain_cfg = StoreConfig()
    sealed_cfg = StoreConfig(master_keys=(key,))
    async with (
        open_store(f"sqlite:///{folder / 'plain.db'}", config=plain_cfg, clock=clock) as plain,
        open_store(f"sqlite:///{folder / 'sealed.db'}", config=sealed_cfg, clock=clock) as sealed,
    ):
        try_number = 1
        for op in ops:
            clock.advance()
            for store in (plain, sealed):
                ts = store.task_store("etl", "run_1", "ingest", try_number=try_number)
                match op:
                    case ("set", k, v, sensitive):
                        await ts.set(k, v, sensitive=sensitive)
                    case ("delete", k):
                        await ts.delete(k)
                    case ("clear",):
                        await ts.clear()
                    case ("erase",):
                        await store.erase(SCOPE)
            if op == ("try",):
                try_number += 1
            assert (
                await plain.task_store(*SCOPE_ARGS).items()
                == await sealed.task_store(*SCOPE_ARGS).items()
            )
        events = [await s.history(SCOPE).events() for s in (plain, sealed)]
        assert [_facts(e) for e in events[0]] == [_facts(e) for e in events[1]]
        last = max((e.seq for e in events[0]), default=0)
        for seq in range(last + 1):
            assert await plain.history(SCOPE).state(At.seq(seq)) == await sealed.history(
                SCOPE
            ).state(At.seq(seq))
        assert (await plain.verify()).ok
        assert (await sealed.verify()).ok


SCOPE_ARGS = ("etl", "run_1", "ingest")


def _facts(e):  # type: ignore[no-untyped-def]
    return (e.seq, e.version, e.kind, e.key, e.value, e.erased, e.sensitive, e.try_number)

"""Opening and closing: either form, from any task, with writes in flight; closed means closed."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from eventstore import AppendResult, Store, StoreClosedError, open_blocking_store, open_store
from eventstore.client import connect
from eventstore.service import create_app
from eventstore.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent

WRITERS = 10
WRITES_BEFORE_CLOSE = 60


@pytest.mark.parametrize("form", ["await", "async with"])
async def test_a_store_opened_in_one_task_closes_in_another_while_writes_are_in_flight(
    backend_url: str, clock: FakeClock, form: str
) -> None:
    stack = AsyncExitStack()
    held: list[Store] = []

    async def open_it() -> None:
        opening = open_store(backend_url, clock=clock)
        held.append(await opening if form == "await" else await stack.enter_async_context(opening))

    async def close_it() -> None:
        await (held[0].aclose() if form == "await" else stack.aclose())

    acknowledged: dict[tuple[int, int], AppendResult] = {}
    refused: list[int] = []
    enough = anyio.Event()

    async def write(writer: int) -> None:
        ts = store.task_store("d", "r", f"t{writer}")
        i = 0
        while True:
            try:
                acknowledged[(writer, i)] = await ts.set(f"k{i}", i)
            except StoreClosedError:
                refused.append(writer)
                return
            i += 1
            if len(acknowledged) >= WRITES_BEFORE_CLOSE:
                enough.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as opener:
            opener.start_soon(open_it)  # opened in a task that is gone before the close
        store = held[0]
        async with anyio.create_task_group() as tg:
            for writer in range(WRITERS):
                tg.start_soon(write, writer)
            await enough.wait()
            async with anyio.create_task_group() as closer:
                closer.start_soon(close_it)
    # Every writer was still writing when the store closed, and was told so.
    assert sorted(refused) == list(range(WRITERS))
    # Every acknowledged write has a position of its own: none was lost or doubled.
    assert sorted(r.seq for r in acknowledged.values()) == list(range(1, len(acknowledged) + 1))
    with pytest.raises(StoreClosedError, match="store is closed"):
        await store.task_store("d", "r", "late").set("k", 1)
    if backend_url == "memory://":
        return  # closed, the in-memory log is gone; the durable ones are read back
    async with open_store(backend_url, clock=clock) as reopened:
        for writer in range(WRITERS):
            items = await reopened.task_store("d", "r", f"t{writer}").items()
            assert items == {f"k{i}": i for (w, i) in acknowledged if w == writer}


async def test_a_write_after_aclose_raises_store_closed_error_and_closing_twice_is_fine(
    backend_url: str, clock: FakeClock
) -> None:
    store = await open_store(backend_url, clock=clock)
    ts = store.task_store("d", "r", "t")
    await ts.set("k", 1)
    async with anyio.create_task_group() as tg:  # two closers at once: both return once closed
        tg.start_soon(store.aclose)
        tg.start_soon(store.aclose)
    await store.aclose()
    with pytest.raises(StoreClosedError, match="store is closed"):
        await ts.set("k", 2)
    with pytest.raises(StoreClosedError, match="store is closed"):
        await store.compact()


async def test_an_opening_is_used_once() -> None:
    opening = open_store("memory://")
    async with opening as store:
        await store.task_store("d", "r", "t").set("k", 1)
    with pytest.raises(RuntimeError, match="awaited or entered already"):
        await opening


async def test_an_error_in_the_block_comes_out_as_raised_and_the_store_closes() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with open_store("memory://") as store:
            raise KeyError("mine")
    with pytest.raises(StoreClosedError, match="store is closed"):
        await store.task_store("d", "r", "t").set("k", 1)


def test_the_blocking_store_opens_without_a_block_and_closes_from_another_thread(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'blocking.db'}"
    store = open_blocking_store(url)
    store.task_store("d", "r", "t").set("k", 1)
    with ThreadCall(store.close):
        pass
    store.close()  # twice is fine
    with open_blocking_store(url) as again:
        assert again.task_store("d", "r", "t").get("k") == 1


class ThreadCall:
    """Run a call in another thread for the block, and wait for it at the end."""

    def __init__(self, call: object) -> None:
        import threading

        self.thread = threading.Thread(target=call)  # type: ignore[arg-type]

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


async def test_a_client_connection_opened_in_one_task_closes_in_another() -> None:
    held = []

    async def open_it() -> None:
        held.append(await connect("http://127.0.0.1:9", token="unused"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_it)
    remote = held[0]
    async with anyio.create_task_group() as tg:
        tg.start_soon(remote.aclose)
    await remote.aclose()  # twice is fine
    assert remote._session.closed


async def test_the_service_lifespan_starts_in_one_task_and_stops_in_another(
    backend_url: str, clock: FakeClock
) -> None:
    app = create_app(backend_url, secret=b"a-secret-of-enough-length-0123456789", clock=clock)
    stack = AsyncExitStack()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stack.enter_async_context, app.router.lifespan_context(app))
    store: Store = app.state.tasktrail.store
    await store.task_store("d", "r", "t").set("k", 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stack.aclose)
    with pytest.raises(StoreClosedError, match="store is closed"):
        await store.task_store("d", "r", "t").set("k", 2)


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


PUBLIC_MODULES = [
    "eventstore",
    "projections",
    "eventstore.client",
    "eventstore.blocking",
    "eventstore.testing",
    "eventstore.service",
    "eventstore.cli",
    pytest.param(
        "eventstore.airflow",
        marks=pytest.mark.skipif(
            not _installed("apache-airflow"), reason="the airflow extra is not installed"
        ),
    ),
]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "statement", ["from projections import At", "from eventstore import open_store, TaskScope"]
)
def test_the_first_lines_of_the_examples_import_in_a_fresh_interpreter(statement: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", statement], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("statement", "missing"),
    [
        ("import eventstore.client", "aiohttp"),
        ("from eventstore.service import create_app", "uvicorn"),
        ("from eventstore.service import create_app", "starlette"),
    ],
)
def test_a_face_without_its_extra_names_the_extra_to_install(statement: str, missing: str) -> None:
    # A core-only install: the extra's package cannot be imported (None in sys.modules).
    hide = f"import sys; sys.modules[{missing!r}] = None; {statement}"
    done = subprocess.run([sys.executable, "-c", hide], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0
    assert f"extra ({missing}" in done.stderr
    assert "pip install 'tasktrail[service]'" in done.stderr


def test_tokens_are_made_with_the_core_dependencies_alone() -> None:
    hide = "import sys\nfor m in ('aiohttp', 'starlette', 'uvicorn'): sys.modules[m] = None\n"
    make = "from eventstore.service.auth import make_token\n"
    done = subprocess.run(
        [sys.executable, "-c", hide + make], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

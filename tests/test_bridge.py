"""The one sync bridge: code without an event loop runs coroutines on the bridge's loop, and the
resources opened there close with it."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from eventstore.bridge import Bridge


def test_a_call_runs_on_the_bridges_own_thread() -> None:
    bridge = Bridge()
    try:

        async def where() -> int:
            return threading.get_ident()

        assert bridge.call(where) != threading.get_ident()
    finally:
        bridge.close()


def test_close_exits_what_was_entered_newest_first_and_only_once() -> None:
    exited: list[str] = []

    @asynccontextmanager
    async def resource(name: str) -> AsyncIterator[str]:
        try:
            yield name
        finally:
            exited.append(name)

    bridge = Bridge()
    assert bridge.enter(resource("store")) == "store"
    assert bridge.enter(resource("connection")) == "connection"
    bridge.close()
    bridge.close()
    assert exited == ["connection", "store"]


def test_an_error_in_a_call_reaches_the_caller() -> None:
    bridge = Bridge()
    try:

        async def fail() -> None:
            raise LookupError("no such key")

        with pytest.raises(LookupError, match="no such key"):
            bridge.call(fail)
    finally:
        bridge.close()


def test_a_bridge_left_open_does_not_hold_the_interpreter_at_exit() -> None:
    code = "from eventstore.bridge import Bridge; bridge = Bridge(); print('open')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "open"


def test_a_call_from_the_bridges_own_thread_is_refused_instead_of_waiting_for_itself() -> None:
    bridge = Bridge()
    try:

        async def noop() -> None:
            pass

        async def nested() -> None:
            bridge.call(noop)

        with pytest.raises(RuntimeError, match="own thread"):
            bridge.call(nested)
    finally:
        bridge.close()

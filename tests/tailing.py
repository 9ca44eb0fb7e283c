"""A reader tailing the log while writers run, and the check that it saw every event once."""

from __future__ import annotations

import anyio

from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventRow


class Tailer:
    """Reads the log after the last position it saw, over and over, until told to stop."""

    def __init__(self, backend: LogBackend, *, pause: float = 0.002) -> None:
        self.backend = backend
        self.pause = pause
        self.seen: list[EventRow] = []
        self.reads = 0

    async def catch_up(self) -> None:
        after = self.seen[-1].seq if self.seen else 0
        async for row in self.backend.select_all_events(after_seq=after, batch=50):
            self.seen.append(row)
        self.reads += 1

    async def __call__(self, finished: anyio.Event) -> None:
        while not finished.is_set():
            await self.catch_up()
            await anyio.sleep(self.pause)


def assert_tailer_saw_everything_once(tailer: Tailer, log: list[EventRow]) -> None:
    seqs = [row.seq for row in tailer.seen]
    assert tailer.reads > 3, "the tailer should have read while the writers ran"
    assert seqs == sorted(set(seqs)), "the tailer saw an event twice or out of order"
    # Positions are handed out without gaps, so anything skipped would be missing here.
    assert seqs == list(range(1, len(log) + 1)), "the tailer skipped, repeated or reordered"
    assert tailer.seen == log

"""bench_http's stall line: the longest /healthz wait while maximal batches are written and a
scope of 400,000 keys is listed (see bench_http's docstring)."""

from __future__ import annotations

import asyncio
import http.client
import multiprocessing
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from eventstore.service.auth import make_token
from eventstore.service.models import MAX_BATCH_KEYS

STALL_KEYS = 400_000


async def wait_until_up(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(200):
        try:
            async with session.get(base + "/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)


def poll_health(base: str, stop: Any, results: Any) -> None:
    """GET /healthz one after the other until `stop` is set; then the waits (seconds) go to
    `results`. A process of its own, so the client's work does not count as the server's."""
    split = urlsplit(base)
    connection = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
    waits: list[float] = []
    try:
        while not stop.is_set():
            started = time.perf_counter()
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            waits.append(time.perf_counter() - started)
            assert response.status == 200, response.status
    finally:
        connection.close()
        results.put(waits)


async def stall(base: str, secret: bytes) -> None:
    """The longest /healthz wait while maximal batches and a 400,000-key listing run."""
    token = make_token(secret, "admin")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    big = base + "/api/v1/tasks/stall/run/big/-1"

    def batch_body(prefix: str, start: int) -> bytes:
        values = {
            f"{prefix}{i:07d}": {"offset": i, "rows": 5}
            for i in range(start, start + MAX_BATCH_KEYS)
        }
        return msgspec.json.encode({"values": values, "retention": "never"})

    async with aiohttp.ClientSession(headers=headers) as session:
        await wait_until_up(session, base)
        began = time.perf_counter()
        for start in range(0, STALL_KEYS, MAX_BATCH_KEYS):
            async with session.post(big + "/store:batch", data=batch_body("k", start)) as response:
                assert response.status == 200, await response.text()
        seeded = time.perf_counter() - began
        # What the service imports and warms on first use is not what this line measures.
        warm = base + "/api/v1/tasks/stall/run/warm/-1/store:batch"
        async with session.post(warm, data=batch_body("w", 0)) as response:
            assert response.status == 200, await response.text()

        batch_times: list[float] = []
        page_times: list[float] = []
        listed = 0

        async def batches() -> None:
            for n in range(5):
                body = batch_body(f"b{n}-", 0)
                started = time.perf_counter()
                url = base + f"/api/v1/tasks/stall/run/batch{n}/-1/store:batch"
                async with session.post(url, data=body) as response:
                    assert response.status == 200, await response.text()
                batch_times.append(time.perf_counter() - started)

        async def listing() -> None:
            nonlocal listed
            after: str | None = None
            while True:
                params = {"limit": "1000", **({"after": after} if after else {})}
                started = time.perf_counter()
                async with session.get(big + "/store", params=params) as response:
                    page = msgspec.json.decode(await response.read())
                page_times.append(time.perf_counter() - started)
                listed += len(page["items"])
                after = page["next"]
                if after is None:
                    return

        context = multiprocessing.get_context("spawn")
        stop, results = context.Event(), context.Queue()
        poller = context.Process(target=poll_health, args=(base, stop, results))
        poller.start()
        await asyncio.sleep(1.0)  # the poller's interpreter starts
        try:
            await asyncio.gather(batches(), listing())
        finally:
            stop.set()
            waits: list[float] = await asyncio.to_thread(results.get, True, 60)
            await asyncio.to_thread(poller.join)
    waits.sort()
    longest = waits[-1] * 1000
    print(
        f"stall: seeded {STALL_KEYS} keys in {seeded:.1f} s; then 5 batches of {MAX_BATCH_KEYS} "
        f"keys (median {statistics.median(batch_times) * 1000:.0f} ms each) while listing "
        f"{listed} keys in {len(page_times)} pages of 1000 "
        f"(median {statistics.median(page_times) * 1000:.1f} ms, "
        f"slowest {max(page_times) * 1000:.1f} ms)"
    )
    over = sum(1 for wait in waits if wait >= 0.05)
    print(
        f"longest /healthz wait meanwhile: {longest:.1f} ms over {len(waits)} probes "
        f"(p99 {waits[int(len(waits) * 0.99) - 1] * 1000:.1f} ms, {over} of 50 ms or more); "
        f"target < 50 ms: {'met' if longest < 50 else 'NOT met'}"
    )

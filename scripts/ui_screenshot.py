"""Take docs/images/task-page.png: the task page of the two-try history of scripts/ui_demo.py.

    .venv/bin/python scripts/ui_screenshot.py [--out docs/images/task-page.png]

Serves a freshly seeded SQLite file on a loopback port and drives Debian's Chromium
(/usr/bin/chromium) with Playwright: the scrubber at the start of try 2, a progress checkpoint
of try 1 selected, and the diff of the ends of the two tries.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import anyio
from playwright.sync_api import sync_playwright

from eventstore import open_store
from eventstore.service import create_app, serve_in_thread
from eventstore.service.auth import make_token

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRET = b"screenshot-secret-0123456789abcdef"


def _demo():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ui_demo", ROOT / "scripts" / "ui_demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "task-page.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument(
        "--updates", type=int, default=12, help="progress writes of try 1 (5000: ~10,000 events)"
    )
    args = parser.parse_args()
    demo = _demo()
    with tempfile.TemporaryDirectory() as scratch:
        db = f"sqlite:///{scratch}/demo.db"

        async def seed() -> None:
            clock = demo.Clock()
            async with open_store(db, clock=clock) as store:
                await demo.seed(store, clock, args.updates)

        with ThreadPoolExecutor(1) as pool:
            pool.submit(anyio.run, seed).result()
        token = make_token(SECRET, "auditor", ttl=timedelta(minutes=10), name="screenshot")
        with serve_in_thread(create_app(db, secret=SECRET)) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 800})
            page.goto(f"{base}/ui/#/task/{demo.DAG}/{demo.RUN}/{demo.TASK}/-1")
            page.fill("#token-input", token)
            started = time.perf_counter()
            page.click("#token-form button[type=submit]")
            page.wait_for_selector("#timeline svg")
            page.wait_for_selector("#state table")
            loaded = time.perf_counter() - started
            summary = page.inner_text("#summary")
            marks = page.locator("#timeline .mark").count()
            page.click("#snaps button:has-text('start of try 2')")
            page.wait_for_selector("#state-title:has-text('start of try 2')")
            checkpoints = page.locator(
                "#timeline circle.mark-set", has=page.locator("title", has_text="rows_loaded")
            )
            checkpoints.nth(min(15, checkpoints.count() - 1)).click()
            page.wait_for_selector("#event-change")
            page.click("#quick-diffs button >> nth=0")
            page.wait_for_selector("#diff-title")
            page.wait_for_timeout(300)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    print(
        f"{summary}: drawn with {marks} marks, state shown {loaded * 1000:.0f} ms after the token"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

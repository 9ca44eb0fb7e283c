"""The web page in a real headless Chromium, against a real service on a loopback port.

The service holds the two-try history of scripts/ui_demo.py: try 1 of etl_orders/load sets a job
id, a lock, twelve progress checkpoints and an error; try 2 deletes the lock and the error, takes
a new job id, loads eight more batches and finishes. Every test records each request the page
makes and checks that none goes anywhere but the service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import open_store
from eventstore.service import create_app, serve_in_thread
from eventstore.service.auth import make_token
from service.browser import launch, require_browser, ui_demo
from service.service_helpers import SECRET

pytestmark = pytest.mark.slow

TASK_HASH = "#/task/etl_orders/scheduled__2026-03-01/load/-1"


class Site:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def token(self, role: str = "auditor", **claims: Any) -> str:
        return make_token(SECRET, role, ttl=timedelta(hours=1), **claims)  # type: ignore[arg-type]


def _seeded_service(path: Path, updates: int) -> Iterator[Site]:
    demo = ui_demo()

    async def seed() -> None:
        clock = demo.Clock()
        async with open_store(f"sqlite:///{path}", clock=clock) as store:
            await demo.seed(store, clock, updates)

    # Playwright's sync API keeps an event loop in this thread; the seed runs in its own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, seed).result()
    app = create_app(f"sqlite:///{path}", secret=SECRET)
    with serve_in_thread(app) as base_url:
        yield Site(base_url)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_browser()
    yield from _seeded_service(tmp_path_factory.mktemp("ui") / "trail.db", 12)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = launch(playwright)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


def _context(browser: Any, **options: Any) -> Any:
    # The page's Content-Security-Policy forbids eval, which Playwright's wait_for_function
    # uses; the tests bypass it and check the header and every request themselves.
    return browser.new_context(bypass_csp=True, **options)


class Page:
    """A browser tab on the site that records every request and every script error."""

    def __init__(self, tab: Any, site: Site) -> None:
        self.tab = tab
        self.site = site
        self.requests: list[str] = []
        self.errors: list[str] = []
        tab.on("request", lambda request: self.requests.append(request.url))
        tab.on("pageerror", lambda error: self.errors.append(str(error)))
        tab.on("console", self._console)

    def _console(self, message: Any) -> None:
        # The browser logs every 401/403 answer; the tests that send bad tokens expect those.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def open(self, hash_: str = "", role: str = "auditor") -> None:
        self.tab.goto(f"{self.site.base_url}/ui/{hash_}")
        self.tab.wait_for_selector("#token-dialog[open]")
        self.tab.fill("#token-input", self.site.token(role))
        self.tab.click("#token-form button[type=submit]")
        self.tab.wait_for_selector("#token-dialog:not([open])", state="attached")

    def open_task(self) -> None:
        self.open(TASK_HASH)
        self.tab.wait_for_selector("#timeline svg")
        self.wait_state("end of try 2")

    def wait_state(self, label: str) -> None:
        self.tab.wait_for_function(
            """label => document.querySelector('#state-title')?.textContent.endsWith(label)
                && !document.querySelector('#state').hasAttribute('aria-busy')
                && document.querySelector('#state table, #state p.muted + p')""",
            arg=label,
        )

    def state(self) -> dict[str, str]:
        rows = self.tab.locator("#state tr")
        return {
            rows.nth(n).locator("td").nth(0).inner_text(): rows.nth(n)
            .locator("td")
            .nth(1)
            .inner_text()
            for n in range(rows.count())
        }

    def check_requests(self) -> None:
        assert self.requests, "the page made no request"
        outside = [url for url in self.requests if not url.startswith(self.site.base_url + "/")]
        assert outside == [], f"requests outside the service: {outside}"
        assert self.errors == []


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Page]:
    context = _context(browser, viewport={"width": 1280, "height": 900})
    tab = Page(context.new_page(), site)
    yield tab
    tab.check_requests()
    context.close()


def test_page_asks_for_a_token_once_and_lists_scopes(page: Page) -> None:
    tab = page.tab
    answer = tab.goto(f"{page.site.base_url}/ui/")
    assert "connect-src 'self'" in answer.headers["content-security-policy"]
    tab.wait_for_selector("#token-dialog[open]")
    tab.fill("#token-input", "not-a-token")
    tab.click("#token-form button[type=submit]")
    tab.wait_for_selector("#token-error:has-text('refused')")
    tab.fill(
        "#token-input",
        page.site.token("task", dag="etl_orders", run="scheduled__2026-03-01", task="load"),
    )
    tab.click("#token-form button[type=submit]")
    tab.wait_for_selector("#token-error:has-text('auditor or admin')")
    tab.fill("#token-input", page.site.token("auditor"))
    tab.click("#token-form button[type=submit]")
    tab.wait_for_selector("#scopes tbody tr")
    links = tab.locator("#scopes tbody a").all_inner_texts()
    assert links == [
        "asset warehouse.orders",
        "etl_orders / scheduled__2026-03-01 / transform",
        "etl_orders / scheduled__2026-03-01 / load",
    ]
    # Kept for the tab: a reload does not ask again.
    tab.reload()
    tab.wait_for_selector("#scopes tbody tr")
    assert not tab.locator("#token-dialog").get_attribute("open")
    assert tab.evaluate("sessionStorage.getItem('tasktrail.token')")


def test_scopes_filter_by_task_and_open_the_task_page(page: Page) -> None:
    page.open()
    tab = page.tab
    tab.wait_for_selector("#scopes tbody tr")
    tab.fill("#filters input[name=task]", "load")
    tab.click("#filters button[type=submit]")
    tab.wait_for_function("document.querySelectorAll('#scopes tbody tr').length === 1")
    tab.click("#scopes tbody a")
    tab.wait_for_selector("#timeline svg")
    assert tab.url.endswith(TASK_HASH)


def test_task_page_draws_a_lane_per_key_and_the_tries(page: Page) -> None:
    page.open_task()
    tab = page.tab
    lanes = tab.locator("#timeline [data-lane]").evaluate_all("els => els.map(e => e.dataset.lane)")
    assert lanes == ["done", "error", "job_id", "lock", "offset", "progress"]
    assert tab.locator("#timeline text[data-try-label]").all_text_contents() == ["try 1", "try 2"]
    assert tab.locator("#timeline rect.band").count() == 2
    kinds = tab.locator("#timeline .mark").evaluate_all("els => els.map(e => e.dataset.kinds)")
    counted: dict[str, int] = {}
    for bucket in kinds:
        for part in bucket.split(","):
            kind, _, n = part.partition(":")
            counted[kind] = counted.get(kind, 0) + int(n)
    assert counted == {
        "set": 47,
        "delete": 3,
    }  # try 2 deletes the lock and the error, then the lock
    # The delete is drawn as a cross, the set as a dot.
    assert tab.locator("#timeline path.mark-delete").count() >= 3
    assert tab.locator("#timeline circle.mark-set").count() > 20
    series = tab.locator("#timeline path.series").evaluate_all(
        "els => els.map(e => e.dataset.series)"
    )
    assert series == ["offset", "progress.batch", "progress.rows_loaded"]
    assert "50 events" in tab.inner_text("#summary")


def test_a_scope_with_a_clear_draws_it_as_its_own_mark(page: Page) -> None:
    page.open("#/task/etl_orders/scheduled__2026-03-01/transform/-1")
    tab = page.tab
    tab.wait_for_selector("#timeline svg")
    assert tab.locator("#timeline [data-lane]").first.get_attribute("data-lane") == "(scope)"
    assert tab.locator("#timeline rect.mark-clear[data-kind=clear]").count() == 1
    assert tab.locator("#timeline line.clear-line").count() == 1


def test_an_asset_page_shows_its_history(page: Page) -> None:
    page.open()
    tab = page.tab
    tab.click("#scopes a:has-text('asset warehouse.orders')")
    tab.wait_for_selector("#timeline svg")
    page.wait_state("Z")
    assert page.state() == {"watermark": "100000"}
    assert tab.locator("#timeline [data-lane]").get_attribute("data-lane") == "watermark"
    assert any("/api/v1/assets/by-name/warehouse.orders/history" in url for url in page.requests)


def test_scrubber_shows_the_state_at_a_try_boundary(page: Page) -> None:
    page.open_task()
    tab = page.tab
    assert page.state() == {
        "done": "true",
        "job_id": '"spark-9b1c"',
        "offset": "100000",
        "progress": '{"rows_loaded":100000,"batch":20,"stage":"done"}',
    }
    tab.click("#snaps button:has-text('start of try 2')")
    page.wait_state("start of try 2")
    assert page.state() == {
        "error": '"OOM while loading batch 13"',
        "job_id": '"spark-7f3a"',
        "lock": '"worker-12"',
        "offset": "60000",
        "progress": '{"rows_loaded":60000,"batch":12,"stage":"load"}',
    }
    assert "start_of_try=2" in page.requests[-1]
    # Dragging the scrubber near a boundary snaps to it.
    at_start = int(tab.input_value("#scrubber"))
    tab.click("#snaps button:has-text('start of try 1')")
    page.wait_state("start of try 1")
    tab.locator("#scrubber").fill(str(at_start + 20))
    page.wait_state("start of try 2")
    assert re.match(r"start of try 2 \(2026-03-01 12:10:05", tab.inner_text("#scrub-label"))
    # Between boundaries it shows the state as of a time.
    tab.locator("#scrubber").fill(str(at_start - 1500))
    page.wait_state("Z")
    assert page.state()["job_id"] == '"spark-7f3a"'
    assert "done" not in page.state()


def test_diff_view_shows_what_changed_from_try_1_to_try_2_in_one_click(page: Page) -> None:
    page.open_task()
    tab = page.tab
    tab.click("#quick-diffs button:has-text('end of try 1 → end of try 2')")
    tab.wait_for_selector("#diff-title")
    assert tab.inner_text("#diff-title") == "end of try 1 → end of try 2"
    rows = tab.locator("#diff-result tbody tr[data-key]")
    changes = rows.evaluate_all("els => els.map(e => [e.dataset.key, e.dataset.change])")
    assert changes == [
        ["done", "added"],
        ["error", "removed"],
        ["job_id", "changed"],
        ["lock", "removed"],
        ["offset", "changed"],
        ["progress", "changed"],
    ]
    job = tab.locator("#diff-result tr[data-key=job_id] td").all_inner_texts()
    assert job == ["changed", "job_id", '"spark-7f3a"', '"spark-9b1c"']
    fields = tab.locator("#diff-result tr[data-key=progress] table.changes tr").all_inner_texts()
    assert [f.split("\t")[0] for f in fields] == ["batch", "rows_loaded", "stage"]
    # Any two points: the start of try 2 against its end.
    tab.select_option("select[name=from-kind]", "start_of_try")
    tab.fill("input[name=from-value]", "2")
    tab.click("#diff-form button[type=submit]")
    tab.wait_for_selector("#diff-title:has-text('start of try 2')")
    assert "from_start_of_try=2" in page.requests[-1]
    assert "to_end_of_try=2" in page.requests[-1]


def test_selecting_an_event_shows_its_value_try_actor_and_change(page: Page) -> None:
    page.open_task()
    tab = page.tab
    marks = tab.locator("#timeline circle.mark-set")
    progress_marks = [
        n
        for n in range(marks.count())
        if (marks.nth(n).locator("title").text_content() or "").count("rows_loaded") == 1
    ]
    tab.locator("#timeline circle.mark-set").nth(progress_marks[1]).click()
    tab.wait_for_selector("#event-change")
    assert tab.inner_text("#event dd[data-field=key]") == "progress"
    assert tab.inner_text("#event dd[data-field=try]") == "1"
    assert tab.inner_text("#event dd[data-field=actor]") == "task"
    assert '"rows_loaded": 10000' in tab.inner_text("#event-value")
    change = tab.inner_text("#event-change")
    assert "changed" in change
    assert "rows_loaded\t5000\t→\t10000" in change
    tab.click("#event button:has-text('next')")
    tab.wait_for_function("document.querySelector('#event-value')?.textContent.includes('15000')")


def test_arrow_keys_step_through_the_events(page: Page) -> None:
    page.open_task()
    tab = page.tab
    tab.focus("#timeline")
    tab.keyboard.press("ArrowRight")
    tab.wait_for_selector("#event h2:has-text('Event seq 1')")
    assert tab.inner_text("#event dd[data-field=key]") == "job_id"
    tab.keyboard.press("ArrowRight")
    tab.wait_for_selector("#event h2:has-text('Event seq 2')")
    tab.keyboard.press("End")
    tab.wait_for_selector("#event h2:has-text('Event seq 50')")
    assert tab.inner_text("#event dd[data-field=key]") == "done"


def test_the_page_runs_under_its_own_content_security_policy(browser: Any, site: Site) -> None:
    # No bypass here: a script, style or request the policy blocks is a console error.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = Page(context.new_page(), site)
    page.tab.goto(f"{site.base_url}/ui/{TASK_HASH}")
    page.tab.fill("#token-input", site.token())
    page.tab.click("#token-form button[type=submit]")
    page.tab.wait_for_selector("#state-title:has-text('end of try 2')")
    page.tab.wait_for_selector("#state table")
    page.tab.click("#quick-diffs button >> nth=0")
    page.tab.wait_for_selector("#diff-title")
    page.check_requests()
    context.close()


def test_narrow_window_fits_without_scrolling_sideways(browser: Any, site: Site) -> None:
    context = _context(browser, viewport={"width": 400, "height": 800})
    page = Page(context.new_page(), site)
    page.open_task()
    width = page.tab.evaluate("document.documentElement.scrollWidth")
    assert width <= 400
    assert page.tab.locator("#timeline svg").bounding_box()["width"] <= 400
    page.check_requests()
    context.close()


def test_ten_thousand_events_draw_as_bucketed_marks(browser: Any, tmp_path: Path) -> None:
    for site in _seeded_service(tmp_path / "big.db", 5000):
        context = _context(browser, viewport={"width": 1280, "height": 900})
        page = Page(context.new_page(), site)
        page.open_task()
        assert "10026 events" in page.tab.inner_text("#summary")
        marks = page.tab.locator("#timeline .mark").count()
        assert marks < 1500, marks
        counts = page.tab.locator("#timeline .mark").evaluate_all(
            "els => els.reduce((n, e) => n + Number(e.dataset.count), 0)"
        )
        assert counts == 10026
        page.tab.click("#snaps button:has-text('start of try 2')")
        page.wait_state("start of try 2")
        assert page.state()["offset"] == "25000000"
        page.check_requests()
        context.close()

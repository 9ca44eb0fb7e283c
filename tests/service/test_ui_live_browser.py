"""The web page follows the log live and rewinds, in a real headless Chromium against a real
service: an event written while the page is open appears on it without a reload, and "rewind to
here" shows the diff, asks, and rewinds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventstore.service import create_app, serve_in_thread
from service.service_helpers import Service, task_path
from service.test_ui_browser import Page, Site, _context, browser  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

DAG = "live_dag"
HASH = f"#/task/{DAG}/r/t/-1"


class LiveSite(Site):
    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.http = Service(base_url, None)  # type: ignore[arg-type]

    def put(self, key: str, value: Any, try_number: int = 1, **options: Any) -> None:
        token = self.http.task_token(DAG, try_number=try_number)
        body = {"value": value, "retention": "never", **options}
        got = self.http.call("PUT", task_path(DAG, key), body, token=token)
        assert got.status == 200, got

    def items(self) -> dict[str, Any]:
        got = self.http.call("GET", task_path(DAG), token=self.token("admin"))
        return {item["key"]: item["value"] for item in got.json()["items"]}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LiveSite]:
    from service.browser import require_browser
    from service.service_helpers import SECRET

    require_browser()
    app = create_app(f"sqlite:///{tmp_path / 'trail.db'}", secret=SECRET)
    with serve_in_thread(app) as base_url:
        live = LiveSite(base_url)
        live.put("offset", 100)
        live.put("job_id", "spark-1")
        live.put("offset", 900, try_number=2)
        yield live


@pytest.fixture
def page(browser: Any, site: LiveSite) -> Iterator[Page]:  # noqa: F811
    context = _context(browser, viewport={"width": 1280, "height": 900})
    tab = Page(context.new_page(), site)
    yield tab
    tab.tab.evaluate("location.hash = '#/'")  # closes the page's live feed before the service
    tab.check_requests()
    context.close()


def open_task(page: Page, role: str = "admin") -> None:
    page.open(HASH, role=role)
    page.tab.wait_for_selector("#timeline svg")
    page.tab.wait_for_selector("#live[data-status='live']")


def test_an_event_written_while_the_page_is_open_appears_without_a_reload(
    page: Page, site: LiveSite
) -> None:
    tab = page.tab
    open_task(page, role="auditor")
    tab.evaluate("window.stillTheSamePage = true")
    assert tab.locator("#timeline [data-lane='progress']").count() == 0

    site.put("progress", {"rows": 5}, try_number=2)

    tab.wait_for_selector("#timeline [data-lane='progress']")
    tab.wait_for_selector("#summary:has-text('4 events')")
    assert tab.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    site.put("offset", 950, try_number=2)
    tab.wait_for_selector("#summary:has-text('5 events')")
    assert any("/api/v1/events?" in url for url in page.requests)


def test_rewind_to_here_shows_the_diff_asks_and_rewinds(page: Page, site: LiveSite) -> None:
    tab = page.tab
    open_task(page)
    tab.focus("#timeline")
    tab.keyboard.press("Home")
    tab.keyboard.press("ArrowRight")  # seq 2: the end of try 1
    tab.wait_for_selector("#event h2:has-text('Event seq 2')")

    tab.click("#rewind-here")

    tab.wait_for_selector("#rewind-dialog[open] .diff-table")
    changes = tab.locator("#rewind-dialog tr[data-key]").evaluate_all(
        "els => els.map(e => [e.dataset.key, e.dataset.change])"
    )
    assert changes == [["offset", "changed"]]
    assert site.items() == {"offset": 900, "job_id": "spark-1"}, "showing the diff writes nothing"
    tab.click("#rewind-confirm")
    tab.wait_for_selector("#rewind-status:has-text('Rewound: 1 set, 0 deleted; version 4')")
    assert site.items() == {"offset": 100, "job_id": "spark-1"}
    # The rewind's own event comes back through the live feed.
    tab.wait_for_selector("#summary:has-text('4 events')")


def test_an_auditor_sees_why_it_cannot_rewind(page: Page, site: LiveSite) -> None:
    tab = page.tab
    open_task(page, role="auditor")
    tab.click("#rewind-point")
    tab.wait_for_selector("#rewind-status:has-text('needs an admin token')")
    assert tab.locator("#rewind-confirm").is_disabled()
    assert site.items() == {"offset": 900, "job_id": "spark-1"}

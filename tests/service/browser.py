"""Headless Chromium for the web page's tests: Debian's browser, driven by Playwright.

The browser is the system's (/usr/bin/chromium, installed by .ci/run); Playwright never downloads
one. Outside CI the browser tests skip when either is missing; in CI they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CHROMIUM = os.environ.get("TASKTRAIL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]


def require_browser() -> None:
    """Skip (fail in CI) unless Playwright and the system Chromium are there."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def ui_demo() -> ModuleType:
    """scripts/ui_demo.py, which seeds the two-try history the page is tested on."""
    spec = importlib.util.spec_from_file_location("ui_demo", ROOT / "scripts" / "ui_demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

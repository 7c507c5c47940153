"""Open a page in a real headless browser: the system's Chromium, driven by Playwright.

Chromium comes from the system's packages (Debian's ``chromium``, ``/usr/bin/chromium``; ``.ci/run``
installs it when it is missing); Playwright (the ``test`` extra) drives it without a browser build
of its own. Under CI (``CI=true``) a missing browser or driver fails the test; elsewhere the test is
skipped and says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ONLINE_GMM_CHROMIUM", "/usr/bin/chromium")
#: flags that work on the project's machines (no sandbox as root, no GPU, no background traffic)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Rendered:
    """What the browser saw: console messages of type error, uncaught page errors, every request."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)    # each inline <svg>'s rendered box
    title: str = ""


def need_browser() -> None:
    """Skip (outside CI) or fail (under CI) when the browser or its driver is missing."""
    problems = []
    if not os.path.exists(CHROMIUM):
        problems.append(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is missing (pip install -e '.[test]')")
    if problems:
        reason = "cannot open the report in a browser: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def render(page_path: Path, *, screenshot: Path | None = None, width: int = 1280,
           clip_height: int | None = None) -> Rendered:
    """Load ``page_path`` (a local file) in headless Chromium and report what happened.

    ``screenshot``: also save a PNG of the page (the top ``clip_height`` pixels, or all of it).
    """
    from playwright.sync_api import sync_playwright

    seen = Rendered()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
            page.on("request", lambda r: seen.requests.append(r.url))
            page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
            seen.title = page.title()
            seen.figures = page.evaluate(
                "() => Array.from(document.querySelectorAll('svg.figure')).map(s => {"
                " const r = s.getBoundingClientRect();"
                " return {label: s.getAttribute('aria-label'), width: r.width, height: r.height}; })")
            if screenshot is not None:
                if clip_height is None:
                    page.screenshot(path=str(screenshot), full_page=True)
                else:
                    page.screenshot(path=str(screenshot), full_page=True,
                                    clip={"x": 0, "y": 0, "width": width, "height": clip_height})
        finally:
            browser.close()
    return seen

"""Helpers for the browser tests (Playwright driving Debian's Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import require_marker

from benchmarks.serve import CHROMIUM, chromium_args


def open_tab(page, name: str, timeout: float = 30_000) -> None:
    """Click the tab called `name`. On a narrow screen Gradio shows the first tabs only and
    puts the rest in a "More tabs" menu, whose entries are plain buttons, not tabs."""
    page.get_by_role("tablist").wait_for(timeout=timeout)
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count():
        tab.click(timeout=timeout)
        return
    page.get_by_role("button", name="More tabs").click(timeout=timeout)
    page.locator(".overflow-dropdown button", has_text=name).click(timeout=timeout)


PHONE = (390, 844)  # px: the narrow screen every page is checked at


@contextmanager
def chromium(mic: Path | None = None) -> Iterator:
    """A headless Chromium (Playwright's `Browser`); with `mic`, a WAV file it loops as the
    microphone. Only for tests marked browser."""
    require_marker("browser", "drives Chromium")
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is needed (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args(mic),
                                    headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(url: str, viewport: tuple[int, int] = PHONE, locale: str = "en-US",
                 mic: Path | None = None) -> Iterator:
    """A headless Chromium page at `url`, `viewport` (width, height) px, in `locale`; with
    `mic`, a WAV file that Chromium loops as the microphone (permission granted). Only for
    tests marked browser."""
    with chromium(mic) as browser:
        context = browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, locale=locale)
        if mic is not None:
            context.grant_permissions(["microphone"], origin=url.rstrip("/"))
        page = context.new_page()
        page.goto(url)
        yield page

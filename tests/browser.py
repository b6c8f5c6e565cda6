"""Helpers for the browser tests (Playwright driving Debian's Chromium)."""

from __future__ import annotations


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

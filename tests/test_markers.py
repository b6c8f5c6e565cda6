"""The quick run's markers cannot be forgotten: a test that starts the app server or Chromium
without its marker fails and says which marker to add (conftest.require_marker)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # runs pytest in a fresh process

RUN_TIMEOUT = 300  # s for the inner pytest run; a safety net, not a pace
PROBE = '''
import pytest

from browser import browser_page
from conftest import require_marker, serve_app


@pytest.fixture(scope="module")
def shared_app():
    require_marker("slow", "starts the app server")  # as a fixture calling serve_app does
    return "http://127.0.0.1:9/"


@pytest.mark.slow
def test_marked_starts_the_shared_app(shared_app):
    pass


def test_unmarked_uses_the_shared_app(shared_app):
    pass


def test_unmarked_starts_the_app(tmp_path):
    with serve_app(None, tmp_path / "app.log"):
        pass


@pytest.mark.slow
def test_slow_but_not_browser_drives_chromium():
    with browser_page("http://127.0.0.1:9/"):
        pass


def test_unmarked_and_quick():
    pass
'''


def test_a_test_starting_the_app_or_chromium_without_its_marker_fails(tmp_path):
    for name in ("tests/conftest.py", "tests/browser.py", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path)
    (tmp_path / "test_probe.py").write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--basetemp",
         str(tmp_path / "inner"), "test_probe.py"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=RUN_TIMEOUT, check=False)
    outcomes = {line.split()[1].split("::")[1]: line.split()[0]
                for line in proc.stdout.splitlines()
                if line.split()[:1] in (["PASSED"], ["FAILED"], ["ERROR"])}
    assert outcomes == {"test_marked_starts_the_shared_app": "PASSED",
                        "test_unmarked_uses_the_shared_app": "FAILED",
                        "test_unmarked_starts_the_app": "FAILED",
                        "test_slow_but_not_browser_drives_chromium": "FAILED",
                        "test_unmarked_and_quick": "PASSED"}, proc.stdout + proc.stderr
    assert "test_unmarked_uses_the_shared_app uses shared_app, which needs the slow marker" \
        in proc.stdout
    assert "test_unmarked_starts_the_app starts the app server but is not marked slow: add " \
        "@pytest.mark.slow" in proc.stdout
    assert "drives Chromium but is not marked browser: add @pytest.mark.browser" in proc.stdout
    assert not list(tmp_path.rglob("app.log"))  # refused before anything started

"""Load: 16 concurrent clients (API and page events) for about half a minute; nothing fails,
model calls never overlap, memory comes back.

`pytest tests/test_load.py -s` prints the figures (also `python -m benchmarks.load`).
"""

from __future__ import annotations

import pytest

from conftest import serve_app

from benchmarks.load import CLIENTS, run_load, write_clips

pytestmark = pytest.mark.slow  # every test here starts the app server

SECONDS = 30.0  # s of sending
RSS_MARGIN_MB = 300  # the server may keep some memory (allocator, caches), not grow per request


def test_concurrent_clients_all_get_answers_and_memory_returns(dev_bundle, tmp_path):
    clips = write_clips(tmp_path, CLIENTS)
    log = tmp_path / "app.log"
    # every client comes from 127.0.0.1: the app is told they are that many visitors
    with serve_app(dev_bundle, log, args=("--visitors-per-address", str(CLIENTS))) as (url, proc):
        report = run_load(url, clips, proc.pid, log, seconds=SECONDS)
    print(report.summary())
    assert report.failures == []
    assert report.overlaps == 0  # the page's event and the API share one queue of one
    assert all(n >= 1 for n in report.per_client)  # every client was served, none starved
    assert report.rss_after < report.rss_before + RSS_MARGIN_MB

"""Load: 16 concurrent API clients for about half a minute; nothing fails, memory comes back.

`pytest tests/test_load.py -s` prints the figures (also `python -m benchmarks.load`).
"""

from __future__ import annotations

from conftest import serve_app

from benchmarks.load import CLIENTS, run_load, write_clips

SECONDS = 30.0  # s of sending
RSS_MARGIN_MB = 300  # the server may keep some memory (allocator, caches), not grow per request


def test_concurrent_clients_all_get_answers_and_memory_returns(dev_bundle, tmp_path):
    clips = write_clips(tmp_path, CLIENTS)
    with serve_app(dev_bundle, tmp_path / "app.log") as (url, proc):
        report = run_load(url, clips, proc.pid, seconds=SECONDS)
    print(report.summary())
    assert report.failures == []
    assert all(n >= 1 for n in report.per_client)  # every client was served, none starved
    assert report.rss_after < report.rss_before + RSS_MARGIN_MB

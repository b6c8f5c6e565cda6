"""What one visitor may ask at a time, and the HTTP hygiene around it, over raw HTTP as an
attacker sends it (issue 28, findings 3, 5 and 9).

Visitors connect from their own loopback addresses (127.0.0.x). The attacker's heavy file is
the issue's: a 74 s, 384 kHz, 8-channel FLAC, under every audio limit, so it is decoded
(seconds of work each), which keeps the attacker's events in the queue while the test floods.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from benchmarks.flood import write_heavy_flac
from conftest import serve_app
from test_visitors import call, client, file_ref, recording, upload
from voiceface.ui.common import MAX_FILE_BYTES
from voiceface.ui.limits import (QUEUE_SIZE, UPLOAD_FILES, UPLOAD_REQUEST_BYTES,
                                 VISITOR_EVENTS, VISITOR_UPLOAD_BYTES)
from voiceface.ui.text import TEXT

pytestmark = pytest.mark.slow  # the app server, over HTTP

FLOOD = 30  # requests one attacker sends at once
MIB = 2 ** 20
LOG_PER_REQUEST = 400  # bytes the log may grow per repeated malformed request
LOG_FIRST = 6000  # bytes of the one traceback of a kind that is logged


def message(key: str, lang: str = "en") -> str:
    """The start of text `key`, up to its first placeholder."""
    return TEXT[lang][key].split("{")[0]


@pytest.fixture(scope="module")
def server(dev_bundle, tmp_path_factory):
    """The app on the dev bundle, told to send telemetry (it must not)."""
    root = tmp_path_factory.mktemp("limits")
    env = {"GRADIO_TEMP_DIR": str(root / "cache"), "GRADIO_ANALYTICS_ENABLED": "True"}
    with serve_app(dev_bundle, root / "app.log", env) as (url, proc):
        yield {"url": url, "cache": root / "cache", "log": root / "app.log", "root": root}


@pytest.fixture(scope="module")
def heavy(server):
    """The attacker's FLAC, uploaded: its file reference."""
    path = write_heavy_flac(server["root"] / "heavy.flac")
    with client(server["url"], "127.0.0.2") as http:
        return file_ref(upload(http, path))


def fn_index(url: str, api_name: str) -> int:
    config = httpx.get(f"{url}config").json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def raw_post(url: str, path: str, headers: dict[str, str], body=(), address="127.0.0.1"
             ) -> tuple[int, bytes]:
    """POST over a bare socket from `address`: the head, then the `body` chunks while the
    server has not answered; (status, body) of the answer."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), source_address=(address, 0)) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        for chunk in body:
            if select.select([sock], [], [], 0)[0]:
                break  # answered already
            sock.sendall(chunk)
        sock.settimeout(120)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"content-length: (\d+)", answer, re.I)[1]):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def files_in(cache: Path) -> int:
    return sum(p.is_file() for p in cache.rglob("*")) if cache.exists() else 0


# Finding 3: one visitor's events in the model queue

def test_one_session_gets_a_few_events_queued_and_the_rest_refused_at_once(server, heavy):
    """30 joins of one session, each from its own address (so only the session counts)."""
    index = fn_index(server["url"], "predict")
    statuses, details = [], []
    for i in range(FLOOD):
        with client(server["url"], f"127.0.1.{i + 1}") as http:
            answer = http.post("queue/join", json={"data": [heavy], "fn_index": index,
                                                    "session_hash": "one-flooding-session"})
        statuses.append(answer.status_code)
        details.append(answer.json().get("detail"))
    assert 1 <= statuses.count(200) <= VISITOR_EVENTS, statuses
    assert set(statuses) == {200, 429}
    assert all(d.startswith(message("busy_visitor")) for s, d in zip(statuses, details)
               if s == 429)


def test_one_address_gets_a_few_events_and_another_visitor_is_answered(server, heavy, tmp_path):
    """30 calls from one address, each a new session (sessions are free to make): at most
    the limit accepted, the rest refused at once in the visitor's language; another visitor
    is still answered."""
    with client(server["url"], "127.0.0.2") as attacker:
        answers = [attacker.post("call/predict", json={"data": [heavy]}) for _ in range(FLOOD)]
        ja = attacker.post("call/predict", json={"data": [heavy]},
                           headers={"accept-language": "ja"})
    statuses = [a.status_code for a in answers]
    assert 1 <= statuses.count(200) <= VISITOR_EVENTS, statuses
    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) == FLOOD - statuses.count(200)
    assert all(a.json()["detail"].startswith(message("busy_visitor")) for a in refused)
    assert refused[0].headers["retry-after"].isdigit()
    assert ja.status_code == 429 and ja.json()["detail"].startswith(message("busy_visitor", "ja"))
    with client(server["url"], "127.0.0.3") as visitor:
        kind, _ = call(visitor, "predict", [file_ref(upload(
            visitor, recording(tmp_path / "visitor.wav", seed=3)))])
    assert kind == "complete"


def test_the_direct_route_that_skips_the_queue_is_closed(server, tmp_path):
    """/run/<name> answered outside the queue (Gradio's api_open), around every limit."""
    with client(server["url"], "127.0.0.4") as http:
        ref = file_ref(upload(http, recording(tmp_path / "direct.wav", seed=4)))
        answer = http.post("run/predict", json={"data": [ref]})
    assert answer.status_code == 404


# Finding 5: bytes per request and per visitor

def test_an_upload_of_many_large_files_is_refused_before_it_is_read(server):
    """Ten 15 MiB files announced in one request: refused from the Content-Length, with
    nothing read or written."""
    before = files_in(server["cache"])
    status, body = raw_post(server["url"], "/gradio_api/upload", {
        "Content-Type": "multipart/form-data; boundary=xyz",
        "Content-Length": str(10 * 15 * MIB + 2000)}, address="127.0.0.5")
    assert status == 413
    assert json.loads(body)["detail"].startswith(message("upload_too_large"))
    assert files_in(server["cache"]) == before


def test_a_chunked_upload_is_counted_while_it_streams(server):
    """No Content-Length: the body is counted as it arrives and refused past the limit.
    The part is a form field, not a file: Gradio's per-file limit does not apply to it, and
    its parser keeps a field's bytes in memory."""
    before = files_in(server["cache"])
    part = b"--xyz\r\nContent-Disposition: form-data; name=\"files\"\r\n\r\n"
    field = UPLOAD_REQUEST_BYTES + 1 - len(part)  # one byte over: all of it is read
    chunks = [part] + [b"\0" * min(MIB, field - i) for i in range(0, field, MIB)]
    status, body = raw_post(server["url"], "/gradio_api/upload", {
        "Content-Type": "multipart/form-data; boundary=xyz", "Transfer-Encoding": "chunked"},
        (b"%x\r\n%s\r\n" % (len(c), c) for c in chunks), address="127.0.0.6")
    assert status == 413
    assert json.loads(body)["detail"].startswith(message("upload_too_large"))
    assert files_in(server["cache"]) == before


def test_an_upload_carries_at_most_a_few_files(server):
    files = [("files", (f"f{i}.wav", b"RIFF" + bytes(100))) for i in range(UPLOAD_FILES + 1)]
    with client(server["url"], "127.0.0.7") as http:
        answer = http.post("upload", files=files)
        assert answer.status_code == 413
        assert answer.json()["detail"].startswith(message("upload_too_many_files"))
        assert len(http.post("upload", files=files[:UPLOAD_FILES]).json()) == UPLOAD_FILES


def test_one_address_uploads_a_bounded_amount_per_file_lifetime(server):
    """15 MiB files from one address until its budget is spent: the next is refused from
    its Content-Length; another address still uploads."""
    size = 15 * MIB
    allowed = VISITOR_UPLOAD_BYTES // (size + 1000)  # what fits, with each request's headers
    data = bytes(size)
    with client(server["url"], "127.0.0.8") as http:
        for i in range(allowed):
            assert http.post("upload", files={"files": (f"b{i}.wav", data)}).status_code == 200
    status, body = raw_post(server["url"], "/gradio_api/upload", {
        "Content-Type": "multipart/form-data; boundary=xyz",
        "Content-Length": str(size + 200)}, address="127.0.0.8")
    assert status == 429
    assert json.loads(body)["detail"].startswith(message("upload_budget"))
    with client(server["url"], "127.0.0.9") as other:
        assert other.post("upload", files={"files": ("c.wav", data)}).status_code == 200
    assert size <= MAX_FILE_BYTES  # each upload was one the per-file limit allows


def test_a_request_body_other_than_an_upload_is_small(server):
    status, body = raw_post(server["url"], "/gradio_api/queue/join", {
        "Content-Type": "application/json", "Content-Length": str(50 * MIB)},
        address="127.0.0.10")
    assert status == 413
    assert json.loads(body)["detail"].startswith(message("body_too_large"))


# Finding 9: telemetry, malformed requests, served files

def test_no_telemetry_even_when_the_environment_asks(server):
    assert httpx.get(f"{server['url']}config").json()["analytics_enabled"] is False


def test_an_unknown_event_is_a_404_with_a_short_message(server):
    with client(server["url"], "127.0.0.11") as http:
        by_index = http.post("queue/join", json={"data": [], "fn_index": 9999,
                                                 "session_hash": "s"})
        by_name = [http.post(f"{route}/nope", json={"data": []})
                   for route in ("call", "call/v2", "run", "api")]
    for answer in [by_index, *by_name]:
        assert answer.status_code == 404
        assert answer.json()["detail"].startswith(message("unknown_event"))


def test_malformed_requests_do_not_flood_the_log(server):
    """20 each of several malformed requests: one traceback of a kind at most, then a line
    each (Gradio logged 1.4-5 KB per request)."""
    kinds = [("queue/join", {"data": [], "fn_index": 9999, "session_hash": "s"}),
             ("call/nope", {"data": [1]}),
             ("call/predict", {"data": [12345]}),
             ("call/predict", {"data": [{"path": 1}]}),
             ("call/v2/predict", {"data": [{"a": 1}]})]
    before = server["log"].stat().st_size
    with client(server["url"], "127.0.0.12") as http:
        for route, body in kinds:
            for _ in range(20):  # a new connection each: uvicorn closes one after a 500
                answer = http.post(route, json=body, headers={"connection": "close"})
                assert answer.status_code >= 400
    time.sleep(1.0)  # the server's log is written by another process
    grown = server["log"].stat().st_size - before
    assert grown < len(kinds) * (LOG_FIRST + 20 * LOG_PER_REQUEST), grown


def test_an_uploaded_page_is_never_rendered_as_html(server):
    page = b"<html><body><script>alert(document.cookie)</script></body></html>"
    with client(server["url"], "127.0.0.13") as http:
        as_png = upload(http, Path("x.png"), page)
        as_html = upload(http, Path("x.html"), page)
        as_text = upload(http, Path("x.txt"), page)
        shown = http.get(f"file={as_png}")
        served = [http.get(f"file={p}") for p in (as_html, as_text)]
        ranged = http.get(f"file={as_text}", headers={"Range": "bytes=0-10",
                                                       "X-Echo-Me": "attacker"})
    assert shown.headers["x-content-type-options"] == "nosniff"
    assert shown.headers["content-type"] == "image/png"
    for answer in [*served, ranged]:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-disposition"].startswith("attachment")
    assert ranged.status_code == 206 and "x-echo-me" not in ranged.headers
    assert httpx.get(server["url"]).headers["x-content-type-options"] == "nosniff"


def test_the_queue_holds_a_bounded_number_of_waiting_events(server, heavy):
    """Many visitors (one event each): past the queue's size, refused at once with the
    reason. Last in this module: it leaves the queue full of heavy events."""
    index = fn_index(server["url"], "predict")
    statuses, details = [], []
    for i in range(QUEUE_SIZE + 8):
        with client(server["url"], f"127.0.2.{i + 1}") as http:
            answer = http.post("queue/join", json={"data": [heavy], "fn_index": index,
                                                    "session_hash": f"visitor-{i}"})
        statuses.append(answer.status_code)
        details.append(answer.json().get("detail"))
    assert statuses.count(503) >= 1 and set(statuses) == {200, 503}
    assert all(d.startswith(message("queue_full")) for s, d in zip(statuses, details)
               if s == 503)

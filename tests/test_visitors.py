"""One visitor cannot harm another or the server: crafted requests over raw HTTP, as an
attacker sends them, against the app with and without an admin password.

Attackers connect from their own loopback addresses (127.0.0.x), so the admin password's
per-client back-off that their wrong guesses earn does not slow the tests' own admin.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from benchmarks.load import rss_mb
from browser import browser_page, chromium, open_tab
from conftest import DEV_PEOPLE, PHOTO, serve_app
from voiceface.audio import SAMPLE_RATE
from voiceface.devbundle import synthetic_voice, write_random_backbone
from voiceface.enrolled import Enrolled

pytestmark = pytest.mark.slow  # every test here starts the app server

PASSWORD = "open sesame"
TIMEOUT = 120  # s for one request


def recording(path: Path, seed: int, seconds: float = 3.0) -> Path:
    sf.write(path, synthetic_voice(seconds, seed=seed, f0=150.0 + 10 * seed), SAMPLE_RATE)
    return path


def client(url: str, address: str = "127.0.0.1") -> httpx.Client:
    """A raw HTTP client for Gradio's API routes, connecting from `address`."""
    return httpx.Client(base_url=f"{url}gradio_api/", timeout=TIMEOUT,
                        transport=httpx.HTTPTransport(local_address=address))


def file_ref(path: str | Path) -> dict:
    """What a client sends for a file input: a reference to a path on the server."""
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def upload(http: httpx.Client, path: Path, data: bytes | None = None) -> str:
    [server_path] = http.post("upload", files={"files": (
        path.name, path.read_bytes() if data is None else data)}).json()
    return server_path


def call(http: httpx.Client, api: str, data: list) -> tuple[str, object]:
    """POST one event and read its stream to the end: ("complete", outputs) or
    ("error", message)."""
    posted = http.post(f"call/{api}", json={"data": data})
    if posted.status_code != 200:
        return "refused", posted.text
    stream = http.get(f"call/{api}/{posted.json()['event_id']}").text
    kind, payload = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, re.M)[-1]
    payload = json.loads(payload)
    return kind, payload["error"] if kind == "error" and isinstance(payload, dict) else payload


def digests(paths) -> dict[str, str | None]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).is_file()
            else None for p in paths}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return write_random_backbone(tmp_path_factory.mktemp("backbone") / "backbone")


@pytest.fixture(scope="module", params=["admin", "read-only"])
def server(request, dev_bundle, backbone, tmp_path_factory):
    """The app on the dev bundle, with an admin password and a live gallery, or read-only."""
    root = tmp_path_factory.mktemp(request.param)
    cache = root / "gradio-cache"
    env, args = {"GRADIO_TEMP_DIR": str(cache)}, ()
    if request.param == "admin":
        env["VOICEFACE_ADMIN_PASSWORD"] = PASSWORD
        args = ("--gallery-dir", str(root / "live"), "--backbone", str(backbone),
                "--inversion-steps", "3", "--inversion-resolution", "32")
    with serve_app(dev_bundle, root / "app.log", env, args) as (url, proc):
        yield {"url": url, "cache": cache, "root": root, "log": root / "app.log",
               "admin": request.param == "admin", "pid": proc.pid}


def victims(server, dev_bundle, tmp_path) -> list[Path]:
    """Files a visitor must not be able to touch: visitor A's render, the served copy of a
    gallery photo, the cached example voice, bundle files and a file outside the cache."""
    with client(server["url"]) as http:
        posted = http.post("call/predict_ui", json={"data": [file_ref(upload(
            http, recording(tmp_path / "visitor-a.wav", seed=1)))]})
        stream = http.get(f"call/predict_ui/{posted.json()['event_id']}").text
    updates = [json.loads(data) for data in re.findall(r"^event: generating\ndata: (.*)$",
                                                        stream, re.M)]
    top, face = updates[0][4], updates[1][0]  # the nearest people's photos, the page's render
    examples = {p.read_bytes() for p in (dev_bundle / "voices").iterdir()}
    [example] = [p for p in server["cache"].rglob("*")
                 if p.is_file() and p.read_bytes() in examples][:1]
    outside = recording(tmp_path / "outside.wav", seed=2)
    bundle_photo = next((dev_bundle / "gallery" / "faces").iterdir())
    return [Path(face["path"]), Path(top[0]["image"]["path"]), example, bundle_photo,
            dev_bundle / "bundle.json", outside]


def test_crafted_file_references_touch_no_one_elses_files(server, dev_bundle, tmp_path):
    targets = victims(server, dev_bundle, tmp_path)
    before = digests(targets)
    assert None not in before.values()
    answers, admin_answers = [], []
    with client(server["url"], "127.0.0.2") as attacker, \
            client(server["url"], "127.0.0.3") as insider:  # the right password, not slowed
        for target in targets:
            ref = file_ref(target)
            answers += [call(attacker, api, [ref]) for api in
                        ("predict", "predict_ui", "face2voice", "face2voice_ui")]
            answers.append(call(attacker, "verify", [ref, "dev01"]))
            for by, password in ((attacker, "guess"), (insider, PASSWORD)) \
                    if server["admin"] else ():
                admin_answers += [
                    call(by, "enroll", [password, ref, ref, "Mallory", False]),
                    call(by, "delete", [password, str(target), True])]
    assert digests(targets) == before  # every file is still there, unchanged
    assert "complete" not in {kind for kind, _ in admin_answers}  # nothing enrolled, deleted
    if server["admin"]:
        assert len(Enrolled.load(server["root"] / "live" / "gallery").gallery) == DEV_PEOPLE
    refusals = json.dumps([m for kind, m in answers + admin_answers if kind != "complete"])
    assert str(server["cache"]) not in refusals and str(dev_bundle) not in refusals


def test_an_unmarked_reference_reads_nothing_outside_the_uploads(server, dev_bundle, tmp_path):
    """Gradio checks a file reference only when it carries its FileData marker; an image
    input takes one without it. A face photo in the bundle (which would be answered if read),
    a system file and a pipe (which would block the model queue) are all refused alike."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    photo = next((dev_bundle / "gallery" / "faces").iterdir())
    answers = []
    with client(server["url"], "127.0.0.4") as attacker:
        for target in (photo, Path("/etc/hostname"), pipe):
            ref = {"path": str(target)}
            answers += [call(attacker, api, [ref]) for api in ("face2voice", "face2voice_ui")]
            if server["admin"]:
                answers.append(call(attacker, "enroll", [PASSWORD, file_ref(
                    upload(attacker, recording(tmp_path / "v.wav", seed=5))), ref, "M", True]))
    for kind, message in answers:
        assert kind == "error" and "no longer on the server" in message, (kind, message)
    if server["admin"]:
        assert len(Enrolled.load(server["root"] / "live" / "gallery").gallery) == DEV_PEOPLE


def test_two_visitors_sending_the_same_bytes_at_once_both_get_answers(server, tmp_path):
    same = recording(tmp_path / "same.wav", seed=3)
    answers = []

    def visitor(address: str) -> None:
        with client(server["url"], address) as http:
            answers.append(call(http, "predict", [file_ref(upload(http, same))]))

    threads = [threading.Thread(target=visitor, args=(f"127.0.0.{3 + i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [kind for kind, _ in answers] == ["complete", "complete"], answers


def test_page_and_api_requests_share_one_queue(server, tmp_path):
    clips = [recording(tmp_path / f"q{i}.wav", seed=10 + i) for i in range(6)]
    answers = []

    def visitor(i: int) -> None:
        api = ("predict", "predict_ui", "verify")[i % 3]
        with client(server["url"], f"127.0.0.{10 + i}") as http:
            answers.append(call(http, api, [file_ref(upload(http, clips[i]))]
                                + (["dev00"] if api == "verify" else [])))

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [kind for kind, _ in answers] == ["complete"] * len(clips), answers
    assert "model calls overlap" not in server["log"].read_text()


def test_a_directory_or_a_missing_file_is_a_clean_message(server, tmp_path):
    with client(server["url"], "127.0.0.20") as http:
        path = upload(http, recording(tmp_path / "gone.wav", seed=4))
        Path(path).unlink()  # as the cache cleaning does
        answers = [call(http, "predict", [file_ref(path)]),
                   call(http, "predict", [file_ref(Path(path).parent)])]
    for kind, message in answers:
        assert kind == "error" and "no longer on the server" in message, message
        assert str(server["cache"]) not in message
    log = server["log"].read_text()
    assert "IsADirectoryError" not in log and "FileNotFoundError" not in log


def test_monitoring_routes_show_visitors_nothing(server):
    with httpx.Client(base_url=server["url"], timeout=30) as http:
        for route in ("monitoring", "monitoring/summary", "gradio_api/monitoring/summary"):
            response = http.get(route)
            assert response.status_code in (403, 404), (route, response.status_code)
            assert "delete" not in response.text and "predict" not in response.text


only_admin = pytest.mark.parametrize("server", ["admin"], indirect=True)  # enroll, delete


@pytest.mark.parametrize("server", ["read-only"], indirect=True)  # no password needed
def test_an_audio_bomb_costs_the_server_no_memory(server, tmp_path):
    """Issue 21's 1.9 MB FLAC (384 kHz, 8 channels, 360 s, mostly silence) and the same audio
    in Matroska, which once took the server from 1.2 to 6.6 GB, are refused from their
    headers (or ffmpeg's bounded output) over HTTP with no real growth of the server's peak
    memory."""
    from test_audio_limits import BOMB_SECONDS, MAX_GROWTH_MB, to_matroska, write_bomb

    flac = write_bomb(tmp_path / "bomb.flac", BOMB_SECONDS)
    Path(f"/proc/{server['pid']}/clear_refs").write_text("5")  # peak := now (Linux >= 4.0)
    before = rss_mb(server["pid"], "VmHWM")
    with client(server["url"], "127.0.0.40") as http:
        answers = [call(http, "predict", [file_ref(upload(http, bomb))])
                   for bomb in (flac, to_matroska(flac))]
    for kind, message in answers:
        assert kind == "error" and "long" in message, message
    assert rss_mb(server["pid"], "VmHWM") - before < MAX_GROWTH_MB


@only_admin
def test_consent_must_be_the_boolean_true(server, tmp_path):
    voice = recording(tmp_path / "consent.wav", seed=5, seconds=6.0)
    with client(server["url"]) as http:
        for consent in ("false", "true", "0", "", 1, [], None):
            kind, message = call(http, "enroll", [PASSWORD, file_ref(upload(http, voice)),
                                                  file_ref(upload(http, PHOTO)), "Eve",
                                                  consent])
            assert kind == "error" and "Consent is required" in message, (consent, message)
    assert len(Enrolled.load(server["root"] / "live" / "gallery").gallery) == DEV_PEOPLE


@only_admin
def test_wrong_passwords_back_off_and_are_logged_without_the_guess(server):
    """The exact waits are tested with a fake clock (tests/test_admin.py); over HTTP, on a
    busy machine, only that guesses are compared after their waits and refused within them."""
    guess = "hunter2-guess"
    with client(server["url"], "127.0.0.30") as attacker:
        answers = [call(attacker, "delete", [guess, "nobody", True])]
        for wait in (1, 2, 4):  # sit out each wait: the next guess is compared, and wrong
            time.sleep(wait + 0.3)
            answers.append(call(attacker, "delete", [guess, "nobody", True]))
        right_too_soon = call(attacker, "delete", [PASSWORD, "nobody", True])  # 8 s to wait
    assert answers == [("error", "Wrong admin password.")] * 4
    kind, message = right_too_soon
    waited = re.search(r"try again in (\d+) s", message)
    assert kind == "error" and waited and 4 <= int(waited[1]) <= 8, right_too_soon
    with client(server["url"], "127.0.0.31") as admin:  # others are not slowed down
        assert call(admin, "delete", [PASSWORD, "nobody", True]) == (
            "error", "Choose the person to delete.")
    log = server["log"].read_text()
    assert log.count("wrong admin password from 127.0.0.30") == 4 and guess not in log


MARKUP_NAMES = ["![t](http://127.0.0.1:1/t.png)", "<img src=x>", "[a](javascript:alert(1))"]


@pytest.mark.browser
@only_admin
def test_names_are_shown_as_plain_text_to_every_visitor(server, tmp_path):
    """Names holding Markdown or HTML reach the page as text: no image is fetched, no link
    made, in the enrollment answer and in the latent status every visitor's page polls."""
    from test_app import SCREENSHOTS

    with client(server["url"]) as http:
        for i, name in enumerate(MARKUP_NAMES):
            voice = recording(tmp_path / f"markup{i}.wav", seed=20 + i, seconds=6.0)
            kind, outputs = call(http, "enroll", [PASSWORD, file_ref(upload(http, voice)),
                                                  file_ref(upload(http, PHOTO)), name, True])
            assert kind == "complete", outputs
            assert not re.search(r"(?<!\\)(<img|\]\()", outputs[0]), outputs[0]  # escaped
    fetched = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("request", lambda r: fetched.append(r.url))
        page.goto(server["url"])
        open_tab(page, "Enroll")
        status = page.locator("#latent-status")
        for name in MARKUP_NAMES:  # the literal names, as text
            status.filter(has_text=name).wait_for(timeout=30_000)
        assert status.locator("img, a").count() == 0
        page.screenshot(path=str(SCREENSHOTS / "enroll-markup-names.png"), full_page=True)
        open_tab(page, "Verify")  # its claims are refreshed on focus
        page.locator("#verify-claim input").click()
        options = page.get_by_role("option")
        options.nth(DEV_PEOPLE + len(MARKUP_NAMES) - 1).wait_for(timeout=30_000)
        shown = options.all_inner_texts()
        assert all(any(t.startswith(f"{name} (") for t in shown) for name in MARKUP_NAMES)
    assert not [u for u in fetched if "127.0.0.1:1/" in u or u.endswith("/x")]


LOOKALIKES = {  # name -> what the refusal says, in English and in Japanese
    "Test person 1": ("Test person 1 is already enrolled (id dev00); add a family name or "
                      "initial to tell them apart.", "Test person 1はすでに登録されています（ID dev00）"),
    "TEST  PERSON 2": ("TEST PERSON 2 looks the same as Test person 2, already enrolled (id "
                       "dev01)", "TEST PERSON 2は登録済みのTest person 2（ID dev01）"),
    "Test person 1\ufe0f": ("invisible or control character (U+FE0F VARIATION SELECTOR-16)",
                            "見えない文字または制御文字（U+FE0F VARIATION SELECTOR-16）"),
    "\u2800": ("invisible or control character (U+2800 BRAILLE PATTERN BLANK)",
               "見えない文字または制御文字（U+2800 BRAILLE PATTERN BLANK）"),
    "T\u0435st person 7": ("mixes Latin and Cyrillic letters (\"\u0435\" is U+0435",
                           "別の文字体系の文字「\u0435」（U+0435"),
    "<B>ZED</B>": ("&lt;B&gt;ZED&lt;/B&gt; looks the same as &lt;b&gt;Zed&lt;/b&gt;, already",
                   "&lt;B&gt;ZED&lt;/B&gt;は登録済みの&lt;b&gt;Zed&lt;/b&gt;"),  # as text
}


@only_admin
def test_names_that_look_like_an_enrolled_one_are_refused(server, tmp_path):
    """Over /enroll with the right password: the same visible name as an enrolled person's, an
    invisible character, a name showing blank, a Cyrillic letter among Latin ones. Each is
    refused with its reason in the visitor's language (quoting names as text) and nothing is
    enrolled."""
    voice = recording(tmp_path / "zed.wav", seed=40, seconds=6.0)
    with client(server["url"], "127.0.0.41") as http:
        kind, outputs = call(http, "enroll", [PASSWORD, file_ref(upload(http, voice)),
                                              file_ref(upload(http, PHOTO)), "<b>Zed</b>", True])
        assert kind == "complete", outputs
        people = len(Enrolled.load(server["root"] / "live" / "gallery").gallery)
        for language in ("en", "ja"):
            http.headers["accept-language"] = language
            for name, words in LOOKALIKES.items():
                kind, message = call(http, "enroll", [PASSWORD, file_ref(upload(http, voice)),
                                                      file_ref(upload(http, PHOTO)), name, True])
                assert kind == "error" and words[language == "ja"] in message, (name, message)
    assert len(Enrolled.load(server["root"] / "live" / "gallery").gallery) == people


@pytest.mark.browser
def test_a_failed_latent_shows_visitors_no_reason(dev_bundle, tmp_path):
    """A latent that fails (here: the perceptual backbone is missing) says "failed" on the page
    every visitor polls; the reason, which names server paths, goes to the server's log."""
    missing = tmp_path / "srv" / "no-backbone"
    env = {"VOICEFACE_ADMIN_PASSWORD": PASSWORD, "GRADIO_TEMP_DIR": str(tmp_path / "cache")}
    args = ("--gallery-dir", str(tmp_path / "live"), "--backbone", str(missing))
    log = tmp_path / "app.log"
    voice = recording(tmp_path / "fails.wav", seed=30, seconds=6.0)
    with serve_app(dev_bundle, log, env, args) as (url, _):
        with client(url) as http:
            kind, outputs = call(http, "enroll", [PASSWORD, file_ref(upload(http, voice)),
                                                  file_ref(upload(http, PHOTO)), "Fay", True])
        assert kind == "complete", outputs
        with browser_page(url, (1280, 900)) as page:
            open_tab(page, "Enroll")
            status = page.locator("#latent-status")
            status.filter(has_text="Fay: failed").wait_for(timeout=120_000)
            shown = status.inner_text()
    assert "no-backbone" not in shown and str(tmp_path) not in shown and "/" not in shown
    assert "the face latent of fay-" in log.read_text() and "no-backbone" in log.read_text()

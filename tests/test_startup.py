"""A fresh start on a personas bundle: the page is served while the people are prepared
behind it; what needs them says how far it is (in words on the page, 503 to programs) and
answers once they are; a failed preparation is shown; the precision is checked after."""

from __future__ import annotations

import time
from contextlib import ExitStack

import httpx
import pytest

from browser import browser_page
from conftest import serve_app
from test_admin import queued
from test_app import CLIPPED, SCREENSHOTS
from test_personas import SHIPPED, write_personas_bundle, write_personas_folder
from test_visitors import call, client, file_ref, recording, upload
from voiceface import storage
from voiceface.devbundle import TINY_GENERATOR, write_random_backbone, write_random_face_traits
from voiceface.enroll import LiveGallery
from voiceface.pipeline import NotReady, VoiceFace
from voiceface.startup import Startup
from voiceface.stylegan2 import Generator
from voiceface.ui.verify import claim_labels

PEOPLE = (0, 13, 36, 46)  # of the shipped personas, as tests/test_personas.py chooses
READY_TIMEOUT = 600  # s for the tiny models' caches to be built once unblocked
PASSWORD = "open sesame"


@pytest.fixture
def personas_bundle(tmp_path, tiny_xvector_dir):
    """A bundle of four shipped personas and tiny random models (its own folder of them)."""
    root = write_personas_folder(tmp_path / "personas", PEOPLE)
    Generator(TINY_GENERATOR, seed=3).save_pretrained(tmp_path / "generator")
    return write_personas_bundle(
        tmp_path / "bundle", root, tiny_xvector_dir, tmp_path / "generator",
        write_random_backbone(tmp_path / "backbone", seed=0),
        write_random_face_traits(tmp_path / "clip", seed=0))


def component(url: str, elem_id: str) -> tuple[int, dict]:
    """The id and props of the component with `elem_id` in the served page's config."""
    config = httpx.get(f"{url}config", timeout=30).json()
    [found] = [(c["id"], c.get("props", {})) for c in config["components"]
               if c.get("props", {}).get("elem_id") == elem_id]
    return found


def event_of(url: str, api_name: str | None = None, outputs: int | None = None) -> int:
    """The fn_index of the event called `api_name`, or of the one whose outputs start with
    component `outputs`."""
    config = httpx.get(f"{url}config", timeout=30).json()
    [fn] = [d["id"] for d in config["dependencies"]
            if (api_name is not None and d.get("api_name") == api_name)
            or (outputs is not None and d["outputs"][:1] == [outputs]
                and len(d["outputs"]) > 1)]
    return fn


def queued_on_page(url: str, fn_index: int, data: list, language: str = "en-US,en"
                   ) -> tuple[str, object]:
    """Call an event as the page does (through the queue): ("complete", outputs) or
    ("error", message)."""
    with httpx.Client(base_url=f"{url}gradio_api/", timeout=120,
                      headers={"Accept-Language": language}) as http:
        return queued(http, fn_index, data)


def page_status(url: str, language: str = "en-US,en") -> tuple[dict, str]:
    """What the page's status refresh shows: the progress line's update and the precision
    status line."""
    progress, _ = component(url, "preparing-status")
    status, outputs = queued_on_page(url, event_of(url, outputs=progress), [], language)
    assert status == "complete", outputs
    shown, precision, _timer = outputs
    return shown, precision


def predict_on_page(url: str, path: str, language: str = "en-US,en") -> tuple[str, object]:
    return queued_on_page(url, event_of(url, "predict_ui"), [file_ref(path)], language)


@pytest.mark.slow
def test_the_page_is_served_while_the_people_are_prepared(personas_bundle, tmp_path):
    cache = tmp_path / "cache"
    log = tmp_path / "app.log"
    voice = recording(tmp_path / "voice.wav", seed=1)
    env = {"VOICEFACE_CACHE": str(cache), "VOICEFACE_ADMIN_PASSWORD": PASSWORD}
    with ExitStack() as lock:
        # the test holds the personas' cache lock, as another process building them would:
        # the app's build waits on it until the test lets go
        lock.enter_context(storage.locked(cache / "personas"))
        with serve_app(personas_bundle, log, env, ("--gallery-dir", str(tmp_path / "live"))
                       ) as (url, _):
            shown, precision = page_status(url)
            assert shown["visible"] and "Preparing the people" in shown["value"]
            assert "checked once the people are prepared" in precision
            assert "人物" in page_status(url, "ja,en")[0]["value"]
            with client(url) as http:
                path = upload(http, voice)
                refused = http.post("call/predict", json={"data": [file_ref(path)]})
                assert refused.status_code == 503
                assert int(refused.headers["retry-after"]) > 0
                assert "Preparing the people" in refused.json()["detail"]
                assert "try again" in refused.json()["detail"]
                for api, data in (("verify", [file_ref(path), SHIPPED[0]["id"]]),
                                  ("face2voice", [file_ref(path)]),
                                  ("enroll", [PASSWORD, file_ref(path), file_ref(path),
                                              "Mallory", True])):
                    assert http.post(f"call/{api}", json={"data": data}).status_code == 503
                ja = http.post("call/predict", json={"data": [file_ref(path)]},
                               headers={"Accept-Language": "ja"})
                assert ja.status_code == 503 and "準備" in ja.json()["detail"]
            # the page's own call, through the queue: answered at once, in words
            status, error = predict_on_page(url, path)
            assert status == "error" and "Preparing the people" in error
            lock.close()  # the build may go on now
            deadline = time.monotonic() + READY_TIMEOUT
            with client(url) as http:
                while (answer := call(http, "predict", [file_ref(path)]))[0] != "complete":
                    assert answer[0] == "refused" and time.monotonic() < deadline, answer
                    time.sleep(1)
            face, nearest, summary = answer[1]
            assert face is not None and summary["matches"][0]["id"] in {
                SHIPPED[i]["id"] for i in PEOPLE}
            while "voice encoder precision:" not in log.read_text():
                assert time.monotonic() < deadline
                time.sleep(1)
            shown, precision = page_status(url)
            assert not shown["visible"]
            assert "Voice encoder:" in precision and "checked once" not in precision
    text = log.read_text()
    assert text.index("Building the persona gallery") < text.index("voice encoder precision:")
    assert "Traceback" not in text


@pytest.mark.slow
def test_a_read_only_app_serves_the_people_s_photos_once_they_are_prepared(personas_bundle,
                                                                            tmp_path):
    """Without a live gallery the photos' folder is known only once the caches exist: the
    Gallery tab, opened after that, shows every person's photo, served."""
    cache = tmp_path / "cache"
    own_temp = tmp_path / "app-temp"  # Gradio serves its temp folder: the caches are not in it
    own_temp.mkdir()
    with serve_app(personas_bundle, tmp_path / "app.log", {
            "VOICEFACE_CACHE": str(cache), "TMPDIR": str(own_temp)}) as (url, _):
        deadline = time.monotonic() + READY_TIMEOUT
        with client(url) as http:
            voice = file_ref(upload(http, recording(tmp_path / "voice.wav", seed=1)))
            while call(http, "predict", [voice])[0] != "complete":
                assert time.monotonic() < deadline
                time.sleep(1)
        people, _ = component(url, "people")
        config = httpx.get(f"{url}config", timeout=30).json()
        opened = [d["id"] for d in config["dependencies"] if d["outputs"] == [people]]
        for fn_index in opened:  # the page's load and the tab's selection
            status, (shown,) = queued_on_page(url, fn_index, [])
            assert status == "complete" and len(shown) == len(PEOPLE), shown
            for item in shown:
                photo = httpx.get(item["image"]["url"], timeout=30)
                assert photo.status_code == 200
                assert photo.headers["content-type"].startswith("image/")


@pytest.mark.slow
def test_a_failed_preparation_is_logged_and_shown(personas_bundle, tmp_path):
    (personas_bundle / "face-traits" / "model.safetensors").write_bytes(b"no weights" * 100)
    log = tmp_path / "app.log"
    with serve_app(personas_bundle, log, {"VOICEFACE_CACHE": str(tmp_path / "cache")}) as (
            url, _):
        deadline = time.monotonic() + READY_TIMEOUT
        while "could not be prepared" not in (shown := page_status(url)[0]).get("value", ""):
            assert time.monotonic() < deadline, shown
            time.sleep(1)
        assert shown["visible"] and str(tmp_path) not in shown["value"]  # no server paths
        with client(url) as http:
            refused = http.post("call/predict", json={"data": [file_ref(upload(
                http, recording(tmp_path / "voice.wav", seed=1)))]})
        assert refused.status_code == 503 and "retry-after" not in refused.headers
        assert "could not be prepared" in refused.json()["detail"]
    assert "Preparing the gallery failed" in log.read_text()


@pytest.mark.slow
def test_a_pipeline_can_exist_before_its_gallery(personas_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "cache"))
    voice = recording(tmp_path / "voice.wav", seed=1)
    vf = VoiceFace.from_pretrained(personas_bundle, prepare=False)
    assert not vf.ready and not (tmp_path / "cache").exists()  # nothing built yet
    with pytest.raises(NotReady, match="preparing the gallery: waiting"):
        vf(voice)
    # the Verify tab's examples, labelled once when the page is built, name the personas
    assert claim_labels(vf) == {SHIPPED[i]["id"]: f"{SHIPPED[i]['name']} ({SHIPPED[i]['id']})"
                                for i in PEOPLE}
    seen = []
    startup = Startup(vf)
    startup.when_ready(lambda: seen.append((vf.ready, startup.decision)))
    startup.run()
    assert seen == [(True, None)]  # ready before the precision check, which ran after
    assert startup.decision is not None and vf.preparation.progress() == (
        "models", len(PEOPLE), len(PEOPLE), None)
    assert vf(voice).matches[0].id in {SHIPPED[i]["id"] for i in PEOPLE}
    # the library's default still blocks until ready
    assert VoiceFace.from_pretrained(personas_bundle).ready


@pytest.mark.slow
def test_a_restart_never_answers_from_people_deleted_from_the_live_gallery(
        personas_bundle, tmp_path, monkeypatch):
    """A live gallery in which a persona was deleted; on the next start the bundle's caches
    (which still hold that persona) are prepared first: until the live gallery is open,
    requests are told to wait, never answered from the caches."""
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "cache"))
    gallery_dir = tmp_path / "live"
    first = Startup(VoiceFace.from_pretrained(personas_bundle, prepare=False), gallery_dir)
    first.run()
    deleted = SHIPPED[PEOPLE[0]]["id"]
    first.live.delete(deleted)
    vf = VoiceFace.from_pretrained(personas_bundle, prepare=False)
    asked = []
    opening = LiveGallery.open.__func__

    def open_while_asked(cls, vf_, directory, **kwargs):
        try:  # what a request arriving now would be answered from
            asked.append([p.id for p in vf_.state.gallery.people])
        except NotReady as err:
            asked.append(err)
        return opening(cls, vf_, directory, **kwargs)

    monkeypatch.setattr(LiveGallery, "open", classmethod(open_while_asked))
    Startup(vf, gallery_dir).run()
    assert len(asked) == 1 and isinstance(asked[0], NotReady), asked
    assert deleted not in vf.state.gallery and len(vf.state.gallery) == len(PEOPLE) - 1


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("locale, words", [("en-US", "Preparing the people"), ("ja-JP", "準備")])
def test_a_phone_shows_the_progress_until_the_people_are_ready(personas_bundle, tmp_path,
                                                               locale, words):
    cache = tmp_path / "cache"
    with ExitStack() as lock:
        lock.enter_context(storage.locked(cache / "personas"))  # the build waits on it
        with serve_app(personas_bundle, tmp_path / "app.log", {"VOICEFACE_CACHE": str(cache)}
                       ) as (url, _), browser_page(url, locale=locale) as page:
            line = page.locator("#preparing-status")
            line.get_by_text(words).wait_for(timeout=60_000)
            assert line.locator("p").evaluate_all(CLIPPED) == []  # whole, at 390 px
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"phone-preparing-{locale}.png"))
            lock.close()
            line.wait_for(state="hidden", timeout=READY_TIMEOUT * 1000)  # refreshed, gone

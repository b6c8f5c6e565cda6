"""The Face to voice tab and the `/face2voice` endpoint, as people and programs use them:
gradio_client over HTTP and a real browser at phone width, on the dev bundle."""

from __future__ import annotations

import re
import shutil
import urllib.request

import pytest
from gradio_client import Client, handle_file

from browser import browser_page, open_tab
from conftest import DEV_PEOPLE, REPO, serve_app, serve_with_cache
from test_app import CLIPPED, SCREENSHOTS
from test_face2voice import BAD_KINDS, PHOTO, bad_photo
from voiceface.bundle import BundleSpec
from voiceface.enrolled import Enrolled
from voiceface.pipeline import VoiceFace


@pytest.fixture(scope="module")
def server(dev_bundle, tmp_path_factory):
    with serve_with_cache(dev_bundle, tmp_path_factory.mktemp("face2voice-app")) as app:
        yield app


def test_voice_samples_are_the_personas_voices_or_the_examples_named_after_a_person(
        dev_bundle):
    personas = BundleSpec.read(REPO / "index").voice_samples()
    assert len(personas) == 48
    assert personas["persona05"].resolve() == \
        (REPO / "assets" / "personas" / "voices" / "persona05.opus").resolve()
    dev = BundleSpec.read(dev_bundle).voice_samples()
    assert dev == {f"dev{i:02d}": dev_bundle / "voices" / f"dev{i:02d}.flac"
                   for i in range(DEV_PEOPLE)}


@pytest.mark.slow
def test_client_face2voice_answers_as_the_library_does(server, dev_bundle):
    summary = Client(server["url"], verbose=False).predict(handle_file(str(PHOTO)),
                                                           api_name="/face2voice")
    expected = VoiceFace.from_pretrained(dev_bundle, progress=False).face2voice(PHOTO)
    assert [m["id"] for m in summary["matches"]] == [m.id for m in expected.matches]
    assert [m["score"] for m in summary["matches"]] == pytest.approx(
        [m.score for m in expected.matches], abs=1e-4)
    assert {m["id"] for m in summary["matches"]} <= {f"dev{i:02d}" for i in range(DEV_PEOPLE)}
    assert summary["matches"][0]["name"].startswith("Test person")
    assert summary["method"] == "mapper" and summary["test_weights"] is True
    assert set(summary["timings"]) == {"align", "features", "map", "search", "total"}
    assert summary["face_traits"] is None  # the dev bundle names no face-trait model


@pytest.mark.slow
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_client_bad_photo_gets_the_library_message_and_no_path(server, dev_bundle, tmp_path,
                                                                kind):
    path, message = bad_photo(kind, tmp_path)
    with pytest.raises(Exception) as refused:
        Client(server["url"], verbose=False).predict(handle_file(str(path)),
                                                     api_name="/face2voice")
    said = str(refused.value)
    assert message.lower() in said.lower()
    for place in (str(tmp_path), str(server["cache"]), str(dev_bundle), path.name):
        assert place not in said


@pytest.mark.slow
def test_a_japanese_visitor_gets_the_photo_s_problem_in_japanese(server, tmp_path):
    client = Client(server["url"], verbose=False, headers={"Accept-Language": "ja"})
    for kind, said in (("no-face", "写真に顔が見つかりません"), ("two-faces", "写真に2人の顔")):
        path, _ = bad_photo(kind, tmp_path)
        with pytest.raises(Exception, match=said):
            client.predict(handle_file(str(path)), api_name="/face2voice")


@pytest.mark.slow
def test_client_without_a_photo_is_asked_for_one(server):
    with pytest.raises(Exception, match="Upload or take a photo first"):
        Client(server["url"], verbose=False).predict(None, api_name="/face2voice")


@pytest.mark.slow
def test_a_bundle_without_face_to_voice_says_so(dev_bundle, tmp_path):
    bundle = tmp_path / "old-bundle"
    shutil.copytree(dev_bundle, bundle, ignore=shutil.ignore_patterns("face2voice"))
    with serve_app(bundle, tmp_path / "app.log") as (url, _):
        with pytest.raises(Exception, match="no face-to-voice model") as refused:
            Client(url, verbose=False).predict(handle_file(str(PHOTO)), api_name="/face2voice")
        urllib.request.urlopen(url, timeout=5)  # still serving
    assert "Traceback" not in str(refused.value)
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def ask_with_photo(page, english: bool) -> None:
    """On the Face to voice tab, upload the test photo and ask (the answer still to come)."""
    open_tab(page, "Face to voice" if english else "顔から声へ")
    with page.expect_response(lambda r: "/gradio_api/upload" in r.url, timeout=30_000):
        page.locator("#f2v-photo input[type=file]").set_input_files(str(PHOTO))
    page.locator("#f2v-submit").click()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
def test_a_phone_shows_the_voices_names_and_plays_them(server, dev_bundle, locale):
    """At 390 px: upload a photo on the Face to voice tab; five whole names with their bars
    and a play button each (every dev person has an example recording); the button plays
    that person's recording, the method and the note are in the visitor's language."""
    english = locale == "en-US"
    with browser_page(server["url"], locale=locale) as page:
        ask_with_photo(page, english)
        buttons = page.locator("#f2v-voices button.play")
        buttons.nth(4).wait_for(timeout=60_000)
        names = page.locator("#f2v-voices .name")
        assert names.count() == 5 and buttons.count() == 5
        assert all(re.fullmatch(r"\d\. Test person \d+", t) for t in names.all_inner_texts())
        assert names.evaluate_all(CLIPPED) == [] and buttons.evaluate_all(CLIPPED) == []
        first = names.first.inner_text().split(". ", 1)[1]
        assert buttons.first.get_attribute("aria-label") == (
            f"Play the voice of {first}" if english else f"{first}の声を再生")
        response = page.request.get(page.url.rstrip("/") + "/" +
                                    buttons.first.get_attribute("data-src"))
        assert response.ok
        ids = {person.name: person.id for person in Enrolled.load(dev_bundle / "gallery").gallery.people}
        assert response.body() == (dev_bundle / "voices" / f"{ids[first]}.flac").read_bytes()
        buttons.first.click()
        assert buttons.first.get_attribute("aria-pressed") == "true"
        page.wait_for_function("() => !document.querySelector("
                               "'#f2v-voices button.play[aria-pressed=\"true\"]')",
                               timeout=30_000)  # the recording played to its end
        method = page.locator("#f2v-method").inner_text()
        assert ("Method: mapper" if english else "推定方法：マッパー") in method
        assert ("not anyone's real voice" if english else "誰かの本当の声ではなく") in \
            page.locator("body").inner_text()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"phone-face2voice-{locale}.png"),
                        full_page=True)

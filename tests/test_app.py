"""The app as people and programs use it: gradio_client and a real browser with a microphone."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from browser import browser_page, open_tab
from conftest import DEV_PEOPLE, PHOTO, REPO, serve_app
from voiceface.provenance import is_marked
from voiceface.traits import voice_traits

PERSONAS_START_TIMEOUT = 600  # s, first start with the default personas: caches are built
PREPARING = "Preparing the"  # what a request answers while the people are being prepared
SCREENSHOTS = REPO / "build" / "screenshots"  # kept after the run for people to look at


@pytest.fixture(scope="module")
def app_url(dev_bundle, tmp_path_factory):
    with serve_app(dev_bundle, tmp_path_factory.mktemp("app") / "app.log") as (url, _):
        yield url


@pytest.mark.slow
def test_help_documents_the_flags():
    proc = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0
    for flag in ("--bundle", "--encoder", "--generator", "--threads", "--quantize", "--precision",
                 "--trusted-proxies", "--visitors-per-address", "--face-traits", "--host",
                 "--port", "--share"):
        assert flag in proc.stdout


@pytest.mark.slow
def test_missing_bundle_is_a_clear_message_not_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "app.py", "--bundle", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "not a voiceface bundle" in proc.stderr and "dev-bundle" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_default_start_offline_with_nothing_cached_names_what_is_missing(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache"),
           "VOICEFACE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "app.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2
    assert "anton-l/wav2vec2-base-superb-sv" in proc.stderr and "dev-bundle" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_default_personas_build_once_then_serve(tiny_xvector_dir, tmp_path):
    """A fresh clone's default bundle with local models: persona caches built on the first
    start (behind the served page: requests meanwhile say so), reused on the second, and the
    48 synthetic personas served, voice to face and face to voice."""
    from voiceface.devbundle import (TINY_GENERATOR, write_random_backbone,
                                     write_random_face_traits)
    from voiceface.stylegan2 import Generator

    Generator(TINY_GENERATOR, seed=5).save_pretrained(tmp_path / "generator")
    backbone = write_random_backbone(tmp_path / "backbone")
    face_traits = write_random_face_traits(tmp_path / "face-traits")
    args = ("--encoder", str(tiny_xvector_dir), "--generator", str(tmp_path / "generator"),
            "--backbone", str(backbone), "--face-traits", str(face_traits))
    env = {"VOICEFACE_CACHE": str(tmp_path / "cache")}
    for start, log in enumerate([tmp_path / "first.log", tmp_path / "second.log"]):
        with serve_app(None, log, env, args, timeout=PERSONAS_START_TIMEOUT) as (url, _):
            client = Client(url, verbose=False)
            voice = REPO / "assets" / "personas" / "voices" / "persona05.opus"
            deadline = time.monotonic() + PERSONAS_START_TIMEOUT
            while True:
                try:
                    _, _, summary = client.predict(handle_file(str(voice)), api_name="/predict")
                    break
                except AppError as err:
                    assert PREPARING in str(err) and time.monotonic() < deadline, err
                    time.sleep(1)
            voices = client.predict(handle_file(str(PHOTO)), api_name="/face2voice")
            page = urllib.request.urlopen(url, timeout=10).read().decode()
        # the gallery pools the two parts of each persona's recording (as `build` pools a
        # single recording's), which the tiny random encoder, knowing no voices, does not
        # place near the whole recording: the answer is five personas, not necessarily its own
        assert len(summary["matches"]) == 5
        assert all(m["id"].startswith("persona") for m in summary["matches"])
        assert len(voices["matches"]) == 5 and voices["method"] == "mapper"
        assert all(m["id"].startswith("persona") for m in voices["matches"])
        assert "Synthetic personas" in page
        assert ("Building the persona gallery" in log.read_text()) == (start == 0)


@pytest.mark.slow
def test_client_predict_returns_both_faces_and_a_summary(app_url, dev_bundle):
    client = Client(app_url, verbose=False)
    face, nearest, summary = client.predict(handle_file(str(dev_bundle / "voices" /
                                                            "dev01.flac")), api_name="/predict")
    generated_img, nearest_img = Image.open(face), Image.open(nearest)
    assert generated_img.size == (64, 64) and nearest_img.size == (64, 64)
    assert not np.array_equal(np.asarray(generated_img), np.asarray(nearest_img))
    assert summary["matches"][0]["id"] == "dev01" and summary["confident"] is True
    assert summary["method"] == "mapper" and summary["test_weights"] is True
    assert summary["centre"] == "population"
    assert len(summary["matches"]) == 5
    assert set(summary) == {"matches", "confident", "threshold", "method", "centre", "timings",
                            "test_weights", "voice_traits"}  # as `predict --json` (+ "face")
    assert summary["voice_traits"] == voice_traits(dev_bundle / "voices" / "dev01.flac").summary()


@pytest.mark.slow
def test_a_generator_above_the_preview_size_streams_matches_preview_full_face_then_png(tmp_path):
    """With a generator larger than the 128 px preview the page gets, in order: the nearest
    people before any face is drawn, the preview, the full face continued from the same
    render (both JPEG, marked in EXIF), then the PNG for download; nothing else twice.
    The API answers with the full face as PNG."""
    from voiceface.devbundle import write_dev_bundle
    from voiceface.stylegan2 import GeneratorConfig, resolutions

    config = GeneratorConfig(size=512, style_dim=64, n_mlp=2,
                             channels={r: 8 for r in resolutions(512)})
    bundle = write_dev_bundle(tmp_path / "bundle", n_people=3, progress=False,
                              generator_config=config)
    with serve_app(bundle, tmp_path / "app.log") as (url, _):
        client = Client(url, verbose=False)
        voice = handle_file(str(bundle / "voices" / "dev01.flac"))
        face, _, summary = client.predict(voice, api_name="/predict")
        job = client.submit(voice, api_name="/predict_ui")  # what the page's button calls
        job.result(timeout=120)
        updates = job.outputs()
    api_face = Image.open(face)
    assert api_face.format == "PNG" and api_face.size == (512, 512) and is_marked(api_face)
    assert summary["matches"][0]["id"] == "dev01" and summary["method"] == "mapper"
    first, preview, full, png = updates
    skipped = {"__type__": "update"}
    assert first[0] is None and "similarity" in first[3] and first[4] and "bars" in first[5]
    assert "synthesise" not in first[6]["timings"]  # sent before any face was drawn
    for update, size in ((preview, 128), (full, 512)):
        image = Image.open(update[0])
        assert image.format == "JPEG" and image.size == (size, size) and is_marked(image)
        assert list(update[2:6]) == [skipped] * 3 + [{"props": skipped, "__type__": "update"}]
    assert "preview" in preview[1] and "preview" not in full[1]
    # the voice's traits are said once, in the first update that has them (before the face
    # when the mapper takes them, else with the full face); the first update clears them
    said = [u[8] for u in updates if u[8] != skipped]
    assert said[0] == "" or re.search(r"Your voice:\*\* pitch about \d+ Hz", said[0]), said
    assert len(said) <= 2 and re.search(r"Your voice:\*\* pitch about \d+ Hz", said[-1]), said
    assert Image.open(png[0]).tobytes() == Image.open(full[0]).tobytes()  # the face again
    assert list(png[1:7]) == [skipped] * 4 + [{"props": skipped, "__type__": "update"}, skipped]
    download = Image.open(png[7]["value"])
    assert download.format == "PNG" and is_marked(download) and png[7]["visible"]
    assert np.array_equal(np.asarray(download), np.asarray(api_face))  # the lossless face


@pytest.mark.slow
def test_client_bad_audio_gets_the_library_message(app_url, tmp_path):
    png = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(png)
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="PNG image, not audio"):
        client.predict(handle_file(str(png)), api_name="/predict")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.int16), 16000)
    with pytest.raises(Exception, match="silent"):
        client.predict(handle_file(str(silent)), api_name="/predict")
    urllib.request.urlopen(app_url, timeout=5)  # still serving


@pytest.mark.slow
def test_a_japanese_visitor_gets_the_recording_s_problem_in_japanese(app_url, tmp_path, speech):
    """The library's reason and figures, worded in the visitor's language, on both tabs that
    take a voice."""
    client = Client(app_url, verbose=False, headers={"Accept-Language": "ja,en;q=0.5"})
    short = tmp_path / "short.wav"
    sf.write(short, speech(0.6, rate=16_000, f0=150.0), 16_000)
    with pytest.raises(Exception, match=r"聞き取れた音声が短すぎます（0\.\d\d秒）。1秒以上"):
        client.predict(handle_file(str(short)), api_name="/predict")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.int16), 16000)
    with pytest.raises(Exception, match="録音が無音です"):
        client.predict(handle_file(str(silent)), "dev00", api_name="/verify")


def image_digest(page, selector: str) -> str:
    """sha256 of the image bytes the browser shows in `selector`."""
    src = page.locator(f"{selector} img").first.get_attribute("src")
    data = page.request.get(src).body()
    assert len(data) > 100, f"{selector} shows an empty image"
    return hashlib.sha256(data).hexdigest()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("viewport", [(390, 844), (1280, 900)], ids=["phone", "desktop"])
def test_browser_records_the_microphone_and_shows_both_faces(app_url, tmp_path, viewport,
                                                             speech):
    """Stopping the recording is enough: the answer comes without pressing the button, and
    the generated face can be downloaded as a marked PNG."""
    mic = tmp_path / "mic.wav"  # Chromium loops this file as the microphone
    sf.write(mic, (speech(4.0, rate=48_000, f0=180.0) * 32767).astype(np.int16), 48_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = "phone" if viewport[0] < 500 else "desktop"
    with browser_page(app_url, viewport, mic=mic) as page:
        page.locator("#voice button.record-button").click(timeout=30_000)
        page.wait_for_timeout(3000)
        with page.expect_response(lambda r: "/gradio_api/upload" in r.url, timeout=30_000):
            page.locator("#voice button.stop-button").first.click()  # answered without a click
        caption = page.locator("#nearest-caption")
        caption.filter(has_text="similarity").wait_for(timeout=60_000)
        page.locator("#generated-caption").filter(
            has_text="trained mapper; pulled toward the enrolled people's average").wait_for(
            timeout=60_000)
        page.locator("#generated-caption").filter(has_text="preview").wait_for(
            state="detached", timeout=60_000)
        download = page.locator("#download")
        download.wait_for(timeout=60_000)  # the PNG, after the face
        with page.expect_download() as saved:
            download.click()
        assert is_marked(Image.open(saved.value.path()))
        text = caption.inner_text()
        assert "Test person" in text or "No confident match" in text
        assert any(ch.isdigit() for ch in text)
        if "No confident match" in text:  # the calibrated threshold was not reached: no photo
            assert page.locator("#nearest img").count() == 0
        else:
            assert image_digest(page, "#generated") != image_digest(page, "#nearest")
        assert page.locator("#test-banner").is_visible()
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


CLIPPED = """els => els.filter(e => e.scrollWidth > e.clientWidth + 1
                              || e.getBoundingClientRect().right > window.innerWidth)
                 .map(e => e.textContent)"""  # cut off inside its box, or past the screen


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
def test_a_phone_shows_the_nearest_people_s_whole_names(app_url, dev_bundle, locale):
    """At 390 px every name of the nearest people is whole, under its photo and beside its
    similarity bar, and so is every name on the Gallery tab."""
    with browser_page(app_url, locale=locale) as page:
        page.locator("#voice").get_by_role(
            "button", name=re.compile("Upload file|アップロード")).click(timeout=30_000)
        with page.expect_response(lambda r: "/gradio_api/upload" in r.url, timeout=30_000):
            page.locator("#voice input[type=file]").set_input_files(
                str(dev_bundle / "voices" / "dev01.flac"))
        page.locator("#submit").click()
        names = page.locator("#chart .name")
        names.nth(4).wait_for(timeout=60_000)
        captions = page.locator("#top .caption-label")
        captions.nth(4).wait_for(timeout=30_000)
        assert [t.split(". ", 1)[1] for t in names.all_inner_texts()] == [
            c.split(". ", 1)[1].rsplit(" (", 1)[0] for c in captions.all_inner_texts()]
        assert all("Test person" in t for t in names.all_inner_texts())
        assert names.evaluate_all(CLIPPED) == [] and captions.evaluate_all(CLIPPED) == []
        page.locator("#download").wait_for(timeout=60_000)  # the whole answer is in
        page.wait_for_function("() => document.querySelector('#generated img')?.complete")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"phone-matches-{locale}.png"), full_page=True)
        open_tab(page, "Gallery" if locale == "en-US" else "ギャラリー")
        people = page.locator("#people .caption-label")
        people.nth(DEV_PEOPLE - 1).wait_for(timeout=30_000)
        assert people.evaluate_all(CLIPPED) == []
        page.screenshot(path=str(SCREENSHOTS / f"phone-people-{locale}.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
def test_gallery_tab_says_how_the_threshold_was_set(app_url, dev_bundle, locale):
    from voiceface.enrolled import Enrolled

    record = Enrolled.load(dev_bundle / "gallery").calibrations.open_set
    assert record is not None  # the dev bundle is calibrated when it is written
    with browser_page(app_url, locale=locale) as page:
        open_tab(page, "Gallery" if locale == "en-US" else "ギャラリー")
        note = page.locator("#threshold-note")
        note.filter(has_text=f"{record.threshold:.4f}").wait_for(timeout=30_000)
        text = note.inner_text()
        assert f"{record.trials}" in text and f"{record.far_target:.1%}" in text
        assert ("measured on" if locale == "en-US" else "測定") in text
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"gallery-{locale}.png"), full_page=True)


def test_overlapping_model_calls_are_logged(caplog):
    """The load test and the queue test watch the log for this line: it must appear when two
    model calls do overlap, and not otherwise."""
    import logging

    from voiceface.ui.common import ModelCalls

    calls = ModelCalls()
    with caplog.at_level(logging.ERROR, logger="voiceface.app"):
        with calls():
            pass
        with calls():
            pass
        assert "overlap" not in caplog.text
        with calls():
            with calls():
                pass
    assert "2 model calls overlap" in caplog.text and calls.running == 0

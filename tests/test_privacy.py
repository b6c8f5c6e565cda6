"""Privacy and honesty through the app: recordings and renders are deleted within the file
lifetime (the example voices stay usable), logs hold no voice data, the API returns no server
paths but Gradio's own cache handles, and generated faces say they are generated."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from pathlib import Path

from PIL import Image

from conftest import REPO, serve_app
from voiceface.audio import SAMPLE_RATE
from voiceface.devbundle import synthetic_voice
from voiceface.provenance import is_marked
from voiceface.ui.common import PNG_NAME

pytestmark = pytest.mark.slow  # every test here starts the app server

SECRET = "alice-smith-voice-note"  # a file name that must not survive anywhere on the server
LIFETIME = 10  # s an upload or a render may stay (app.py --file-lifetime)


@pytest.fixture(scope="module")
def server(dev_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    cache, tmp = root / "gradio-cache", root / "tmp"
    cache.mkdir()
    tmp.mkdir()
    log = root / "app.log"
    with serve_app(dev_bundle, log, env={"GRADIO_TEMP_DIR": str(cache), "TMPDIR": str(tmp)},
                   args=("--file-lifetime", str(LIFETIME))) as (url, _):
        yield {"url": url, "cache": cache, "tmp": tmp, "log": log}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("queries")
    good, bad = d / f"{SECRET}.wav", d / f"{SECRET}-broken.wav"
    sf.write(good, synthetic_voice(3.0, seed=7, f0=170.0), SAMPLE_RATE)
    nan = synthetic_voice(3.0, seed=8)
    nan[100] = np.nan
    sf.write(bad, nan, SAMPLE_RATE, subtype="FLOAT")
    phone = d / f"{SECRET}.m4a"  # decoded through ffmpeg and a temporary file of ours
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(good), "-c:a", "aac",
                    str(phone)], check=True)
    return good, bad, phone


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A face photo sent to the Face to voice tab, under the name that must not survive."""
    path = tmp_path_factory.mktemp("photos") / f"{SECRET}.jpg"
    shutil.copy(REPO / "voiceface" / "data" / "astronaut.jpg", path)
    return path


def traces(server, recording) -> list[str]:
    """Files on the server that hold the recording's bytes or name."""
    data = recording.read_bytes()
    return [str(p) for d in (server["cache"], server["tmp"]) for p in d.rglob("*")
            if p.is_file() and (SECRET in p.name or p.read_bytes() == data)]


def raw_call(http: httpx.Client, server_path: str, api: str = "predict", *more) -> str:
    """The event stream of `api` called on an uploaded file (and `more` inputs)."""
    event = http.post(f"call/{api}", json={"data": [{"path": server_path, "meta": {
        "_type": "gradio.FileData"}}, *more]}).json()["event_id"]
    return http.get(f"call/{api}/{event}").text


def test_uploads_and_renders_are_deleted_within_the_lifetime_examples_stay(server, recordings,
                                                                           photo, dev_bundle):
    good, bad, phone = recordings
    examples = {p.read_bytes() for p in (dev_bundle / "voices").iterdir()}
    photos = {p.read_bytes() for p in (dev_bundle / "gallery" / "faces").iterdir()}  # public
    client = Client(server["url"], verbose=False)
    for recording in (good, phone):
        *_, summary = client.predict(handle_file(str(recording)), api_name="/predict")
        assert summary["matches"]
        *_, summary = client.predict(handle_file(str(recording)), "dev00", api_name="/verify")
        assert summary["claim"] == "dev00"
    with pytest.raises(AppError, match="NaN"):
        client.predict(handle_file(str(bad)), api_name="/predict")
    assert client.predict(handle_file(str(photo)), api_name="/face2voice")["matches"]
    client.submit(handle_file(str(photo)), api_name="/face2voice_ui").result(timeout=120)
    client.submit(handle_file(str(good)), api_name="/predict_ui").result(timeout=120)
    assert list(server["cache"].rglob(PNG_NAME))  # the page's PNG for download, to go too
    queries = (*recordings, photo)
    assert traces(server, good) and traces(server, photo)  # kept, not deleted by the request

    def left() -> list[Path]:  # files in the cache other than copies of public files
        return [p for p in server["cache"].rglob("*")
                if p.is_file() and p.read_bytes() not in examples | photos]

    deadline = time.monotonic() + 3 * LIFETIME  # a lifetime, a cleaning interval and slack
    while (left() or [t for q in queries for t in traces(server, q)]) and \
            time.monotonic() < deadline:
        time.sleep(1.0)
    assert left() == [] and [t for q in queries for t in traces(server, q)] == []
    copies = [p for p in server["cache"].rglob("*") if p.is_file() and p.read_bytes() in examples]
    assert len(copies) == len(examples)  # the examples' copies outlived the cleaning ...
    with httpx.Client(base_url=f"{server['url']}gradio_api/", timeout=120) as http:
        assert "event: complete" in raw_call(http, str(copies[0]))  # ... and still work


def enrolled_voice(dev_bundle) -> Path:
    """A dev person's own recording: confidently matched, so the nearest face is returned."""
    return sorted((dev_bundle / "voices").iterdir())[0]


def test_the_api_returns_no_server_paths_but_cache_handles(server, recordings, dev_bundle):
    for recording in (recordings[0], enrolled_voice(dev_bundle)):
        with httpx.Client(base_url=f"{server['url']}gradio_api/", timeout=120) as http:
            with open(recording, "rb") as f:
                [path] = http.post("upload", files={"files": (recording.name, f)}).json()
            stream = raw_call(http, path)
        data = json.loads(stream.split("event: complete\ndata: ", 1)[1].splitlines()[0])
        face, nearest, summary = data
        assert not re.search(r"/\w", json.dumps(summary)), summary  # it names no files
        assert (nearest is not None) == summary["confident"]
        for image in (face, nearest) if nearest else (face,):  # handles into Gradio's cache
            assert image["path"].startswith(str(server["cache"]))
            assert image["url"].endswith(image["path"]) and image["url"].startswith(server["url"])
        assert str(dev_bundle) not in stream and SECRET not in stream and path not in stream
    assert summary["confident"]  # the enrolled voice's answer carried a nearest face
    with httpx.Client(base_url=f"{server['url']}gradio_api/", timeout=120) as http:
        with open(recordings[0], "rb") as f:
            [path] = http.post("upload", files={"files": (recordings[0].name, f)}).json()
        stream = raw_call(http, path, "verify", "dev00")
    *_, summary = json.loads(stream.split("event: complete\ndata: ", 1)[1].splitlines()[0])
    assert summary["claim"] == "dev00" and not re.search(r"/\w", json.dumps(summary)), summary
    assert str(dev_bundle) not in stream and SECRET not in stream and path not in stream


def test_the_generated_face_says_it_is_ai_generated(server, dev_bundle):
    face, nearest, _ = Client(server["url"], verbose=False).predict(
        handle_file(str(enrolled_voice(dev_bundle))), api_name="/predict")
    assert is_marked(Image.open(face))  # PNG text chunks survive Gradio's re-encoding
    assert not is_marked(Image.open(nearest))  # the enrolled person's photo is a photo


def test_logs_hold_no_voice_data(server, recordings, photo):
    good, bad, _ = recordings
    client = Client(server["url"], verbose=False)
    client.predict(handle_file(str(good)), api_name="/predict")
    client.predict(handle_file(str(photo)), api_name="/face2voice")
    with pytest.raises(AppError):
        client.predict(handle_file(str(bad)), api_name="/predict")
    for claim in ("dev00", "nobody"):
        with pytest.raises(AppError):
            client.predict(handle_file(str(bad)), claim, api_name="/verify")
    log = server["log"].read_text()
    assert SECRET not in log and str(server["cache"]) not in log and "Traceback" not in log
    assert not re.search(r"array\(|tensor\(|(-?\d+\.\d+(e-?\d+)?,\s*){8}", log)

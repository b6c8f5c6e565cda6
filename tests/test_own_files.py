"""The app deletes only files it made: a file that someone else wrote into Gradio's upload
folder outlives the cache cleaning however many requests name it, while the uploads the app
received and its renders are still deleted within the file lifetime (over raw HTTP)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import PHOTO, serve_app
from test_visitors import (PASSWORD, backbone, call, client, file_ref,  # noqa: F401 - fixture
                           recording, upload)

pytestmark = pytest.mark.slow  # the app server, over HTTP

LIFETIME = 2  # s (app.py --file-lifetime): the cache is cleaned every second
WAIT = 30 * LIFETIME  # s for the app's own files to go; a safety net on a busy machine


@pytest.fixture(scope="module")
def server(dev_bundle, backbone, tmp_path_factory):  # noqa: F811
    """The app with an admin password (so /enroll names files too) and a short lifetime."""
    root = tmp_path_factory.mktemp("own-files")
    cache = root / "gradio-cache"
    env = {"GRADIO_TEMP_DIR": str(cache), "VOICEFACE_ADMIN_PASSWORD": PASSWORD}
    args = ("--gallery-dir", str(root / "live"), "--backbone", str(backbone),
            "--file-lifetime", str(LIFETIME))
    with serve_app(dev_bundle, root / "app.log", env, args) as (url, _):
        yield {"url": url, "cache": cache}


def test_a_file_the_app_did_not_make_survives_being_named(server, tmp_path):
    planted_dir = server["cache"] / "planted"  # as if written by another program
    planted_dir.mkdir(parents=True)
    voice = recording(planted_dir / "voice.wav", seed=6)
    photo = Path(shutil.copy(PHOTO, planted_dir / "face.jpg"))
    note = server["cache"] / "note.txt"
    note.write_text("not the app's")
    planted = [voice, photo, note]
    with client(server["url"], "127.0.0.40") as http:
        answers = [call(http, api, [file_ref(voice)]) for api in ("predict", "predict_ui")]
        answers += [call(http, "verify", [file_ref(voice), "dev00"]),
                    call(http, "predict", [file_ref(note)])]
        answers += [call(http, api, [file_ref(photo)]) for api in ("face2voice", "face2voice_ui")]
        answers.append(call(http, "enroll", [PASSWORD, file_ref(voice), file_ref(photo),
                                             "Mallory", False]))  # read, then refused
        uploaded = Path(upload(http, recording(tmp_path / "upload.wav", seed=7)))
        kind, (render, *_) = call(http, "predict", [file_ref(uploaded)])
    assert [kind for kind, _ in answers] == ["complete"] * 3 + ["error"] + ["complete"] * 2 \
        + ["error"], [m if k == "error" else k for k, m in answers]
    assert "Consent is required" in answers[-1][1]  # the files were read before the refusal
    made = [uploaded, Path(render["path"])]
    assert kind == "complete" and all(p.is_file() for p in made)
    deadline = time.monotonic() + WAIT
    while any(p.exists() for p in made) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(p.exists() for p in made)  # the app's own upload and render went ...
    time.sleep(2 * LIFETIME)  # (and the cleanings after it)
    assert all(p.is_file() for p in planted)  # ... the files it never made are all there

"""Photos as an attacker sends them (issue 28), over raw HTTP: files that would run an external
program (EPS and PostScript start Ghostscript in Pillow) or reach a decoder README never
promised (TIFF, BMP) are refused from their first bytes, and image bombs give their memory
back (the server's resident memory returns within 10 % of its start).

The server runs with a fake `gs` first on its PATH that leaves a mark when run: Ghostscript is
not installed here, and the mark proves nothing would have reached it. The server's child
processes are watched through /proc as well.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Self

import pytest
from conftest import DEV_PEOPLE, PHOTO, serve_app
from PIL import Image
from test_faces import EPS, POSTSCRIPT
from test_visitors import PASSWORD, backbone, call, client, file_ref, recording, upload  # noqa: F401

from benchmarks.memory import image_bomb, run_memory
from voiceface.enrolled import Enrolled

pytestmark = pytest.mark.slow  # the app server, over HTTP

BOMBS = 4  # image bombs in the memory test
MAX_END_RATIO = 1.10  # the server's resident memory after the bombs / before (issue 28's goal)
CHILD_POLL = 0.005  # s between looks at the server's child processes
NOT_IMAGE = "is not an image that can be read; use a JPEG, PNG or WebP photo."
NOT_IMAGE_JA = "読み込める画像ではありません。JPEG、PNG、WebP のいずれかの写真を使ってください。"


def attack_files(directory: Path) -> list[Path]:
    """The crafted EPS (a 1.2-billion-step loop) and PostScript (a loop without end) of the
    report, and a real face saved as TIFF and as BMP."""
    files = [directory / "face.eps", directory / "face.ps"]
    files[0].write_bytes(EPS)
    files[1].write_bytes(POSTSCRIPT)
    face = Image.open(PHOTO)
    for kind, suffix in (("TIFF", "tif"), ("BMP", "bmp")):
        files.append(directory / f"face.{suffix}")
        face.save(files[-1], kind)
    return files


class ChildWatch:
    """Every process the server `pid` starts while the watch runs, as {pid: command}: its
    threads' children, read from /proc every `CHILD_POLL` s."""

    def __init__(self, pid: int):
        self.pid, self.seen = pid, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(CHILD_POLL):
            for children in Path(f"/proc/{self.pid}/task").glob("*/children"):
                for child in children.read_text().split():
                    try:
                        command = Path(f"/proc/{child}/cmdline").read_bytes()
                    except OSError:  # gone already: still a child that was started
                        command = b"?"
                    self.seen[int(child)] = command.replace(b"\0", b" ").decode()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def server(dev_bundle, backbone, tmp_path_factory):  # noqa: F811
    """The app with an admin password and a live gallery, a fake `gs` first on its PATH."""
    root = tmp_path_factory.mktemp("attack-photos")
    bin_dir, mark = root / "bin", root / "gs-was-run"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f'#!/bin/sh\necho "$@" >> {mark}\nexit 1\n')
    (bin_dir / "gs").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "GRADIO_TEMP_DIR": str(root / "gradio-cache"), "VOICEFACE_ADMIN_PASSWORD": PASSWORD}
    args = ("--gallery-dir", str(root / "live"), "--backbone", str(backbone),
            "--inversion-steps", "3", "--inversion-resolution", "32")
    with serve_app(dev_bundle, root / "app.log", env, args) as (url, proc):
        yield {"url": url, "pid": proc.pid, "root": root, "gs_mark": mark}


def test_photos_that_would_run_a_program_or_an_unpromised_decoder_are_refused(server, tmp_path):
    voice = recording(tmp_path / "voice.wav", seed=7, seconds=6.0)  # read in process (no ffmpeg)
    answers = []
    with client(server["url"], "127.0.0.50") as http, ChildWatch(server["pid"]) as children:
        for photo in attack_files(tmp_path):
            ref = file_ref(upload(http, photo))
            for api in ("face2voice", "face2voice_ui"):
                answers.append((photo.name, call(http, api, [ref])))
            answers.append((photo.name, call(http, "enroll", [
                PASSWORD, file_ref(upload(http, voice)), ref, "Mallory", True])))
        http.headers["Accept-Language"] = "ja"
        answers_ja = [call(http, "face2voice", [file_ref(upload(http, photo))])
                      for photo in attack_files(tmp_path)]
    assert not server["gs_mark"].exists(), server["gs_mark"].read_text()
    assert children.seen == {}
    for name, (kind, message) in answers:
        assert kind == "error" and NOT_IMAGE in str(message), (name, kind, message)
    assert answers_ja == [("error", NOT_IMAGE_JA)] * 4
    saved = Enrolled.load(server["root"] / "live" / "gallery").gallery
    assert len(saved) == DEV_PEOPLE  # none added


def test_a_real_photo_still_answers(server, tmp_path):
    """The same server answers a JPEG, a PNG and a WebP of a face (the refusals above are not
    a broken photo path)."""
    face = Image.open(PHOTO)
    with client(server["url"], "127.0.0.51") as http:
        for kind in ("JPEG", "PNG", "WEBP"):
            buffer = io.BytesIO()
            face.save(buffer, kind)
            kind_, outputs = call(http, "face2voice", [file_ref(upload(
                http, tmp_path / f"face.{kind.lower()}", buffer.getvalue()))])
            assert kind_ == "complete" and outputs[0]["matches"], (kind, outputs)


def test_image_bombs_give_their_memory_back(server, tmp_path):
    """Issue 28: each 40-megapixel RGBA PNG once left ~700 MB resident for good. A few of them
    among normal traffic (`benchmarks.memory`, 50 of them, is the full measure) leave the
    server's resident memory within 10 % of where it started."""
    clip = recording(tmp_path / "clip.wav", seed=8)
    report = run_memory(server["url"], server["pid"], image_bomb(tmp_path / "bomb.png"),
                        "image", clip, bombs=BOMBS)
    assert report.answers == {"complete": BOMBS}, report.summary()
    assert report.end <= MAX_END_RATIO * report.start, report.summary()

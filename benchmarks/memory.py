"""Memory: does the server give back what image bombs and large recordings take?

Starts app.py on 127.0.0.1 (a dev bundle of tiny models unless `--bundle`), warms it up with
normal traffic, then one client sends `--bombs` bombs to Face to voice (`--kind image`: a
602 KB RGBA PNG of 6324 x 6324 px, 40 megapixels, the largest photo accepted, a face pasted
on a transparent canvas; `--kind audio`: a 2.9 MB FLAC of 74 s at 384 kHz with 8 channels,
the largest recording `/predict` accepts) while another client sends normal traffic (a 3 s
recording to `/predict`, a face photo to `/face2voice`, alternately). Prints the server's
resident memory (VmRSS) at the start, its peak (sampled) and at the end (after the traffic
stops), and end / start. Issue 28's goal: the end within 10 % of the start.
Usage (repository root): python -m benchmarks.memory [--kind image|audio] [--bombs 50]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from PIL import Image

from voiceface.audio import SAMPLE_RATE
from voiceface.devbundle import DEV_PHOTO, synthetic_voice, write_dev_bundle

from .load import rss_mb
from .serve import REPO, running_app

BOMBS = 50
WARM_UP = 4  # rounds of normal traffic before the start is measured
BOMB_SIDE = 6324  # px; 6324^2 = 39.99 million pixels, under faces.MAX_IMAGE_PIXELS
BOMB_FACE_SIDE = 3600  # px of the face pasted in the bomb's middle
AUDIO_BOMB_RATE = 384_000  # Hz
AUDIO_BOMB_CHANNELS = 8
AUDIO_BOMB_SECONDS = 74  # s; 74 x 4 = 296 s of decoding work at 16 kHz, under the 480 s refusal
CLIP_SECONDS = 3.0  # s of speech per normal request
RSS_SAMPLE_SECONDS = 0.1  # s between memory samples
SETTLE_SECONDS = 2.0  # s waited after the last request before the end is measured
TIMEOUT = 300  # s for one request
PHOTO = REPO / "voiceface" / "data" / DEV_PHOTO


@dataclass
class MemoryReport:
    """Resident memory of the server (MB) around `bombs` bombs of `kind`, and the answers."""

    kind: str
    bombs: int
    start: float
    peak: float
    end: float
    answers: dict[str, int]

    def summary(self) -> str:
        answers = ", ".join(f"{n} {kind}" for kind, n in sorted(self.answers.items()))
        return (f"{self.bombs} {self.kind} bombs among normal traffic: RSS start "
                f"{self.start:.0f} MB, peak {self.peak:.0f} MB, end {self.end:.0f} MB, "
                f"end/start {self.end / self.start:.3f} (answers: {answers})")


def image_bomb(path: Path) -> Path:
    """An RGBA PNG of BOMB_SIDE^2 px, transparent but for a face in the middle."""
    canvas = Image.new("RGBA", (BOMB_SIDE, BOMB_SIDE), (0, 0, 0, 0))
    face = Image.open(PHOTO).convert("RGBA").resize((BOMB_FACE_SIDE, BOMB_FACE_SIDE))
    canvas.paste(face, ((BOMB_SIDE - BOMB_FACE_SIDE) // 2,) * 2)
    canvas.save(path, "PNG", optimize=True)
    return path


def audio_bomb(path: Path) -> Path:
    """AUDIO_BOMB_SECONDS of 8-channel 384 kHz FLAC: a 220 Hz tone, one second in ten."""
    second = np.arange(AUDIO_BOMB_RATE) / AUDIO_BOMB_RATE
    tone = np.repeat(0.5 * np.sin(2 * np.pi * 220 * second)[:, None], AUDIO_BOMB_CHANNELS, 1)
    silence = np.zeros_like(tone)
    with sf.SoundFile(path, "w", AUDIO_BOMB_RATE, AUDIO_BOMB_CHANNELS, subtype="PCM_16",
                      format="FLAC") as f:
        for s in range(AUDIO_BOMB_SECONDS):
            f.write(tone if s % 10 == 0 else silence)
    return path


def send(http: httpx.Client, api: str, path: Path) -> str:
    """Upload `path`, send it to event `api` and read the answer: "complete" or "error"."""
    [server_path] = http.post("upload", files={"files": (path.name, path.read_bytes())}).json()
    posted = http.post(f"call/{api}", json={"data": [
        {"path": server_path, "meta": {"_type": "gradio.FileData"}}]})
    posted.raise_for_status()
    stream = http.get(f"call/{api}/{posted.json()['event_id']}").text
    return re.findall(r"^event: (\w+)$", stream, re.MULTILINE)[-1]


def run_memory(url: str, pid: int, bomb: Path, kind: str, clip: Path, bombs: int = BOMBS
               ) -> MemoryReport:
    """`bombs` times `bomb` to Face to voice (an image) or `/predict` (a recording) from one
    client while another sends normal traffic; the server `pid`'s memory around it."""
    api = "face2voice" if kind == "image" else "predict"
    normal = [("predict", clip), ("face2voice", PHOTO)]
    answers: dict[str, int] = {}
    done = threading.Event()

    def client() -> httpx.Client:
        return httpx.Client(base_url=f"{url}gradio_api/", timeout=TIMEOUT)

    with client() as http:
        for _ in range(WARM_UP):
            for normal_api, path in normal:
                send(http, normal_api, path)
    time.sleep(SETTLE_SECONDS)
    start = rss_mb(pid)
    peak = [start]

    def traffic() -> None:
        with client() as http:
            i = 0
            while not done.is_set():
                send(http, *normal[i % len(normal)])
                i += 1

    def sample() -> None:
        while not done.wait(RSS_SAMPLE_SECONDS):
            peak[0] = max(peak[0], rss_mb(pid))

    threads = [threading.Thread(target=traffic), threading.Thread(target=sample)]
    for t in threads:
        t.start()
    try:
        with client() as http:
            for _ in range(bombs):
                answer = send(http, api, bomb)
                answers[answer] = answers.get(answer, 0) + 1
    finally:
        done.set()
        for t in threads:
            t.join()
    time.sleep(SETTLE_SECONDS)
    return MemoryReport(kind, bombs, start, max(peak[0], rss_mb(pid)), rss_mb(pid), answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("image", "audio"), default="image")
    parser.add_argument("--bombs", type=int, default=BOMBS)
    parser.add_argument("--bundle", type=Path, help="default: a fresh dev bundle (tiny models)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voiceface-memory-") as tmp:
        tmp = Path(tmp)
        bundle = args.bundle or write_dev_bundle(tmp / "dev", progress=False)
        clip = tmp / "clip.wav"
        sf.write(clip, synthetic_voice(CLIP_SECONDS, seed=3, f0=140.0), SAMPLE_RATE)
        bomb = (image_bomb(tmp / "bomb.png") if args.kind == "image"
                else audio_bomb(tmp / "bomb.flac"))
        with running_app(bundle, tmp / "app.log") as (url, proc):
            report = run_memory(url, proc.pid, bomb, args.kind, clip, args.bombs)
    print(json.dumps(report.__dict__) if args.json else report.summary())


if __name__ == "__main__":
    main()

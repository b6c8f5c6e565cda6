"""Flood: one attacker keeps the model queue full of heavy, accepted files; how long does
another visitor's `/predict` take meanwhile?

Starts app.py on 127.0.0.1 (a dev bundle of tiny models unless `--bundle`). The attacker
(address 127.0.0.2) uploads one 74 s, 384 kHz, 8-channel FLAC (under every audio limit, so
decoded: the heaviest query a visitor can send) and, for `--seconds`, sends it to `/predict`
again and again from `--attackers` threads, each request a new session, never waiting for
answers; the victim (127.0.0.3) sends a 3 s recording to `/predict` one request after
another. Prints the victim's latency (median, max) alone and during the flood, and how many
of the attacker's requests were accepted and refused.
Usage (repository root): python -m benchmarks.flood [--seconds 40] [--attackers 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from voiceface.devbundle import write_dev_bundle

from .load import write_clips
from .serve import running_app

HEAVY_RATE = 384_000  # Hz of the attacker's FLAC
HEAVY_CHANNELS = 8
HEAVY_SECONDS = 74  # s: under the 230 million samples a recording may hold, so decoded
WRITE_BLOCK_SECONDS = 10  # s of silence written at once
SECONDS = 40.0  # s of flooding
ATTACKERS = 4  # attacker threads
VICTIM_ALONE = 5  # victim requests timed before the flood
TIMEOUT = 300.0  # s for one request
ATTACKER, VICTIM = "127.0.0.2", "127.0.0.3"  # loopback addresses of the two visitors


def write_heavy_flac(path: Path, seconds: int = HEAVY_SECONDS) -> Path:
    """`seconds` of 8-channel 384 kHz FLAC: one second of a 220 Hz tone, then silence
    (small to send: 74 s are 2.9 MB)."""
    with sf.SoundFile(path, "w", HEAVY_RATE, HEAVY_CHANNELS, subtype="PCM_16",
                      format="FLAC") as f:
        t = np.arange(HEAVY_RATE) / HEAVY_RATE
        f.write(np.repeat(0.5 * np.sin(2 * np.pi * 220 * t)[:, None], HEAVY_CHANNELS, axis=1))
        zeros = np.zeros((WRITE_BLOCK_SECONDS * HEAVY_RATE, HEAVY_CHANNELS), np.float32)
        for start in range(1, seconds, WRITE_BLOCK_SECONDS):
            f.write(zeros[:(min(seconds, start + WRITE_BLOCK_SECONDS) - start) * HEAVY_RATE])
    return path


def client(url: str, address: str) -> httpx.Client:
    """A raw HTTP client for the app's API routes, connecting from `address`."""
    return httpx.Client(base_url=f"{url}gradio_api/", timeout=TIMEOUT,
                        transport=httpx.HTTPTransport(local_address=address))


def uploaded(http: httpx.Client, path: Path) -> dict:
    """Upload `path`; the file reference a request names it by."""
    [server_path] = http.post("upload", files={"files": (path.name, path.read_bytes())}).json()
    return {"path": server_path, "meta": {"_type": "gradio.FileData"}}


def predict(http: httpx.Client, ref: dict) -> str:
    """One `/predict` to its end: the last event's kind ("complete", "error")."""
    posted = http.post("call/predict", json={"data": [ref]})
    posted.raise_for_status()
    stream = http.get(f"call/predict/{posted.json()['event_id']}").text
    return [line[7:] for line in stream.splitlines() if line.startswith("event: ")][-1]


@dataclass
class FloodReport:
    """Latencies in seconds."""

    alone: list[float] = field(default_factory=list)
    flooded: list[float] = field(default_factory=list)
    accepted: int = 0  # attacker requests the queue took
    refused: int = 0  # ... and refused (429: one visitor's limit; 503: the queue is full)
    failures: list[str] = field(default_factory=list)  # victim answers that were not answers

    def summary(self) -> str:
        def stats(xs: list[float]) -> str:
            return (f"median {statistics.median(xs):.2f} s, max {max(xs):.2f} s ({len(xs)})"
                    if xs else "none")
        return (f"victim /predict alone: {stats(self.alone)}; during the flood: "
                f"{stats(self.flooded)}; attacker requests accepted {self.accepted}, refused "
                f"{self.refused}; victim failures {len(self.failures)}")


def run_flood(url: str, heavy: Path, clip: Path, seconds: float = SECONDS,
              attackers: int = ATTACKERS) -> FloodReport:
    """The flood of the module doc against the app at `url`."""
    report, lock = FloodReport(), threading.Lock()
    with client(url, VICTIM) as victim, client(url, ATTACKER) as attacker:
        mine, theirs = uploaded(victim, clip), uploaded(attacker, heavy)
        predict(victim, mine)  # warm-up, not counted
        for _ in range(VICTIM_ALONE):
            start = time.monotonic()
            predict(victim, mine)
            report.alone.append(time.monotonic() - start)
        deadline = time.monotonic() + seconds

        def flood() -> None:
            with client(url, ATTACKER) as http:
                while time.monotonic() < deadline:
                    accepted = http.post("call/predict", json={"data": [theirs]}).is_success
                    with lock:
                        report.accepted += accepted
                        report.refused += not accepted

        threads = [threading.Thread(target=flood) for _ in range(attackers)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # let the flood fill the queue first
        while time.monotonic() < deadline:
            start = time.monotonic()
            kind = predict(victim, mine)
            if kind == "complete":
                report.flooded.append(time.monotonic() - start)
            else:
                report.failures.append(kind)
        for t in threads:
            t.join()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--attackers", type=int, default=ATTACKERS)
    parser.add_argument("--bundle", type=Path, help="default: a fresh dev bundle (tiny models)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voiceface-flood-") as tmp:
        bundle = args.bundle or write_dev_bundle(Path(tmp) / "dev", progress=False)
        heavy = write_heavy_flac(Path(tmp) / "heavy.flac")
        [clip] = write_clips(Path(tmp), 1)
        with running_app(bundle, Path(tmp) / "app.log") as (url, _):
            report = run_flood(url, heavy, clip, args.seconds, args.attackers)
        print(report.summary())
        print(json.dumps({"alone": report.alone, "flooded": report.flooded}))


if __name__ == "__main__":
    main()

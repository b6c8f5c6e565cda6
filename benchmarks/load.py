"""Load: concurrent gradio_client clients sending real requests for a fixed time.

Starts app.py on 127.0.0.1 (a dev bundle of tiny models unless `--bundle`), warms it up, then
`--clients` threads each send their own 3 s recording again and again for `--seconds`, half
of them to the API endpoint `/predict` and half to the page's own event `/predict_ui`. Prints
the throughput, p50/p95 latency, failures, the server's resident memory (VmRSS) before, at its
peak and after, and how often the server logged overlapping model calls (every event that
runs a model shares one queue of one, so this must stay 0). New requests stop at the
deadline; the ones in flight finish.
Usage (repository root): python -m benchmarks.load [--clients 16] [--seconds 30] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from voiceface.audio import SAMPLE_RATE
from voiceface.devbundle import synthetic_voice, write_dev_bundle

from .serve import running_app

CLIENTS = 16
SECONDS = 30.0  # s of sending; requests in flight at the deadline still finish
CLIP_SECONDS = 3.0  # s of speech per request
RSS_SAMPLE_SECONDS = 0.5  # s between memory samples
BACK_PRESSURE = "queue is full"  # Gradio's refusal when its queue has max_size requests
ENDPOINTS = ("/predict", "/predict_ui")  # client i sends to ENDPOINTS[i % 2]
OVERLAP = "model calls overlap"  # what app.py logs if two model calls ever run at once


@dataclass
class LoadReport:
    """What a load run measured. Latencies in seconds, memory in MB."""

    clients: int
    seconds: float  # from the first request to the last answer
    latencies: list[float] = field(default_factory=list)
    per_client: list[int] = field(default_factory=list)  # answered requests per client
    refused: int = 0  # Gradio's own back-pressure answers
    failures: list[str] = field(default_factory=list)
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    overlaps: int = 0  # overlapping model calls the server logged

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def summary(self) -> str:
        p50, p95 = np.percentile(self.latencies, [50, 95]) if self.latencies else (0.0, 0.0)
        return (f"{self.clients} clients, {self.seconds:.1f} s: {len(self.latencies)} answers "
                f"({self.throughput:.2f}/s), latency p50 {p50:.2f} s, p95 {p95:.2f} s, "
                f"{self.refused} refused by the queue, {len(self.failures)} failed; server RSS "
                f"{self.rss_before:.0f} MB before, {self.rss_peak:.0f} MB peak, "
                f"{self.rss_after:.0f} MB after; {self.overlaps} overlapping model calls")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of process `pid` in MB: now (VmRSS) or its peak (VmHWM), from
    /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def run_load(url: str, clips: list[Path], pid: int, log: Path,
             seconds: float = SECONDS) -> LoadReport:
    """One client per clip sends it to `/predict` or `/predict_ui` (alternating) again and
    again for `seconds`; measures the server process `pid`, after one warm-up request (not
    counted), and counts the overlapping model calls its `log` reports."""
    from gradio_client import Client, handle_file

    Client(url, verbose=False).predict(handle_file(str(clips[0])), api_name="/predict")
    clients = len(clips)
    report = LoadReport(clients, 0.0, per_client=[0] * clients, rss_before=rss_mb(pid))
    report.rss_peak = report.rss_before
    connections = [Client(url, verbose=False) for _ in range(clients)]
    lock, done = threading.Lock(), threading.Event()

    def client(i: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                connections[i].predict(handle_file(str(clips[i])),
                                       api_name=ENDPOINTS[i % len(ENDPOINTS)])
            except Exception as err:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    if BACK_PRESSURE in str(err).lower():
                        report.refused += 1
                    else:
                        report.failures.append(f"{type(err).__name__}: {err}")
                continue
            with lock:
                report.latencies.append(time.monotonic() - start)
                report.per_client[i] += 1

    def sample_memory() -> None:
        while not done.wait(RSS_SAMPLE_SECONDS):
            report.rss_peak = max(report.rss_peak, rss_mb(pid))

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i, start + seconds)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.monotonic() - start
    done.set()
    sampler.join()
    report.rss_after = rss_mb(pid)
    report.overlaps = log.read_text(errors="replace").count(OVERLAP)
    return report


def write_clips(directory: Path, n: int) -> list[Path]:
    """`n` different 3 s synthetic recordings (none of them a bundle example)."""
    paths = [Path(directory) / f"load-{i:02d}.wav" for i in range(n)]
    for i, path in enumerate(paths):
        sf.write(path, synthetic_voice(CLIP_SECONDS, seed=100 + i, f0=110.0 + 8 * i),
                 SAMPLE_RATE)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--bundle", type=Path, help="default: a fresh dev bundle (tiny models)")
    parser.add_argument("--port", type=int, default=7871)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voiceface-load-") as tmp:
        bundle = args.bundle or write_dev_bundle(Path(tmp) / "dev", progress=False)
        clips = write_clips(Path(tmp), args.clients)
        log = Path(tmp) / "app.log"
        # every client comes from 127.0.0.1: the app is told they are that many visitors
        with running_app(bundle, log, args=("--visitors-per-address", str(args.clients)),
                         port=args.port) as (url, proc):
            print(run_load(url, clips, proc.pid, log, args.seconds).summary())

if __name__ == "__main__":
    main()

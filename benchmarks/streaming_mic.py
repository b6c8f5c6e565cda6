"""Does Gradio's streaming microphone deliver the whole recording? (Why the app does not use it.)

Embedding the voice while the person speaks needs the audio on the server as it is spoken:
Gradio's `gr.Audio(streaming=True)` sends chunks every `stream_every` seconds. This plays a
chirp (frequency rising linearly with time, so each 0.1 s block says when it was played) as
Chromium's fake microphone into a streaming and a plain recorder, and prints how much of
what was recorded reached the server: the seconds received, the gaps inside (a jump in the
chirp's time between adjacent blocks) and the plain recorder's upload for comparison.

Usage (repository root): python -m benchmarks.streaming_mic [--seconds 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .serve import CHROMIUM, chromium_args

RATE = 48_000
CHIRP_SECONDS = 30.0  # longer than any recording, so the chirp never loops
F0, F1 = 200.0, 7000.0  # Hz at the start and the end (under 8 kHz: any recorder rate)
BLOCK = 0.1  # s per block whose frequency is read
GAP = BLOCK + 0.05  # s: adjacent blocks this far apart in the chirp's time have a gap


def chirp(path: Path) -> None:
    t = np.arange(int(CHIRP_SECONDS * RATE)) / RATE
    freq = F0 + (F1 - F0) * t / CHIRP_SECONDS
    sf.write(path, (0.3 * np.sin(2 * np.pi * np.cumsum(freq) / RATE) * 32767).astype(np.int16),
             RATE)


def played_at(wav: np.ndarray, rate: int) -> np.ndarray:
    """The chirp time (s) of each BLOCK of `wav`, from its dominant frequency."""
    n = int(BLOCK * rate)
    times = []
    for start in range(0, len(wav) - n + 1, n):
        spectrum = np.log(np.abs(np.fft.rfft(wav[start:start + n] * np.hanning(n))) + 1e-12)
        k = int(np.clip(np.argmax(spectrum), 1, len(spectrum) - 2))
        a, b, c = spectrum[k - 1:k + 2]  # the peak between bins: a parabola through three
        freq = (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / n
        times.append((freq - F0) / (F1 - F0) * CHIRP_SECONDS)
    return np.asarray(times)


def describe(wav: np.ndarray, rate: int) -> str:
    times = played_at(wav, rate)
    jumps = np.diff(times)
    gaps = jumps[jumps > GAP] - BLOCK
    return (f"{len(wav) / rate:.2f} s received, {len(gaps)} gap(s) inside"
            + (f" ({', '.join(f'{g:.2f}' for g in gaps)} s)" if len(gaps) else ""))


def main() -> None:
    import gradio as gr
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="recording length")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    streamed: list[np.ndarray] = []
    uploaded: list[np.ndarray] = []

    def chunk(path: str | None) -> None:
        if path:
            streamed.append(sf.read(path, dtype="float32")[0])

    def recorded(path: str | None) -> None:
        if path:
            uploaded.append(sf.read(path, dtype="float32")[0])

    with gr.Blocks() as demo:
        live = gr.Audio(sources=["microphone"], type="filepath", streaming=True, elem_id="live")
        plain = gr.Audio(sources=["microphone"], type="filepath", elem_id="plain")
        live.stream(chunk, inputs=[live], outputs=None, stream_every=0.5, time_limit=60)
        plain.stop_recording(recorded, inputs=[plain], outputs=None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True)
    url = f"http://127.0.0.1:{port}/"
    print(f"gradio {gr.__version__}; {args.seconds:g} s recordings, stream_every 0.5 s")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        mic = Path(tmp) / "chirp.wav"
        chirp(mic)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=chromium_args(mic))
        context = browser.new_context()
        context.grant_permissions(["microphone"], origin=url.rstrip("/"))
        page = context.new_page()
        for _ in range(args.repeats):
            for name, received in (("streaming", streamed), ("plain", uploaded)):
                received.clear()
                page.goto(url)
                recorder = page.locator(f"#{name}" if name == "plain" else "#live")
                recorder.get_by_role("button", name="Record").first.click(timeout=30_000)
                start = time.perf_counter()
                page.wait_for_timeout(args.seconds * 1000)
                recorder.get_by_role("button", name="Stop").first.click()
                held = time.perf_counter() - start
                page.wait_for_timeout(3000)  # whatever is still coming
                wav = np.concatenate(received) if received else np.zeros(0, np.float32)
                print(f"  {name:>9}: recorded {held:.2f} s, {describe(wav, RATE)}")
        browser.close()
    demo.close()


if __name__ == "__main__":
    main()

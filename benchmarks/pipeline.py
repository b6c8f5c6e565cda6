"""End-to-end timings of one `predict`: per stage, in process and through the app.

Builds a bundle of random-weight models (full size by default: wav2vec2-base x-vector and a
1024 px config-f StyleGAN2; `--tiny` for the dev bundle's models), then times
- in process: per stage to the 256 px preview and to the full face of one `VoiceFace.stream`
  call (`voiceface.bench.time_calls`; `python -m voiceface bench` adds p95, cold start, RSS);
- with `--app`: app.py on 127.0.0.1, the page's request over HTTP (`through_app`): upload ->
  nearest people -> 128 px preview -> full face, with where the time goes.
Medians over `--repeats` runs after one warm-up.
- with `--browser`: the page in Chromium, its fake microphone playing the 5 s clip: stop ->
  nearest person -> first face -> full face, timed in the page.
The voice encoder's precision is settled as the app settles it at start (`--precision`,
default auto: checked on the bundle's voices), in process and in the app.
Usage (repository root): python -m benchmarks.pipeline [--app] [--browser] [--tiny]
                         [--precision auto|fp32|bf16|int8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from voiceface.bench import preview_size, time_calls, write_inputs
from voiceface.pipeline import VoiceFace
from voiceface.precision import CHOICES, PRECISION_VAR, settle
from voiceface.stylegan2_ops import reuse_freed_memory

from .serve import CHROMIUM, chromium_args, running_app


def in_process(bundle: Path, repeats: int, clips: dict[float, Path], precision: str) -> int:
    """Print the in-process timings, with the voice encoder's `precision` settled as the app
    settles it (`voiceface.precision.settle`); return the generator's resolution."""
    start = time.perf_counter()
    vf = VoiceFace.from_pretrained(bundle)
    print(f"load bundle: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    print(f"{settle(vf, precision).describe()} ({time.perf_counter() - start:.1f} s)")
    full = vf.generator.resolution
    preview = preview_size(full)
    for seconds, clip in clips.items():
        stats = time_calls(vf, clip, (preview, full), repeats)
        med = {px: s["median"] for px, s in zip((preview, full), stats)}
        stages = "  ".join(f"{k} {v:.3f}" for k, v in med[preview].items() if k != "total")
        print(f"{seconds:>4.0f} s audio: {stages}  | to preview {med[preview]['total']:.3f} s, "
              f"to full {med[full]['total']:.3f} s")
    return full


STEPS = ("matches", "preview", "full face")  # the page's updates, in order (the PNG after);
# a generator no larger than the preview sends one face: both rows then show it


def through_app(bundle: Path, repeats: int, clip: Path, precision: str = "auto") -> None:
    """Time the page's request over raw HTTP as a browser makes it: upload the recording, post
    `/predict_ui`, read its event stream, download each update's images. Per update: when it
    arrives (from the start of the upload), how much of that the server computed (the
    summary's timings), what the rest was (upload; queue, encoding, protocol), and the
    download of its images; "visible" = arrival + download."""
    import httpx

    start = time.perf_counter()
    with running_app(bundle, env={PRECISION_VAR: precision}) as (url, _):
        print(f"app start to ready: {time.perf_counter() - start:.1f} s")
        rows: dict[str, list[float]] = {}
        with httpx.Client(base_url=f"{url}gradio_api/", timeout=120) as http:
            for i in range(repeats + 1):
                timed = one_request(http, clip)
                if i:  # the first request warms up
                    for key, value in timed.items():
                        rows.setdefault(key, []).append(value)
    med = {key: float(np.median(values)) for key, values in rows.items()}
    print(f"app, 5 s audio, medians of {repeats} (s from the start of the upload):")
    print(f"  upload {med['upload']:.3f}, of which the server decoded "
          f"{med['decode']:.3f} later; PNG for download ready at {med['png']:.3f}")
    print(f"  {'update':<10} {'arrives':>8} {'computed':>9} {'other':>7} {'download':>9} "
          f"{'visible':>8}")
    for step in STEPS:
        arrive, compute, load = (med[f"{step} {k}"] for k in ("arrives", "compute", "download"))
        print(f"  {step:<10} {arrive:8.3f} {compute:9.3f} {arrive - compute - med['upload']:7.3f}"
              f" {load:9.3f} {arrive + load:8.3f}")
    print(f"  stop -> nearest person and a first face visible: {med['matches visible']:.3f} s "
          f"(first generated face {med['preview visible']:.3f} s); -> full face "
          f"{med['full face visible']:.3f} s")


def one_request(http, clip: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    with open(clip, "rb") as f:
        [server_path] = http.post("upload", files={"files": (clip.name, f)}).json()
    out = {"upload": time.perf_counter() - t0}
    ref = {"path": server_path, "meta": {"_type": "gradio.FileData"}}
    event_id = http.post("call/predict_ui", json={"data": [ref]}).json()["event_id"]
    faces = []  # (arrives, compute, download) of each face, the preview first
    with http.stream("GET", f"call/predict_ui/{event_id}") as events:
        kind = None
        for line in events.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") and kind == "error":
                raise RuntimeError(f"the app refused the request: {line}")
            elif line.startswith("data: ") and kind == "generating":
                arrived = time.perf_counter() - t0
                data = json.loads(line[len("data: "):])
                if "timings" not in data[6]:  # the last update: only the PNG to download
                    out["png"] = arrived
                    continue
                out["decode"] = data[6]["timings"]["load_audio"]
                image = data[2] if data[0] is None else data[0]  # nearest photo, or face
                fetch = time.perf_counter()
                if image:
                    http.get(image["url"]).raise_for_status()
                timed = (arrived, data[6]["timings"]["total"], time.perf_counter() - fetch)
                if data[0] is None:
                    out.update(zip(("matches arrives", "matches compute", "matches download"),
                                   timed))
                else:
                    faces.append(timed)
    for step, timed in (("preview", faces[0]), ("full face", faces[-1])):
        out.update(zip((f"{step} arrives", f"{step} compute", f"{step} download"), timed))
    for step in STEPS:
        out[f"{step} visible"] = out[f"{step} arrives"] + out[f"{step} download"]
    return out


# In the page: the times (performance.now(), ms) at which the nearest people's names appear
# (with the nearest person's answer; not the caption, whose spinner shows a time while it
# waits) and each generated face finishes loading, by its width.
WATCH = """() => {
  window.seen = {};
  const note = (key) => { if (!(key in window.seen)) window.seen[key] = performance.now(); };
  new MutationObserver(() => {
    if (document.querySelector('#chart .name')) note('matches');  // the chart's names
    for (const img of document.querySelectorAll('#generated img')) {
      if (img.complete && img.naturalWidth) note('face ' + img.naturalWidth);
      else img.addEventListener('load', () => note('face ' + img.naturalWidth), {once: true});
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true,
                             attributes: true});
}"""
UPLOADS = """() => [window.stopped, window.seen, performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/gradio_api/upload') && e.startTime >= window.stopped)
  .map(e => [e.startTime, e.responseEnd])[0]]"""  # the recording's upload, in page time
STOP = """() => { document.querySelector('#voice button.stop-button').click();
                 window.stopped = performance.now(); }"""


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, s) that the processes `pids` have used so far (Linux /proc;
    processes gone meanwhile count 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def chromium_pids() -> list[int]:
    """The running Chromium processes (browser, renderers, GPU and utility processes): every
    Chromium on the machine, so the figure is the benchmark's only when nothing else runs
    one."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and "chromium" in (entry / "comm").read_text():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def through_browser(bundle: Path, repeats: int, clip: Path, seconds: float, full: int,
                    precision: str = "auto") -> None:
    """Chromium with `clip` as its (fake) microphone: record `seconds`, stop, and time in the
    page from the stop click to the nearest person's answer, the first face and the full
    face, as the visitor sees them (uploading the recording included; no button press), and
    the CPU time the browser and the server used meanwhile (they share this machine's cores)."""
    from playwright.sync_api import sync_playwright

    rows: dict[str, list[float]] = {}
    with running_app(bundle, env={PRECISION_VAR: precision}) as (url, server), \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args(clip),
                                    headless=True)
        context = browser.new_context(viewport={"width": 390, "height": 844})
        context.grant_permissions(["microphone"], origin=url.rstrip("/"))
        page = context.new_page()
        for i in range(repeats + 1):
            page.goto(url)
            page.locator("#voice button.record-button").click(timeout=60_000)
            page.wait_for_timeout(seconds * 1000)
            page.evaluate(WATCH)
            pids = chromium_pids() + [server.pid]
            cpu = [cpu_seconds(pids[:-1]), cpu_seconds(pids[-1:])]
            page.evaluate(STOP)
            page.wait_for_function(f"() => 'face {full}' in window.seen", timeout=120_000)
            cpu = [cpu_seconds(pids[:-1]) - cpu[0], cpu_seconds(pids[-1:]) - cpu[1]]
            seen = page.evaluate(UPLOADS)
            if i:
                stopped, times, (upload_start, upload_end) = seen
                times = {**times, "upload starts": upload_start, "upload done": upload_end}
                for key, at in times.items():
                    rows.setdefault(key, []).append((at - stopped) / 1000)
                rows.setdefault("browser cpu", []).append(cpu[0])
                rows.setdefault("server cpu", []).append(cpu[1])
        browser.close()
    med = {key: float(np.median(v)) for key, v in rows.items()}
    faces = sorted((int(k.split()[1]), v) for k, v in med.items() if k.startswith("face"))
    print(f"browser (fake microphone, {seconds:g} s of speech, 390 px), medians of {repeats}: "
          f"stop -> nearest person {med['matches']:.3f} s, -> " +
          ", -> ".join(f"{px} px face {at:.3f} s" for px, at in faces) +
          f"; the recording's upload starts {med['upload starts']:.3f} s after the stop and "
          f"ends at {med['upload done']:.3f} s; meanwhile (stop -> full face) the browser used "
          f"{med['browser cpu']:.2f} CPU s and the server {med['server cpu']:.2f} "
          f"(they share the machine's {os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="the dev bundle's tiny models")
    parser.add_argument("--app", action="store_true", help="also time through app.py")
    parser.add_argument("--browser", action="store_true",
                        help="also time the page in Chromium with a fake microphone")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=CHOICES, default="auto",
                        help="the voice encoder's precision, in process and in the app")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as app.py does
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'tiny' if args.tiny else 'full-size'} random-weight models")
    with tempfile.TemporaryDirectory() as tmp:
        bundle, bundle_s, clips = write_inputs(Path(tmp), args.tiny)
        print(f"bundle written in {bundle_s:.1f} s")
        full = in_process(bundle, args.repeats, clips, args.precision)
        if args.app:
            through_app(bundle, args.repeats, clips[5.0], args.precision)
        if args.browser:
            through_browser(bundle, args.repeats, clips[5.0], 5.0, full, args.precision)


if __name__ == "__main__":
    main()

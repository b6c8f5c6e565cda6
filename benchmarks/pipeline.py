"""End-to-end timings of one `predict`: per stage, in process and through the app.

Builds a bundle of random-weight models (full size by default: wav2vec2-base x-vector and a
1024 px config-f StyleGAN2; `--tiny` for the dev bundle's models), then times
- in process: per stage to the 256 px preview and to the full face of one `VoiceFace.stream`
  call (`voiceface.bench.time_calls`; `python -m voiceface bench` adds p95, cold start, RSS);
- with `--app`: app.py on 127.0.0.1, the page's request over HTTP (`through_app`): upload ->
  nearest people -> 128 px preview -> full face, with where the time goes.
Medians over `--repeats` runs after one warm-up.
Usage (repository root): python -m benchmarks.pipeline [--app] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from voiceface.bench import preview_size, time_calls, write_inputs
from voiceface.pipeline import VoiceFace
from voiceface.stylegan2_ops import reuse_freed_memory

from .serve import running_app


def in_process(bundle: Path, repeats: int, clips: dict[float, Path]) -> None:
    start = time.perf_counter()
    vf = VoiceFace.from_pretrained(bundle)
    print(f"load bundle: {time.perf_counter() - start:.2f} s")
    full = vf.generator.resolution
    preview = preview_size(full)
    for seconds, clip in clips.items():
        stats = time_calls(vf, clip, (preview, full), repeats)
        med = {px: s["median"] for px, s in zip((preview, full), stats)}
        stages = "  ".join(f"{k} {v:.3f}" for k, v in med[preview].items() if k != "total")
        print(f"{seconds:>4.0f} s audio: {stages}  | to preview {med[preview]['total']:.3f} s, "
              f"to full {med[full]['total']:.3f} s")


STEPS = ("matches", "preview", "full face")  # the page's updates, in order (the PNG after)


def through_app(bundle: Path, repeats: int, clip: Path) -> None:
    """Time the page's request over raw HTTP as a browser makes it: upload the recording, post
    `/predict_ui`, read its event stream, download each update's images. Per update: when it
    arrives (from the start of the upload), how much of that the server computed (the
    summary's timings), what the rest was (upload; queue, encoding, protocol), and the
    download of its images; "visible" = arrival + download."""
    import httpx

    start = time.perf_counter()
    with running_app(bundle) as (url, _):
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
    steps = iter(STEPS)
    with http.stream("GET", f"call/predict_ui/{event_id}") as events:
        kind = None
        for line in events.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
                continue
            if not line.startswith("data: ") or kind != "generating":
                if kind == "error":
                    raise RuntimeError(f"the app refused the request: {line}")
                continue
            arrived = time.perf_counter() - t0
            data = json.loads(line[len("data: "):])
            step = next(steps, "png")
            if step == "png":
                out["png"] = arrived
                continue
            timings = data[6]["timings"]
            out["decode"] = timings["load_audio"]
            images = [data[2]] if step == "matches" else [data[0]]  # nearest photo, face
            fetch = time.perf_counter()
            for image in images:
                if image:
                    http.get(image["url"]).raise_for_status()
            out[f"{step} download"] = time.perf_counter() - fetch
            out[f"{step} arrives"] = arrived
            out[f"{step} compute"] = timings["total"]
            out[f"{step} visible"] = arrived + out[f"{step} download"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="the dev bundle's tiny models")
    parser.add_argument("--app", action="store_true", help="also time through app.py")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as app.py does
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'tiny' if args.tiny else 'full-size'} random-weight models")
    with tempfile.TemporaryDirectory() as tmp:
        bundle, bundle_s, clips = write_inputs(Path(tmp), args.tiny)
        print(f"bundle written in {bundle_s:.1f} s")
        in_process(bundle, args.repeats, clips)
        if args.app:
            through_app(bundle, args.repeats, clips[5.0])


if __name__ == "__main__":
    main()

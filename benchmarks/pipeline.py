"""End-to-end timings of one `predict`: per stage, in process and through the app.

Builds a bundle of random-weight models (full size by default: wav2vec2-base x-vector and a
1024 px config-f StyleGAN2; `--tiny` for the dev bundle's models), then times
- in process: per stage to the 256 px preview and to the full face of one `VoiceFace.stream`
  call (`voiceface.bench.time_calls`; `python -m voiceface bench` adds p95, cold start, RSS);
- with `--app`: app.py on 127.0.0.1, submit -> 256 px preview -> full face via gradio_client.
Medians over `--repeats` runs after one warm-up.
Usage (repository root): python -m benchmarks.pipeline [--app] [--tiny]
"""

from __future__ import annotations

import argparse
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


def through_app(bundle: Path, repeats: int, clip: Path) -> None:
    from gradio_client import Client, handle_file

    start = time.perf_counter()
    with running_app(bundle) as (url, _):
        print(f"app start to ready: {time.perf_counter() - start:.1f} s")
        client = Client(url, verbose=False)
        firsts, lasts = [], []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            job = client.submit(handle_file(str(clip)), api_name="/predict_ui")
            while not job.outputs():
                time.sleep(0.005)
            first = time.perf_counter() - t0
            job.result()
            if i:
                firsts.append(first)
                lasts.append(time.perf_counter() - t0)
        print(f"app, 5 s audio: submit -> first image {np.median(firsts):.3f} s, "
              f"-> final image {np.median(lasts):.3f} s (median of {repeats})")


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

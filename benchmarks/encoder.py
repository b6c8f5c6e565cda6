"""Voice encoder latency: a base-size wav2vec2 x-vector model (random weights) on this machine.

Prints the median and p95 of `VoiceEncoder.embed` for 3, 5 and 10 s of audio after a warm-up.
Random weights cost exactly what trained ones do.
Usage (repository root): python -m benchmarks.encoder [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from voiceface.audio import SAMPLE_RATE
from voiceface.devbundle import write_random_encoder
from voiceface.voice import VoiceEncoder

DURATIONS = (3.0, 5.0, 10.0)  # s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = VoiceEncoder.from_pretrained(write_random_encoder(Path(tmp), config={}))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"wav2vec2-base x-vector ({sum(p.numel() for p in encoder.model.parameters()) / 1e6:.0f}"
          f" M parameters), random weights, {args.repeats} runs after 2 warm-up runs")
    print(f"{'audio':>6} {'median':>8} {'p95':>8}")
    rng = np.random.default_rng(0)
    for seconds in DURATIONS:
        wav = (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
        for _ in range(2):
            encoder.embed(wav)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            encoder.embed(wav)
            times.append(time.perf_counter() - start)
        print(f"{seconds:>5.0f}s {np.median(times):>7.3f}s {np.percentile(times, 95):>7.3f}s")


if __name__ == "__main__":
    main()

"""The start-up precision check on full-size random models, and what it buys: one voice's
embedding in fp32 against the precision the check chose.

Writes a dev bundle with a base-size wav2vec2 x-vector encoder (random weights: they cost what
trained ones do, but their cosines to fp32 say little about a trained model's), runs
`voiceface.precision.settle` as the app does at start (its decision and figures, and how long
it took), then times the embedding of one 5 s clip with the fp32 encoder and with the serving
encoder, round-robin, medians of `--repeats`.
Usage (repository root): python -m benchmarks.precision [--repeats 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from voiceface.devbundle import synthetic_voice, write_dev_bundle
from voiceface.pipeline import VoiceFace
from voiceface.precision import settle
from voiceface.stylegan2_ops import reuse_freed_memory

SECONDS = 5.0  # s of speech embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as app.py does
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_dev_bundle(Path(tmp) / "dev", encoder_config={}, progress=False)
        vf = VoiceFace.from_pretrained(bundle, progress=False)
        start = time.perf_counter()
        decision = settle(vf, "auto")
        took = time.perf_counter() - start
    print(f"torch {torch.__version__}, {args.threads} threads, wav2vec2-base x-vector, random "
          f"weights\nstart-up check ({took:.1f} s): {decision.describe()}")
    wav = synthetic_voice(SECONDS, seed=3, f0=150.0)
    encoders = {"fp32": vf.encoder, vf.query_encoder.precision: vf.query_encoder}
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for encoder in encoders.values():  # warm-up
        encoder.embed(wav)
    for _ in range(args.repeats):
        for name, encoder in encoders.items():
            clock = time.perf_counter()
            encoder.embed(wav)
            times[name].append(time.perf_counter() - clock)
    med = {name: float(np.median(t)) for name, t in times.items()}
    print(f"embed {SECONDS:g} s of speech, medians of {args.repeats} round-robin rounds: " +
          ", ".join(f"{name} {s:.3f} s" for name, s in med.items()) +
          (f" ({med['fp32'] / med[vf.query_encoder.precision]:.2f}x)" if len(med) > 1 else ""))


if __name__ == "__main__":
    main()

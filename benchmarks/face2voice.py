"""Face to voice latency: photo -> aligned face -> backbone features -> voice -> search.

A DINOv2-small-sized backbone (hidden 384, 12 layers, 224 px input) with random weights (it
costs exactly what trained weights do), a reverse mapper of the size `build` trains
(768-d features -> 512-d voices) fitted on random voices of `--people` people, and the
public-domain portrait in voiceface/data. Prints the median and p95 of every stage and
of the total after a warm-up call. For the cost of the other face representation (a W latent
by inversion, per query) run `python -m benchmarks.invert`.

With `--app`, also through the app as a visitor or a program meets it: a dev bundle whose
face-to-voice model is fitted on the same full-size random backbone (its voice encoder and
generator stay tiny: a face query does not run them), app.py on 127.0.0.1, and the photo sent
to `/face2voice` with gradio_client, upload included: the first request (which loads the
face-to-voice model), then the median and p95 of the rest.

With `--face-traits`, each query also reads the face's apparent sex and age band with a CLIP
ViT-B/16-sized face-trait model (random weights; the stage "traits"), as the app does when
its bundle has one; its load (at a query's first face, in the app) is timed apart.
Usage (repository root):
    python -m benchmarks.face2voice [--threads 2] [--repeats 10] [--app] [--face-traits]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.face_traits import CLIP_B16
from benchmarks.invert import DINOV2_SMALL
from voiceface.devbundle import (DEV_PHOTO, write_dev_bundle, write_random_backbone,
                                 write_random_face_traits)
from voiceface.face2voice import FaceToVoice
from voiceface.face_traits import FaceTraitModel
from voiceface.faces import DEFAULT_SIZE, align_face
from voiceface.gallery import Gallery
from voiceface.invert import Backbone

from .serve import REPO, running_app

VOICE_DIM = 512  # the default encoder's x-vector size
PHOTO = REPO / "voiceface" / "data" / DEV_PHOTO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--people", type=int, default=48)
    parser.add_argument("--app", action="store_true", help="also time through app.py")
    parser.add_argument("--face-traits", action="store_true",
                        help="also read the face's traits (CLIP ViT-B/16-sized, random)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    voices = rng.standard_normal((args.people, VOICE_DIM)).astype(np.float32)
    voices /= np.linalg.norm(voices, axis=1, keepdims=True)
    gallery = Gallery(VOICE_DIM, "bench")
    ids = [f"p{i:02d}" for i in range(args.people)]
    for person_id, voice in zip(ids, voices):
        gallery.add(person_id, voice)
    face = align_face(PHOTO, DEFAULT_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = Backbone.from_pretrained(write_random_backbone(Path(tmp), config=DINOV2_SMALL),
                                            None)
    start = time.perf_counter()
    f2v, _ = FaceToVoice.fit(backbone, {"name_or_path": "bench", "revision": None}, ids,
                             [face.rotate(float(angle)) for angle in rng.uniform(-5, 5, len(ids))],
                             voices, encoder_fingerprint="bench", generator_fingerprint="bench")
    fit = time.perf_counter() - start
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; DINOv2-small-sized "
          f"backbone at {backbone.side} px, random weights; {args.people} people "
          f"(features + reverse mapper fitted in {fit:.1f} s); {args.repeats} runs after a "
          "warm-up")
    traits = None
    if args.face_traits:
        with tempfile.TemporaryDirectory() as tmp:
            clip = write_random_face_traits(Path(tmp) / "clip", config=CLIP_B16)
            start = time.perf_counter()
            traits = FaceTraitModel.from_pretrained(clip, None)
            print(f"face-trait model (CLIP ViT-B/16-sized, random) loaded, its sentences "
                  f"embedded, in {time.perf_counter() - start:.1f} s")
    f2v(PHOTO, gallery, face_traits=traits)
    runs = [f2v(PHOTO, gallery, face_traits=traits).timings for _ in range(args.repeats)]
    print(f"{'stage':>9} {'median':>8} {'p95':>8}")
    for stage in runs[0]:
        values = [run[stage] for run in runs]
        print(f"{stage:>9} {np.median(values):7.3f}s {np.quantile(values, 0.95):7.3f}s")
    if args.app:
        through_app(args.repeats, args.threads)


def through_app(repeats: int, threads: int) -> None:
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_dev_bundle(Path(tmp) / "bundle", progress=False,
                                  backbone_config=DINOV2_SMALL)
        with running_app(bundle, args=("--threads", str(threads))) as (url, _):
            client = Client(url, verbose=False)
            runs, features = [], []
            for _ in range(repeats + 1):
                start = time.perf_counter()
                summary = client.predict(handle_file(str(PHOTO)), api_name="/face2voice")
                runs.append(time.perf_counter() - start)
                features.append(summary["timings"]["features"])
    print(f"app, photo -> answer: first request {runs[0]:.3f} s (loads the model); then "
          f"median {np.median(runs[1:]):.3f} s, p95 {np.quantile(runs[1:], 0.95):.3f} s "
          f"({repeats} runs; of which features {np.median(features[1:]):.3f} s)")


if __name__ == "__main__":
    main()

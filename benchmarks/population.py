"""Do generated faces stay in the enrolled population? A synthetic measurement (issue 16).

A population whose latents lie around w_avg + d, d a fixed direction far from the
generator's average face (|d| = `OFFSET_TYPICALS` times the typical distance of a sampled w
from w_avg; each person's own part spread about |d| / 3), as a class of students would lie
away from FFHQ's average face. Their voices carry the per-person part only: a fixed random
linear map of it plus noise, unit-normalised, several clips a person. The real `train_mapper`
(small-gallery settings, `mapper.SMALL_MAPPER`) is fitted on `PEOPLE` people; people it never
saw are then drawn as the pipeline draws them: the mapper's w, truncated at psi 0.7.

The figure: for the unseen people, mean distance of the drawn latents to w_avg divided by
their mean distance to the population centre (the training people's mean latent). Above 1,
faces sit nearer the population than FFHQ's average face.
- "before": the mapper predicts offsets from w_avg and truncation pulls toward w_avg;
- "after": both use the population centre (`Latents.centre`), as voiceface does now.

Usage (repository root): python -m benchmarks.population [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from voiceface.enrolled import Enrolled
from voiceface.mapper import SMALL_MAPPER, train_mapper
from voiceface.stylegan2 import truncate_toward

DIM = 512  # embedding and latent size (wav2vec2 x-vectors, StyleGAN2 W)
PEOPLE = 48  # enrolled (the mapper's training people)
UNSEEN = 24  # people the mapper never saw, drawn for the measurement
CLIPS = 4  # voice clips (windows) per person
SAMPLED_SPREAD = 1.0  # per-coordinate std of a sampled w around w_avg
OFFSET_TYPICALS = 3.0  # |d| in typical distances of a sampled w from w_avg
PERSON_FRACTION = 1 / 3  # per-person spread (typical |u|) as a fraction of |d|
VOICE_NOISE = 0.2  # noise std relative to the voice signal's, per clip
PSI = 0.7  # the pipeline's default truncation


def synthetic_population(seed: int = 0) -> dict[str, np.ndarray]:
    """Latents [P, DIM] around w_avg + d and clip embeddings [P, CLIPS, DIM], for
    P = PEOPLE + UNSEEN people (the first PEOPLE enrolled), and w_avg [DIM]."""
    rng = np.random.default_rng(seed)
    typical = SAMPLED_SPREAD * np.sqrt(DIM)  # E|w - w_avg| for w ~ N(w_avg, spread^2 I)
    w_avg = rng.standard_normal(DIM)
    direction = rng.standard_normal(DIM)
    d = OFFSET_TYPICALS * typical * direction / np.linalg.norm(direction)
    n = PEOPLE + UNSEEN
    own = rng.standard_normal((n, DIM)) * (PERSON_FRACTION * np.linalg.norm(d) / np.sqrt(DIM))
    voice_map = rng.standard_normal((DIM, DIM)) / np.sqrt(DIM)
    signal = own @ voice_map.T  # [P, DIM]
    scale = np.linalg.norm(signal, axis=1).mean() / np.sqrt(DIM)
    clips = signal[:, None] + VOICE_NOISE * scale * rng.standard_normal((n, CLIPS, DIM))
    clips /= np.linalg.norm(clips, axis=2, keepdims=True)
    return {"latents": (w_avg + d + own).astype(np.float32),
            "clips": clips.astype(np.float32), "w_avg": w_avg.astype(np.float32)}


def measure(data: dict[str, np.ndarray], centred_on_population: bool) -> dict[str, float]:
    """Train on the enrolled people, draw the unseen ones; distances of the drawn latents.

    With `centred_on_population` the mapper and the truncation use the gallery's population
    centre, else the generator's w_avg (voiceface before issue 16)."""
    latents, clips, w_avg = data["latents"], data["clips"], data["w_avg"]
    enrolled = Enrolled.new(DIM, "synthetic", latent_dim=DIM)
    for i in range(PEOPLE):
        mean = clips[i].mean(axis=0)
        enrolled.gallery.add(f"p{i:02d}", mean / np.linalg.norm(mean))
        enrolled.latents.set(f"p{i:02d}", latents[i])
    population = enrolled.latents.centre
    centre = population if centred_on_population else w_avg
    x = clips[:PEOPLE].reshape(-1, DIM)
    y = np.repeat(latents[:PEOPLE], CLIPS, axis=0)
    groups = np.repeat([f"p{i:02d}" for i in range(PEOPLE)], CLIPS)
    mapper, report = train_mapper(x, y, groups, centre, **SMALL_MAPPER, progress=False)
    unseen = clips[PEOPLE:].mean(axis=1)
    unseen /= np.linalg.norm(unseen, axis=1, keepdims=True)
    drawn = truncate_toward(mapper.predict(unseen), centre, PSI)
    to_w_avg = float(np.linalg.norm(drawn - w_avg, axis=1).mean())
    to_population = float(np.linalg.norm(drawn - population, axis=1).mean())
    return {"to_w_avg": to_w_avg, "to_population": to_population,
            "ratio": to_w_avg / to_population, "best_epoch": report.best_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    print(f"{PEOPLE} enrolled, {UNSEEN} unseen people, {CLIPS} clips each, {DIM}-d; psi {PSI}; "
          "ratio = mean distance to w_avg / mean distance to the population centre")
    for seed in args.seeds:
        data = synthetic_population(seed)
        for name, population in (("before (w_avg)", False), ("after (population)", True)):
            start = time.perf_counter()
            r = measure(data, population)
            print(f"seed {seed} {name:<19} to w_avg {r['to_w_avg']:7.2f}  to centre "
                  f"{r['to_population']:7.2f}  ratio {r['ratio']:8.2f}x  mapper best epoch "
                  f"{r['best_epoch']}  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

"""Trait agreement: does a generated face show the apparent sex and age band of the person's own
face, and do the voices suggested for a face have the apparent sex of the person's own voice?

Speech2Face's measure (CVPR 2019: apparent-sex agreement between generated and true faces),
taken by `voiceface.evaluate` on people the mappers never saw:

- Voice to face (`voice_to_face`). Each held-out person's predicted latent, per method (the
  mapper, the kNN blend, the population mean), is rendered at `TRAIT_RESOLUTION`, truncated as
  the bundle truncates toward the centre of the people the mapper was trained on, and read by
  the face-trait model (`voiceface.face_traits`); so is the person's own face: their photo
  when the gallery keeps one, else their own latent rendered the same way.
- Face to voice (`face_to_voice`). The voices suggested for each held-out face are the
  `SUGGESTED` people (the person left out) whose voices are nearest the predicted voice, per
  method (the reverse mapper, the kNN blend, the mean voice); their apparent sex is the one
  most of them have (`voiceface.traits`' classifier on each person's recorded mean score, a
  tie or no answer: unsure), against the apparent sex of the person's own voice.

Counting (`count_agreement`): a person is answered for a method when neither their own answer
nor the method's is unsure (None); agreement is the share of answered people whose answers
match, with a 95 % Wilson score interval (`wilson_interval`: it stays inside [0, 1] and keeps
its coverage near 0 and 1 and for small counts, where the normal approximation does not).
Chance is the majority share: the agreement of always answering the commonest of the people's
own answers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .face_traits import FaceTraits
from .stylegan2 import Generator, to_pil

Z_95 = 1.959963984540054  # standard normal quantile of 0.975: a two-sided 95 % interval
TRAIT_RESOLUTION = 256  # px faces are rendered at for the trait model (CLIP sees 224 px)
RENDER_BATCH = 8  # latents per synthesis pass
SUGGESTED = 5  # voices suggested per face (the app's default k)
FACE_TRAITS = ("apparent_sex", "age_band")  # what is compared between faces

ReadTraits = Callable[[Sequence[Image.Image]], list[FaceTraits]]


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes`/`n` (n > 0), 95 % by default."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"Need 0 <= successes <= n and n > 0; got {successes} of {n}.")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def count_agreement(own: Sequence[str | None], predicted: dict[str, Sequence[str | None]]
                    ) -> dict:
    """Agreement of each method's answers with the people's own (row i: person i; None:
    unsure). Returns {"people", "own_answered", "chance" (majority share of the own answers;
    None without one), "majority", "methods": {name: {"answered", "answered_share",
    "agreed", "agreement", "ci95"}}} (agreement and ci95 None when nobody is answered)."""
    n = len(own)
    known = [a for a in own if a is not None]
    counts = Counter(known).most_common(1)
    methods = {}
    for name, answers in predicted.items():
        if len(answers) != n:
            raise ValueError(f"{name} has {len(answers)} answers for {n} people.")
        pairs = [(a, b) for a, b in zip(own, answers) if a is not None and b is not None]
        agreed = sum(a == b for a, b in pairs)
        methods[name] = {
            "answered": len(pairs), "answered_share": len(pairs) / n if n else None,
            "agreed": agreed, "agreement": agreed / len(pairs) if pairs else None,
            "ci95": list(wilson_interval(agreed, len(pairs))) if pairs else None}
    return {"people": n, "own_answered": len(known),
            "majority": counts[0][0] if counts else None,
            "chance": counts[0][1] / len(known) if counts else None, "methods": methods}


def render(generator: Generator, latents: np.ndarray, centres: np.ndarray, truncation: float,
           resolution: int = TRAIT_RESOLUTION) -> list[Image.Image]:
    """Faces of latents [N, W], each truncated by `truncation` toward its row of `centres`
    [N, W], rendered at `resolution` (at most the generator's)."""
    side = min(resolution, generator.resolution)
    images = []
    with torch.inference_mode():
        for start in range(0, len(latents), RENDER_BATCH):
            w, c = (torch.from_numpy(np.asarray(x[start:start + RENDER_BATCH], np.float32)
                                     ).to(generator.w_avg) for x in (latents, centres))
            images += to_pil(generator.synthesis(c + truncation * (w - c), noise="const",
                                                 resolution=side))
    return images


def voice_to_face(own_faces: Sequence[Image.Image], predictions: dict[str, np.ndarray],
                  centres: np.ndarray, generator: Generator, truncation: float,
                  read: ReadTraits) -> dict:
    """Each trait of FACE_TRAITS counted (`count_agreement`) between the people's own faces
    (row i: person i) and the faces of each method's predicted latents [N, W], rendered
    truncated toward `centres` [N, W] (each person's training people's centre) and read by
    `read` (a `FaceTraitModel`)."""
    own = read(list(own_faces))
    made = {name: read(render(generator, w, centres, truncation))
            for name, w in predictions.items()}
    return {trait: count_agreement([getattr(t, trait) for t in own],
                                   {name: [getattr(t, trait) for t in answers]
                                    for name, answers in made.items()})
            for trait in FACE_TRAITS}


def suggested_sex(voices: np.ndarray, voice_sex: Sequence[str | None], query: np.ndarray,
                  person: int, k: int = SUGGESTED) -> str | None:
    """The apparent sex most of the `k` voices nearest `query` [D] have among `voices` [N, D]
    (unit rows; row `person` left out); None when their answered voices tie or none answers."""
    scores = voices @ query
    scores[person] = -np.inf
    nearest = np.argsort(-scores, kind="stable")[:min(k, len(voices) - 1)]
    votes = Counter(voice_sex[i] for i in nearest if voice_sex[i] is not None).most_common(2)
    if not votes or (len(votes) == 2 and votes[0][1] == votes[1][1]):
        return None
    return votes[0][0]


def face_to_voice(voices: np.ndarray, voice_sex: Sequence[str | None],
                  predictions: dict[str, np.ndarray], k: int = SUGGESTED) -> dict:
    """Apparent sex of the voices each method suggests for each person's face (its predicted
    voices [N, D], row i: person i's) against the person's own voice's (`voice_sex`), as
    `count_agreement` counts it."""
    voices = np.asarray(voices, np.float32)
    return {"apparent_sex": count_agreement(voice_sex, {
        name: [suggested_sex(voices, voice_sex, p, i, k) for i, p in enumerate(predicted)]
        for name, predicted in predictions.items()}), "suggested": min(k, len(voices) - 1)}

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

`measure_voice_to_face` and `measure_face_to_voice` take them from a bundle's held-out
predictions (`HeldOutFaces`, `voiceface.face2voice.HeldOutVoices`); `markdown` is the
report's section.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bundle import BUNDLE_FILE, BundleSpec, FaceTraitsSpec
from .face2voice import HeldOutVoices
from .face_traits import FaceTraitModel, FaceTraits
from .gallery import Gallery
from .stylegan2 import Generator, to_pil
from .trait_inputs import TRAITS_KEY, record_apparent_sex

Z_95 = 1.959963984540054  # standard normal quantile of 0.975: a two-sided 95 % interval
TRAIT_RESOLUTION = 256  # px faces are rendered at for the trait model (CLIP sees 224 px)
RENDER_BATCH = 8  # latents per synthesis pass
SUGGESTED = 5  # voices suggested per face (the app's default k)
FACE_TRAITS = ("apparent_sex", "age_band")  # what is compared between faces

ReadTraits = Callable[[Sequence[Image.Image]], list[FaceTraits]]


@dataclass(frozen=True)
class HeldOutFaces:
    """What `voiceface.evaluate` predicted: the people with latents, their latents [P, W], each
    method's predicted latents [P, W] for them and, per person, the centre [P, W] of the
    people their mapper was trained on."""

    ids: list[str]
    latents: np.ndarray
    predictions: dict[str, np.ndarray]
    centres: np.ndarray


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
    [N, W], rendered at `resolution` (at most the generator's). Equal rows are rendered once
    (the population mean's face is one per fold)."""
    side = min(resolution, generator.resolution)
    pairs = np.concatenate([latents, centres], axis=1).astype(np.float32)
    unique, which = np.unique(pairs, axis=0, return_inverse=True)
    w, c = np.split(unique, 2, axis=1)
    drawn = []
    with torch.inference_mode():
        for start in range(0, len(unique), RENDER_BATCH):
            ws, cs = (torch.from_numpy(x[start:start + RENDER_BATCH]).to(generator.w_avg)
                      for x in (w, c))
            drawn += to_pil(generator.synthesis(cs + truncation * (ws - cs), noise="const",
                                                resolution=side))
    return [drawn[i] for i in which.reshape(-1)]


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


def measure_voice_to_face(gallery: Gallery, spec: BundleSpec | None,
                          generator: Generator | None, held: HeldOutFaces | None,
                          override: str | None) -> dict:
    """The voice-to-face trait agreement (`voice_to_face`) of `held`, read by the face-trait
    model `override` names (directory or Hub id), else the one the bundle's `bundle.json`
    names; or {"note": why it is missing}."""
    if held is None:
        return {"note": "too few people with latents for generation (need 4 or more)"}
    if spec is None or generator is None:
        return {"note": f"the bundle has no {BUNDLE_FILE} naming a generator to draw faces with"}
    named = override or (spec.face_traits.name_or_path if spec.face_traits_named else None)
    if named is None:
        return {"note": f"{BUNDLE_FILE} names no face-trait model; pass --face-traits "
                        f"{FaceTraitsSpec().name_or_path} (or a local copy) to measure it"}
    source = FaceTraitsSpec.from_dict({"name_or_path": named}) if override else spec.face_traits
    try:
        model = FaceTraitModel.from_pretrained(spec.locate(source.name_or_path), source.revision)
    except (OSError, ValueError) as err:
        return {"note": f"the face-trait model {source.name_or_path} cannot load: {err}"}
    own, photos = [], 0
    for j, person in enumerate(held.ids):
        faces = [f for f in gallery.person(person).faces if Path(f).is_file()]
        if faces:
            own.append(Image.open(faces[0]).convert("RGB"))
            photos += 1
        else:
            own += render(generator, held.latents[j:j + 1], held.centres[j:j + 1],
                          spec.truncation)
    counted = voice_to_face(own, held.predictions, held.centres, generator, spec.truncation,
                            model)
    return {"model": source.name_or_path, "revision": source.revision,
            "test_weights": spec.test_weights, "people": len(held.ids),
            "own_photos": photos, "own_renders": len(held.ids) - photos,
            "resolution": min(TRAIT_RESOLUTION, generator.resolution),
            "truncation": spec.truncation, **counted}


def measure_face_to_voice(gallery: Gallery, held: HeldOutVoices | None) -> dict:
    """The face-to-voice apparent-sex agreement (`face_to_voice`) of `held`, each voice's
    apparent sex from the gallery's record of it; or {"note": why it is missing}."""
    if held is None:
        return {"note": "no face-to-voice evaluation to measure (see its section)"}
    records = [gallery.person(i).extra.get(TRAITS_KEY) for i in held.ids]
    if all(r is None for r in records):
        return {"note": "the gallery keeps no voice traits (built before they were measured); "
                        "rebuild it to measure this"}
    sexes = [record_apparent_sex(r) for r in records]
    return {"people": len(held.ids), **face_to_voice(held.voices, sexes, held.predictions)}


def markdown(traits: dict) -> list[str]:
    """The report's trait-agreement section (`{"voice_to_face": ..., "face_to_voice": ...}`),
    as Markdown lines."""
    lines = ["## Trait agreement (people unseen by the mappers)", "",
             "Agreement: the share of people, among those both answers exist for, whose answers "
             "match, with its 95 % Wilson score interval. Answered: the people with both "
             "answers (an unsure trait model or classifier answers nothing). Chance: the "
             "majority share, the agreement of always answering the commonest own answer.", "",
             "### Voice to face", ""]
    faces = traits["voice_to_face"]
    if "note" in faces:
        lines.append(f"Not measured: {faces['note']}.")
    else:
        revision = f" at {faces['revision'][:12]}" if faces["revision"] else ""
        lines += [f"Each held-out person's generated face (rendered at {faces['resolution']} px, "
                  f"truncation {faces['truncation']}) against their own face "
                  f"({faces['own_photos']} photos, {faces['own_renders']} renders of their "
                  f"latent), as the face-trait model {faces['model']}{revision} reads them.", ""]
        if faces["test_weights"]:
            lines += ["This bundle's models are random test weights: these figures mean "
                      "nothing.", ""]
        lines += _agreement_table({"apparent sex": faces["apparent_sex"],
                                   "age band": faces["age_band"]})
    lines += ["", "### Face to voice", ""]
    voices = traits["face_to_voice"]
    if "note" in voices:
        lines.append(f"Not measured: {voices['note']}.")
    else:
        lines += [f"The apparent sex most of the {voices['suggested']} voices suggested for each "
                  "held-out face have (the person left out) against the person's own voice's, "
                  "as the voice-trait classifier hears them.", ""]
        lines += _agreement_table({"apparent sex": voices["apparent_sex"]})
    return lines


def _agreement_table(counted: dict[str, dict]) -> list[str]:
    """One table row per trait and method of `count_agreement` answers."""
    lines = ["| trait | method | agreement (95 % CI) | answered | chance |",
             "| --- | --- | --- | --- | --- |"]
    for trait, c in counted.items():
        chance = "-" if c["chance"] is None else f"{c['chance']:.3f} ({c['majority']})"
        for name, m in c["methods"].items():
            agreement = "-" if m["agreement"] is None else \
                f"{m['agreement']:.3f} ({m['ci95'][0]:.3f}-{m['ci95'][1]:.3f}), " \
                f"{m['agreed']}/{m['answered']}"
            lines.append(f"| {trait} | {name} | {agreement} | {m['answered']}/{c['people']} "
                         f"| {chance} |")
    return lines

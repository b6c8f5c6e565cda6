"""The one recipe that turns people into a bundle's derived artifacts.

Every bundle is made here: a folder of real people (`voiceface.build`), the 48 personas
(`voiceface.persona_cache`) and the dev bundle (`voiceface.devbundle`) only differ in how they
yield people (`Enrollee`: voice windows, a photo, an aligned face, a latent). `assemble`
then, in this order:

1. builds the gallery: each person's pooled voice embedding, name, photo and latent, and
   their voice traits' record (`voiceface.trait_inputs.person_traits`, for live retraining);
2. calibrates the open-set (1:N) threshold on the enrolled windows
   (`voiceface.calibration.calibrate_open_set`); with nothing to calibrate on (one person)
   the threshold of the gallery at `previous`, if any, stays;
3. calibrates the verification (1:1) threshold on the same windows plus any trial-only
   windows (`voiceface.verification.calibrate_verification`), at the same target rate;
4. saves `gallery/`;
5. with 2 or more people, trains the mapper (voice -> latent offset from the population
   centre) on every enrolled window, with that window's voice traits when the source measured
   them, whole people held out for validation: `mapper/`;
6. describes the aligned faces with the backbone and, with 2 or more people, trains the
   reverse mapper (face -> voice): `face2voice/`.

What a source writes besides (bundle.json, windows for evaluation, a build report) stays with
the source.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import calibration, verification
from .bundle import GALLERY_DIR, MAPPER_DIR
from .enrolled import Enrolled
from .face2voice import FACE2VOICE_DIR, FaceToVoice
from .gallery_files import GalleryError
from .invert import Backbone
from .mapper import TrainReport, train_mapper
from .thresholds import FALSE_ALARM_RATE
from .trait_inputs import TRAIT_FEATURES, TRAITS_KEY, person_traits
from .voice import pool


@dataclass
class Enrollee:
    """One person as a source yields them.

    `windows` [n, D]: the embeddings of their enrolled recording windows (pooled into the
    gallery, calibrated on, trained on); `recordings[i]`: which recording window i comes from
    (unique within the person; the two parts of a split recording count as two).
    `trial_windows` [m, D] with `trial_recordings`: recordings used only as verification
    trials, never enrolled (the dev bundle's example recordings). `photo`: the displayed face
    file (the gallery keeps its own copy); `face`: the aligned face face to voice describes;
    `latent` [W]: the untruncated StyleGAN2 w of their face. `window_traits`
    [n, TRAIT_FEATURES]: window i's voice traits (`voiceface.trait_inputs.window_trait_features`,
    NaN rows for windows without voiced speech); None when not measured.
    """

    id: str
    name: str
    windows: np.ndarray
    recordings: Sequence[str]
    photo: Path
    face: Image.Image
    latent: np.ndarray
    n_clips: int = 1
    extra: dict = field(default_factory=dict)
    trial_windows: np.ndarray | None = None
    trial_recordings: Sequence[str] = ()
    window_traits: np.ndarray | None = None

    def traits(self) -> np.ndarray:
        """`window_traits`, NaN (unknown) rows when not measured: [n, TRAIT_FEATURES]."""
        if self.window_traits is None:
            return np.full((len(self.windows), len(TRAIT_FEATURES)), np.nan)
        if np.shape(self.window_traits) != (len(self.windows), len(TRAIT_FEATURES)):
            raise ValueError(f"{self.id} has {len(self.windows)} windows but window traits of "
                             f"shape {np.shape(self.window_traits)}; measure them on the same "
                             "windows (`window_trait_features` with the encoder's window).")
        return np.asarray(self.window_traits, np.float64)


@dataclass(frozen=True)
class Models:
    """What the artifacts are made for: the encoder's and generator's fingerprints and sizes,
    and the backbone (with where it came from, recorded in face2voice/)."""

    encoder_fingerprint: str
    embedding_dim: int
    generator_fingerprint: str
    latent_dim: int
    backbone: Backbone
    backbone_source: dict


@dataclass
class Assembly:
    """What `assemble` made: the gallery with its latents and records (saved), the mapper's
    and the reverse mapper's training summaries (None without one), and seconds per stage."""

    enrolled: Enrolled
    mapper: TrainReport | None
    face2voice: dict | None
    seconds: dict[str, float]


def assemble(people: Sequence[Enrollee], out: str | Path, models: Models, *,
             far: float = FALSE_ALARM_RATE, mapper_options: dict | None = None, seed: int = 0,
             previous: Path | None = None, progress: bool = True) -> Assembly:
    """Write `gallery/`, `mapper/` (2 or more people) and `face2voice/` of `people` into
    `out` (see the module docstring). `mapper_options`: `train_mapper` keyword arguments
    (its size and schedule); `previous`: a gallery directory whose threshold stays when
    there is nothing to calibrate on."""
    out = Path(out)
    if not people:
        raise ValueError("Nobody to assemble a bundle from.")
    seconds: dict[str, float] = {}
    enrolled = Enrolled.new(models.embedding_dim, models.encoder_fingerprint,
                            generator_fingerprint=models.generator_fingerprint,
                            latent_dim=models.latent_dim)
    gallery, records = enrolled.gallery, enrolled.calibrations
    for person in people:  # 1.
        record = person_traits(person.traits())
        gallery.add(person.id, pool(person.windows), name=person.name, faces=[person.photo],
                    consent=True, n_clips=person.n_clips,
                    extra={**person.extra, **({TRAITS_KEY: record} if record else {})})
        enrolled.latents.set(person.id, person.latent)
    windows = np.concatenate([p.windows for p in people])
    owners = [p.id for p in people for _ in range(len(p.windows))]
    if calibration.calibrate_open_set(windows, owners, records, far) is None and previous:  # 2.
        _keep_threshold(enrolled, previous)
    trials = [p for p in people if p.trial_windows is not None and len(p.trial_windows)]
    verification.calibrate_verification(  # 3.
        np.concatenate([windows] + [p.trial_windows for p in trials]),
        owners + [p.id for p in trials for _ in range(len(p.trial_windows))],
        [r for p in people for r in p.recordings]
        + [r for p in trials for r in p.trial_recordings], records, far)
    enrolled.save(out / GALLERY_DIR)  # 4.
    report = None
    if len(people) >= 2:  # 5.
        started = time.perf_counter()
        traits = np.concatenate([p.traits() for p in people])
        mapper, report = train_mapper(
            windows, np.concatenate([np.repeat(p.latent[None], len(p.windows), 0)
                                     for p in people]),
            owners, enrolled.latents.centre, traits=None if np.isnan(traits).all() else traits,
            **(mapper_options or {}),
            encoder_fingerprint=models.encoder_fingerprint,
            generator_fingerprint=models.generator_fingerprint, seed=seed, progress=progress)
        mapper.save_pretrained(out / MAPPER_DIR)
        seconds["mapper"] = time.perf_counter() - started
    started = time.perf_counter()  # 6.
    ids = [p.id for p in people]
    face2voice, reverse = FaceToVoice.fit(
        models.backbone, models.backbone_source, ids, [p.face for p in people],
        np.stack([gallery.embedding(i) for i in ids]),
        encoder_fingerprint=models.encoder_fingerprint,
        generator_fingerprint=models.generator_fingerprint, seed=seed, progress=progress)
    face2voice.save(out / FACE2VOICE_DIR)
    seconds["face2voice"] = time.perf_counter() - started
    return Assembly(enrolled, report, reverse, seconds)


def _keep_threshold(enrolled: Enrolled, directory: Path) -> None:
    """Carry the threshold of the gallery at `directory`, and how it was measured, into
    `enrolled` (when there is one for the same encoder)."""
    try:
        previous = Enrolled.load(directory,
                                 encoder_fingerprint=enrolled.gallery.encoder_fingerprint)
    except GalleryError:
        return
    enrolled.gallery.threshold = previous.gallery.threshold
    enrolled.calibrations.calibrate(previous.calibrations.open_set)

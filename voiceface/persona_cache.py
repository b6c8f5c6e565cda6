"""The personas' derived caches: the personas (`voiceface.personas`) as one source of people
for the recipe every bundle shares (`voiceface.assemble`).

Embeddings, the search index, latents, face renders, the mapper and face to voice depend on
the encoder, the generator and the perceptual backbone, so they are caches: `persona_bundle`
builds them once per (personas, encoder, generator, backbone, truncation and its centre)
fingerprint into a writable directory and reuses them on the next start, or installs them
prebuilt from a Hub repo the bundle pins, when built for the same (`voiceface.prebuilt`).
Each persona has one recording, split in time as `build` splits a single recording
(`voiceface.voice.split_for_evaluation`: the first 70 %, about 7 s, and the last 30 %, about
3 s, each one encoder window); the gallery pools both parts' windows.
The gallery's open-set threshold is calibrated then (`voiceface.calibration.calibrate_open_set`):
each window is scored against the other personas, one best score per window. Two windows
each, 48 personas give 96 trials, too few to measure 1 % (the finest rate is 1/96): the
threshold then accepts none of them, and its record says so. The verification threshold is
calibrated at the same rate (`voiceface.verification.calibrate_verification`): each window against
every other persona (96 x 47 non-mated trials), and against its own persona enrolled from
the other part of the recording (96 mated trials).
Face to voice (`voiceface.face2voice`) describes each persona's displayed face with the
bundle's backbone and trains the reverse mapper onto the personas' voices, as `build` does;
the generator's faces are aligned as FFHQ is, so they are used as rendered.
A persona's stored latent is the generator's untruncated w for its seed, like an inverted
photo's; its displayed face is drawn from that w truncated once by the bundle's truncation,
toward the bundle's truncation centre (the personas' population centre, or the generator's
w_avg), exactly as the pipeline draws it.

Each persona's face agrees with its voice in apparent sex. The voice's apparent sex is
measured on its own recording (`voiceface.traits`); only when the measurement is unsure is
the declaration in personas.json (`"voice": {..., "sex": "female"}`, for TTS voices whose
speaker is known) used, since pitch shifts can make a declared voice sound otherwise. The
face's seed is then chosen deterministically (`choose_face_seed`): its `face.seed`, else
seed + 1, ... (at most `FACE_TRIES` seeds), the first whose face the face-trait model
(`voiceface.face_traits`) reads as the voice's apparent sex; when none does, the first seed
stays and a warning says so; a voice of unknown sex keeps its first seed. Candidates are
rendered at `CANDIDATE_RESOLUTION` (CLIP sees 224 px), truncated toward the truncation centre
of the personas' first seeds (the population centre moves a little with the choices); only
the chosen face is rendered at `FACE_RESOLUTION`. The gallery's person extra records the
chosen "face_seed", the face-trait answers on its candidate ("face_traits") and the voice's
apparent sex with where it came from ("voice_sex").
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import hub, prebuilt, storage
from .assemble import Enrollee, Models, assemble
from .audio import AudioError, load_audio
from .bundle import PersonaCachesSpec
from .face_traits import FaceTraitModel, FaceTraits, traits_fingerprint
from .invert import Backbone
from .derived import load_derived
from .mapper import SMALL_MAPPER
from .personas import load_personas, personas_fingerprint
from .population import POPULATION, population_centre
from .stylegan2 import Generator, to_pil
from .thresholds import FALSE_ALARM_RATE
from .traits import measure
from .trait_inputs import voice_traits_fingerprint, window_trait_features
from .voice import VoiceEncoder, split_for_evaluation

FACE_RESOLUTION = 512  # px; gallery photos of the personas (the preview is 256 px)
CANDIDATE_RESOLUTION = 256  # px; faces whose apparent sex is read (CLIP resizes to 224 px)
FACE_TRIES = 16  # seeds tried per persona for a face that agrees with its voice
SEXES = ("female", "male")  # what personas.json may declare as a voice's "sex"
CACHE_FORMAT_VERSION = 7  # part of the cache key: raised when what a cache holds changes
Report = Callable[[str, int, int], None]  # (stage, people done, people in all): how far a build is

log = logging.getLogger(__name__)


def persona_bundle(root: str | Path, encoder: VoiceEncoder, generator: Generator,
                   generator_fingerprint: str, cache: str | Path, *, truncation: float,
                   truncation_centre: str = POPULATION, far: float = FALSE_ALARM_RATE,
                   backbone: str, backbone_revision: str | None, face_traits: str,
                   face_traits_revision: str | None,
                   prebuilt_caches: PersonaCachesSpec | None = None,
                   progress: bool = True,
                   report: Report | None = None) -> Path:
    """The directory holding `gallery/`, `mapper/` and `face2voice/` of the personas for
    these models.

    `truncation` is the psi the pipeline draws faces at and `truncation_centre` what toward
    ("population" or "generator", `voiceface.pipeline.VoiceFace.centre`); the personas'
    displayed faces are drawn so too. `backbone` (a Hub id at `backbone_revision`, or a
    local directory) describes their faces for face to voice. Built on first use (a few
    minutes with full-size models on 2 CPU cores) into `cache/personas/<key>`, where the key
    hashes the personas' content, the models' fingerprints, the backbone's name and
    fingerprint, the face-trait model's fingerprint (`face_traits` at
    `face_traits_revision`, which chooses the faces: see the module docstring), the
    truncation, its centre, the thresholds' target false-alarm rate `far` and how voice
    traits are measured; later calls, and later processes, reuse it. A build tells
    `report(stage, done, total)` how many of the `total` personas are through "faces" (their
    face chosen), then "people" (voice embedded, face drawn), then "models" (training).

    `prebuilt_caches` (a Hub repo at a commit, or a local folder: `voiceface.prebuilt`) are
    installed instead of building when they were built for exactly this key's models,
    personas and settings; when they cannot be used (not reachable, built for others, of
    another cache format, damaged) one warning says why and the caches are built.
    """
    root = Path(root)
    if hub.is_local(backbone):  # face2voice/ names it: a path that holds from any directory
        backbone = str(Path(backbone).expanduser().resolve())
    backbone_fingerprint = hub.resolve_safetensors_dir(backbone, backbone_revision,
                                                       "perceptual backbone").fingerprint
    traits_source = hub.resolve_safetensors_dir(face_traits, face_traits_revision,
                                                "face-trait model")
    made_for = {"cache_format_version": CACHE_FORMAT_VERSION,
                "personas": personas_fingerprint(root), "encoder": encoder.fingerprint,
                "generator": generator_fingerprint, "backbone": backbone,
                "backbone_fingerprint": backbone_fingerprint,
                "face_traits": traits_fingerprint(traits_source.fingerprint),
                "truncation": truncation, "truncation_centre": truncation_centre, "far": far,
                "voice_traits": voice_traits_fingerprint()}
    key = hashlib.sha256(json.dumps(list(made_for.values())).encode()).hexdigest()[:16]
    parent = Path(cache) / "personas"
    target = parent / key
    with storage.locked(parent):
        if (target / "mapper").is_dir():
            if not (target / prebuilt.MANIFEST).is_file():  # built before caches said so
                prebuilt.record(target, key, made_for)
            return target
        work = parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            backbone_source = {"name_or_path": backbone, "revision": backbone_revision}
            if prebuilt_caches is None or not _install(prebuilt_caches, made_for, work,
                                                       backbone_source, encoder.fingerprint,
                                                       generator_fingerprint):
                print(f"Building the persona gallery for these models (first start only) in "
                      f"{target}", file=sys.stderr)
                _build(root, encoder, generator, generator_fingerprint, work, far, truncation,
                       truncation_centre, backbone_source,
                       FaceTraitModel.from_pretrained(face_traits, face_traits_revision),
                       progress, report or _ignore)
                prebuilt.record(work, key, made_for)
            shutil.rmtree(target, ignore_errors=True)
            work.rename(target)
            storage.fsync_path(parent)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _install(source: PersonaCachesSpec, made_for: dict, work: Path, backbone: dict,
             encoder_fingerprint: str, generator_fingerprint: str) -> bool:
    """Whether the prebuilt caches at `source` were installed into `work` and read back by the
    loaders a start uses (face to voice described with `backbone`, {"name_or_path",
    "revision"}); when not, `work` is left empty and a warning says why."""
    where = source.repo + (f"@{source.revision}" if source.revision else "")
    try:
        prebuilt.install(source.repo, source.revision, made_for, work, backbone)
        load_derived(work, encoder_fingerprint, generator_fingerprint)
    except Exception as err:  # whatever is wrong with a download, building is the fallback:
        # a start never fails for prebuilt caches
        shutil.rmtree(work, ignore_errors=True)
        why = str(err) if isinstance(err, prebuilt.Unusable) else f"{type(err).__name__}: {err}"
        log.warning("Not using the prebuilt persona caches in %s: %s. Building them instead.",
                    where, why.rstrip("."))
        return False
    print(f"Installed the prebuilt persona caches from {where}", file=sys.stderr)
    return True


def voice_sex(persona: dict, wav: np.ndarray) -> tuple[str | None, str | None]:
    """A persona's voice's apparent sex and where it comes from: measured on its recording
    `wav` ("measured"), else, when the measurement is unsure, its declaration in
    personas.json ("declared"), else (None, None)."""
    try:
        measured = measure(wav, f"{persona['id']}'s recording").apparent_sex
    except AudioError:  # too little voiced speech to measure: the declaration may still say
        measured = None
    if measured is not None:
        return measured, "measured"
    declared = persona["voice"].get("sex")
    if declared is not None and declared not in SEXES:
        raise ValueError(f"personas.json gives {persona['id']} the voice sex {declared!r}; use "
                         f"one of {', '.join(map(repr, SEXES))} or leave it out.")
    return (declared, "declared") if declared else (None, None)


def choose_face_seed(seed: int, wanted: str | None, read: Callable[[int], FaceTraits],
                     tries: int = FACE_TRIES, who: str = "a persona"
                     ) -> tuple[int, FaceTraits, bool]:
    """The first of seed, seed + 1, ..., seed + tries - 1 whose face `read(seed)` reads with
    apparent sex `wanted`, its traits, and True; when none does (or `wanted` is None), `seed`
    with its traits and False (a warning names `who` when none of the tries agreed)."""
    first = read(seed)
    if wanted is None or first.apparent_sex == wanted:
        return seed, first, wanted is not None
    for candidate in range(seed + 1, seed + tries):
        traits = read(candidate)
        if traits.apparent_sex == wanted:
            return candidate, traits, True
    log.warning("None of %d faces (seeds %d-%d) reads as %s for %s, whose voice does; keeping "
                "seed %d.", tries, seed, seed + tries - 1, wanted, who, seed)
    return seed, first, False


def _ignore(stage: str, done: int, total: int) -> None:
    """A build's progress, told to nobody."""


def _build(root: Path, encoder: VoiceEncoder, generator: Generator, generator_fingerprint: str,
           out: Path, far: float, truncation: float, truncation_centre: str,
           backbone_source: dict, face_traits: FaceTraitModel, progress: bool,
           report: Report) -> None:
    started = time.perf_counter()
    personas = load_personas(root)
    resolution = min(FACE_RESOLUTION, generator.resolution)
    wavs = [load_audio(p["voice_file"], max_seconds=None) for p in personas]

    def centre_of(ws: list[torch.Tensor]) -> torch.Tensor:
        if truncation_centre != POPULATION:
            return generator.w_avg
        return torch.from_numpy(population_centre(np.stack([w[0].cpu().numpy() for w in ws]))
                                ).to(generator.w_avg)

    def render(w: torch.Tensor, centre: torch.Tensor, size: int) -> Image.Image:
        with torch.inference_mode():
            return to_pil(generator.synthesis(generator.truncate(w, truncation, centre),
                                              noise="const", resolution=size))[0]

    def latent(seed: int) -> torch.Tensor:
        with torch.inference_mode():
            return generator.seed_latents([seed], 1.0)

    # 1. each persona's face seed: the first whose face agrees with the voice's apparent sex
    first_centre = centre_of([latent(p["face"]["seed"]) for p in personas])
    small = min(CANDIDATE_RESOLUTION, resolution)
    choices, agreed = [], 0
    chose_started = time.perf_counter()
    report("faces", 0, len(personas))
    for persona, wav in tqdm(list(zip(personas, wavs)), desc="personas: faces that agree",
                             disable=not progress):
        wanted, source = voice_sex(persona, wav)
        seed, traits, agrees = choose_face_seed(
            persona["face"]["seed"], wanted,
            lambda s: face_traits([render(latent(s), first_centre, small)])[0],
            who=persona["id"])
        agreed += agrees
        choices.append((seed, traits, {"apparent_sex": wanted, "source": source}))
        report("faces", len(choices), len(personas))
    choose_seconds = time.perf_counter() - chose_started
    # 2. the chosen faces, truncated once toward the centre of the chosen latents
    ws = [latent(seed) for seed, _, _ in choices]
    centre = centre_of(ws)
    people = []
    renders = out / "renders"
    renders.mkdir(parents=True)
    for persona, wav, w, (seed, traits, sex) in tqdm(
            list(zip(personas, wavs, ws, choices)), desc="personas: voices and faces",
            disable=not progress):
        split = split_for_evaluation(len(wav))  # as `build` splits a single recording
        part_windows = encoder.embed_windows_many([wav[a:b] for _, a, b in split])
        part_traits = [window_trait_features(wav[a:b], encoder.config.window_seconds,
                                             encoder.config.hop_seconds) for _, a, b in split]
        image = render(w, centre, resolution)
        photo = renders / f"{persona['id']}.png"
        image.save(photo)
        people.append(Enrollee(
            persona["id"], persona["name"], np.concatenate(part_windows),
            [name for (name, *_), got in zip(split, part_windows) for _ in got], photo, image,
            w[0].cpu().numpy(), extra={"synthetic": True, "voice": persona["voice"],
                                       "face_seed": seed, "face_traits": traits.summary(),
                                       "voice_sex": sex, "truncation": truncation},
            window_traits=np.concatenate(part_traits)))
        report("people", len(people), len(personas))
    report("models", len(people), len(personas))
    backbone = Backbone.from_pretrained(backbone_source["name_or_path"],
                                        backbone_source["revision"])
    made = assemble(people, out, Models(encoder.fingerprint, encoder.dim, generator_fingerprint,
                                        generator.style_dim, backbone, backbone_source),
                    far=far, mapper_options=SMALL_MAPPER, progress=progress)
    shutil.rmtree(renders)  # the gallery keeps its own content-addressed copies
    storage.write_json(out / "build.json", {
        "personas": len(personas), "seconds": round(time.perf_counter() - started, 1),
        "face2voice_seconds": round(made.seconds["face2voice"], 1),
        "face_resolution": resolution, "faces_agreeing_with_voices": agreed,
        "face_choice_seconds": round(choose_seconds, 1),
        "mapper_best_epoch": made.mapper.best_epoch,
        "mapper_val_loss": made.mapper.val_loss,
        "mapper_baseline_val_loss": made.mapper.baseline_val_loss,
        "face2voice_mapper": made.face2voice,
    })

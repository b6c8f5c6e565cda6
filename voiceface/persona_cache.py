"""The personas' derived caches: the personas (`voiceface.personas`) as one source of people
for the recipe every bundle shares (`voiceface.assemble`).

Embeddings, the search index, latents, face renders, the mapper and face to voice depend on
the encoder, the generator and the perceptual backbone, so they are caches: `persona_bundle`
builds them once per (personas, encoder, generator, backbone, truncation and its centre)
fingerprint into a writable directory and reuses them on the next start.
Each persona has one recording, split in time as `build` splits a single recording
(`voiceface.voice.split_for_evaluation`: the first 70 %, about 7 s, and the last 30 %, about
3 s, each one encoder window); the gallery pools both parts' windows.
The gallery's open-set threshold is calibrated then (`voiceface.calibration.calibrate_windows`):
each window is scored against the other personas, one best score per window. Two windows
each, 48 personas give 96 trials, too few to measure 1 % (the finest rate is 1/96): the
threshold then accepts none of them, and its record says so. The verification threshold is
calibrated at the same rate (`voiceface.verification.calibrate_windows`): each window against
every other persona (96 x 47 non-mated trials), and against its own persona enrolled from
the other part of the recording (96 mated trials).
Face to voice (`voiceface.face2voice`) describes each persona's displayed face with the
bundle's backbone and trains the reverse mapper onto the personas' voices, as `build` does;
the generator's faces are aligned as FFHQ is, so they are used as rendered.
A persona's stored latent is the generator's untruncated w for its seed, like an inverted
photo's; its displayed face is drawn from that w truncated once by the bundle's truncation,
toward the bundle's truncation centre (the personas' population centre, or the generator's
w_avg), exactly as the pipeline draws it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import hub, storage
from .assemble import Enrollee, Models, assemble
from .audio import load_audio
from .invert import Backbone
from .mapper import SMALL_MAPPER
from .personas import load_personas, personas_fingerprint
from .population import POPULATION, population_centre
from .stylegan2 import Generator, to_pil
from .thresholds import FALSE_ALARM_RATE
from .trait_inputs import traits_fingerprint, window_trait_features
from .voice import VoiceEncoder, split_for_evaluation

FACE_RESOLUTION = 512  # px; gallery photos of the personas (the preview is 256 px)
CACHE_FORMAT_VERSION = 6  # part of the cache key: raised when what a cache holds changes


def persona_bundle(root: str | Path, encoder: VoiceEncoder, generator: Generator,
                   generator_fingerprint: str, cache: str | Path, *, truncation: float,
                   truncation_centre: str = POPULATION, far: float = FALSE_ALARM_RATE,
                   backbone: str, backbone_revision: str | None, progress: bool = True) -> Path:
    """The directory holding `gallery/`, `mapper/` and `face2voice/` of the personas for
    these models.

    `truncation` is the psi the pipeline draws faces at and `truncation_centre` what toward
    ("population" or "generator", `voiceface.pipeline.VoiceFace.centre`); the personas'
    displayed faces are drawn so too. `backbone` (a Hub id at `backbone_revision`, or a
    local directory) describes their faces for face to voice. Built on first use (a few
    minutes with full-size models on 2 CPU cores) into `cache/personas/<key>`, where the key
    hashes the personas' content, the models' fingerprints, the backbone's name and
    fingerprint, the truncation, its centre, the thresholds' target false-alarm rate
    `far` and how voice traits are measured; later calls, and later processes, reuse it.
    """
    root = Path(root)
    if hub.is_local(backbone):  # face2voice/ names it: a path that holds from any directory
        backbone = str(Path(backbone).expanduser().resolve())
    backbone_fingerprint = hub.resolve_safetensors_dir(backbone, backbone_revision,
                                                       "perceptual backbone").fingerprint
    key = hashlib.sha256(json.dumps([CACHE_FORMAT_VERSION, personas_fingerprint(root),
                                     encoder.fingerprint, generator_fingerprint,
                                     backbone, backbone_fingerprint, truncation,
                                     truncation_centre, far, traits_fingerprint()]
                                    ).encode()).hexdigest()[:16]
    parent = Path(cache) / "personas"
    target = parent / key
    with storage.locked(parent):
        if (target / "mapper").is_dir():
            return target
        print(f"Building the persona gallery for these models (first start only) in {target}",
              file=sys.stderr)
        work = parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            _build(root, encoder, generator, generator_fingerprint, work, far, truncation,
                   truncation_centre, {"name_or_path": backbone, "revision": backbone_revision},
                   progress)
            shutil.rmtree(target, ignore_errors=True)
            work.rename(target)
            storage.fsync_path(parent)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _build(root: Path, encoder: VoiceEncoder, generator: Generator, generator_fingerprint: str,
           out: Path, far: float, truncation: float, truncation_centre: str,
           backbone_source: dict, progress: bool) -> None:
    started = time.perf_counter()
    personas = load_personas(root)
    resolution = min(FACE_RESOLUTION, generator.resolution)
    people = []
    renders = out / "renders"
    renders.mkdir(parents=True)
    with torch.inference_mode():  # every latent first: faces are truncated toward their centre
        ws = [generator.seed_latents([p["face"]["seed"]], 1.0) for p in personas]
    centre = generator.w_avg if truncation_centre != POPULATION else torch.from_numpy(
        population_centre(np.stack([w[0].cpu().numpy() for w in ws]))).to(generator.w_avg)
    for persona, w in tqdm(list(zip(personas, ws)), desc="personas: voices and faces",
                           disable=not progress):
        wav = load_audio(persona["voice_file"], max_seconds=None)
        split = split_for_evaluation(len(wav))  # as `build` splits a single recording
        part_windows = encoder.embed_windows_many([wav[a:b] for _, a, b in split])
        part_traits = [window_trait_features(wav[a:b], encoder.config.window_seconds,
                                             encoder.config.hop_seconds) for _, a, b in split]
        with torch.inference_mode():
            image = to_pil(generator.synthesis(generator.truncate(w, truncation, centre),
                                               noise="const", resolution=resolution))[0]
        photo = renders / f"{persona['id']}.png"
        image.save(photo)
        people.append(Enrollee(
            persona["id"], persona["name"], np.concatenate(part_windows),
            [name for (name, *_), got in zip(split, part_windows) for _ in got], photo, image,
            w[0].cpu().numpy(), extra={"synthetic": True, "voice": persona["voice"],
                                       "face_seed": persona["face"]["seed"],
                                       "truncation": truncation},
            window_traits=np.concatenate(part_traits)))
    backbone = Backbone.from_pretrained(backbone_source["name_or_path"],
                                        backbone_source["revision"])
    made = assemble(people, out, Models(encoder.fingerprint, encoder.dim, generator_fingerprint,
                                        generator.style_dim, backbone, backbone_source),
                    far=far, mapper_options=SMALL_MAPPER, progress=progress)
    shutil.rmtree(renders)  # the gallery keeps its own content-addressed copies
    storage.write_json(out / "build.json", {
        "personas": len(personas), "seconds": round(time.perf_counter() - started, 1),
        "face2voice_seconds": round(made.seconds["face2voice"], 1),
        "face_resolution": resolution, "mapper_best_epoch": made.mapper.best_epoch,
        "mapper_val_loss": made.mapper.val_loss,
        "mapper_baseline_val_loss": made.mapper.baseline_val_loss,
        "face2voice_mapper": made.face2voice,
    })

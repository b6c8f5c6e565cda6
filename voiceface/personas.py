"""The default gallery: 48 clearly synthetic personas, and the caches derived from them.

A persona is a text-to-speech voice recipe (free voices from Debian packages: espeak-ng,
flite, festival) and a StyleGAN2 seed: the face is the generator's own, so its latent is
exact. Which voice goes with which face is arbitrary: the personas show that the app works,
not that a voice predicts a face.

    assets/personas/personas.json     id, name, voice recipe, text, face seed
    assets/personas/voices/<id>.opus  the synthesised recordings (`write_voices` remakes them)

The personas are one source of people for the recipe every bundle shares (`voiceface.assemble`).
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
calibrated at the same rate (`voiceface.verify.calibrate_windows`): each window against
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
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from . import hub, storage
from .audio import SAMPLE_RATE, load_audio
from .calibration import FALSE_ALARM_RATE
from .gallery import POPULATION, population_centre
from .invert import Backbone
from .mapper import SMALL_MAPPER
from .stylegan2 import Generator, to_pil
from .voice import VoiceEncoder, split_for_evaluation

PERSONAS_FILE = "personas.json"
VOICES_DIR = "voices"
VOICE_SUFFIX = ".opus"  # Ogg Opus at 16 kHz: ~35 kB per 10 s recording
VOICE_RMS_DBFS = -20.0  # loudness every recording is normalised to
MAX_VOICE_SECONDS = 10.0  # s: one encoder window, so the first start embeds each voice once
CUT_SEARCH_SECONDS = 2.0  # s before the limit searched for the quietest place to cut
FACE_RESOLUTION = 512  # px; gallery photos of the personas (the preview is 256 px)
CACHE_FORMAT_VERSION = 5  # part of the cache key: raised when what a cache holds changes
EXAMPLES = 6  # persona recordings offered as examples in the app
TTS_TIMEOUT = 60  # s per synthesis command


class PersonaError(ValueError):
    """The personas folder is incomplete or a voice cannot be synthesised."""


def load_personas(root: str | Path) -> list[dict]:
    """The personas listed in `root/personas.json`, each with its recording's path."""
    root = Path(root)
    spec_path = root / PERSONAS_FILE
    if not spec_path.is_file():
        raise PersonaError(f"No {PERSONAS_FILE} in {root}; point the bundle's `personas` at "
                           "the folder that holds it (the app's assets/personas).")
    personas = json.loads(spec_path.read_text())["personas"]
    ids = [p["id"] for p in personas]
    if len(set(ids)) != len(ids):
        raise PersonaError(f"{spec_path} lists an id twice; ids must be unique.")
    truncated = [p["id"] for p in personas if "truncation" in p["face"]]
    if truncated:
        raise PersonaError(f"{spec_path} gives {', '.join(truncated)} a face truncation; faces "
                           "are drawn at the bundle's truncation (bundle.json \"truncation\"). "
                           "Remove \"truncation\" from their \"face\".")
    return [dict(p, voice_file=root / VOICES_DIR / f"{p['id']}{VOICE_SUFFIX}")
            for p in personas]


def personas_fingerprint(root: str | Path) -> str:
    """A content hash of personas.json and every recording it names."""
    root = Path(root)
    digest = hashlib.sha256((root / PERSONAS_FILE).read_bytes())
    for persona in load_personas(root):
        if not persona["voice_file"].is_file():
            raise PersonaError(f"{persona['voice_file']} is missing; regenerate the voices "
                               "with `python -m voiceface persona-voices`.")
        digest.update(persona["id"].encode())
        digest.update(persona["voice_file"].read_bytes())
    return digest.hexdigest()[:16]


def example_voices(root: str | Path, n: int = EXAMPLES) -> list[Path]:
    """A few persona recordings, spread over the list, for the app's examples."""
    personas = load_personas(root)
    step = max(1, len(personas) // n)
    return [p["voice_file"] for p in personas[::step][:n] if p["voice_file"].is_file()]


# -- voices -------------------------------------------------------------------------------
def synthesize(recipe: dict, text: str) -> np.ndarray:
    """Speak `text` with a voice recipe; mono float32 at SAMPLE_RATE, trimmed and normalised.

    recipe: {"engine": "espeak-ng", "voice": "en-us+f3", "pitch": 0-99, "rate": words/min}
    or {"engine": "flite" | "festival", "voice": NAME, "pitch_ratio": r, "tempo": t}; the
    ratio shifts pitch and formants together (a smaller or larger speaker), tempo the speed.
    """
    engine = recipe["engine"]
    with tempfile.TemporaryDirectory(prefix="voiceface-tts-") as tmp:
        raw, text_file = Path(tmp) / "raw.wav", Path(tmp) / "text.txt"
        text_file.write_text(text)
        if engine == "espeak-ng":
            command = ["espeak-ng", "-v", recipe["voice"], "-p", str(recipe.get("pitch", 50)),
                       "-s", str(recipe.get("rate", 175)), "-f", str(text_file), "-w", str(raw)]
        elif engine == "flite":
            command = ["flite", "-voice", recipe["voice"], "-f", str(text_file), "-o", str(raw)]
        elif engine == "festival":
            command = ["text2wave", "-eval", f"(voice_{recipe['voice']})", "-o", str(raw),
                       str(text_file)]
        else:
            raise PersonaError(f"Unknown TTS engine {engine!r}; use espeak-ng, flite or "
                               "festival.")
        _run(command, engine)
        ratio, tempo = float(recipe.get("pitch_ratio", 1.0)), float(recipe.get("tempo", 1.0))
        shifted = Path(tmp) / "shifted.wav"
        # resample, play faster by `ratio` (pitch and formants up), then restore the tempo
        shift = (f"aresample={SAMPLE_RATE},asetrate={SAMPLE_RATE * ratio:.3f},"
                 f"aresample={SAMPLE_RATE},atempo={tempo / ratio:.5f}")
        _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(raw),
              "-af", shift, "-ac", "1", str(shifted)], "ffmpeg")
        wav = load_audio(shifted, max_seconds=None)
    wav = _cut(wav)
    return (wav * 10 ** (VOICE_RMS_DBFS / 20) / np.sqrt(np.mean(wav ** 2))).clip(-1, 1) \
        .astype(np.float32)


def _cut(wav: np.ndarray) -> np.ndarray:
    """At most MAX_VOICE_SECONDS, cut at the quietest 20 ms in the last CUT_SEARCH_SECONDS."""
    limit = int(MAX_VOICE_SECONDS * SAMPLE_RATE)
    if len(wav) <= limit:
        return wav
    frame = SAMPLE_RATE // 50
    start = limit - int(CUT_SEARCH_SECONDS * SAMPLE_RATE)
    energy = (wav[start:limit].reshape(-1, frame) ** 2).sum(1)
    return wav[: start + frame * (int(np.argmin(energy)) + 1)]


def write_voices(root: str | Path, progress: bool = True) -> list[Path]:
    """(Re)synthesise every persona's recording into `root/voices/` (needs the TTS packages:
    espeak-ng, flite, festival with festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts,
    and ffmpeg)."""
    personas = load_personas(root)
    (Path(root) / VOICES_DIR).mkdir(parents=True, exist_ok=True)
    written = []
    for persona in tqdm(personas, desc="synthesising voices", disable=not progress):
        wav = synthesize(persona["voice"], persona["text"])
        with tempfile.NamedTemporaryFile(suffix=VOICE_SUFFIX) as tmp:
            sf.write(tmp.name, wav, SAMPLE_RATE, format="OGG", subtype="OPUS")
            written.append(storage.write_bytes(persona["voice_file"], Path(tmp.name).read_bytes()))
    return written


def _run(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=TTS_TIMEOUT)
    except FileNotFoundError:
        raise PersonaError(f"{what} is not installed; install the Debian packages listed in "
                           "`voiceface.personas.write_voices`.") from None
    except subprocess.CalledProcessError as err:
        raise PersonaError(f"{what} failed: {err.stderr.decode(errors='replace').strip()}") \
            from None


# -- derived caches -----------------------------------------------------------------------
def persona_bundle(root: str | Path, encoder: VoiceEncoder, generator: Generator,
                   generator_fingerprint: str, cache: str | Path, *, truncation: float,
                   truncation_center: str = POPULATION, far: float = FALSE_ALARM_RATE,
                   backbone: str, backbone_revision: str | None, progress: bool = True) -> Path:
    """The directory holding `gallery/`, `mapper/` and `face2voice/` of the personas for
    these models.

    `truncation` is the psi the pipeline draws faces at and `truncation_center` what toward
    ("population" or "generator", `voiceface.pipeline.VoiceFace.centre`); the personas'
    displayed faces are drawn so too. `backbone` (a Hub id at `backbone_revision`, or a
    local directory) describes their faces for face to voice. Built on first use (a few
    minutes with full-size models on 2 CPU cores) into `cache/personas/<key>`, where the key
    hashes the personas' content, the models' fingerprints, the backbone's name and
    fingerprint, the truncation, its centre and the thresholds' target false-alarm rate
    `far`; later calls, and later processes, reuse it.
    """
    root = Path(root)
    if hub.is_local(backbone):  # face2voice/ names it: a path that holds from any directory
        backbone = str(Path(backbone).expanduser().resolve())
    backbone_fingerprint = hub.resolve_safetensors_dir(backbone, backbone_revision,
                                                       "perceptual backbone").fingerprint
    key = hashlib.sha256(json.dumps([CACHE_FORMAT_VERSION, personas_fingerprint(root),
                                     encoder.fingerprint, generator_fingerprint,
                                     backbone, backbone_fingerprint, truncation,
                                     truncation_center, far]).encode()).hexdigest()[:16]
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
                   truncation_center, {"name_or_path": backbone, "revision": backbone_revision},
                   progress)
            shutil.rmtree(target, ignore_errors=True)
            work.rename(target)
            storage.fsync_path(parent)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _build(root: Path, encoder: VoiceEncoder, generator: Generator, generator_fingerprint: str,
           out: Path, far: float, truncation: float, truncation_center: str,
           backbone_source: dict, progress: bool) -> None:
    # imported here: the assembler loads OpenCV (face to voice), which a start with a built
    # cache never needs
    from .assemble import Enrollee, Models, assemble

    started = time.perf_counter()
    personas = load_personas(root)
    resolution = min(FACE_RESOLUTION, generator.resolution)
    people = []
    renders = out / "renders"
    renders.mkdir(parents=True)
    with torch.inference_mode():  # every latent first: faces are truncated toward their centre
        ws = [generator.seed_latents([p["face"]["seed"]], 1.0) for p in personas]
    centre = generator.w_avg if truncation_center != POPULATION else torch.from_numpy(
        population_centre(np.stack([w[0].cpu().numpy() for w in ws]))).to(generator.w_avg)
    for persona, w in tqdm(list(zip(personas, ws)), desc="personas: voices and faces",
                           disable=not progress):
        wav = load_audio(persona["voice_file"], max_seconds=None)
        split = split_for_evaluation(len(wav))  # as `build` splits a single recording
        part_windows = encoder.embed_windows_many([wav[a:b] for _, a, b in split])
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
                                       "truncation": truncation}))
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

"""The default gallery's 48 clearly synthetic personas: their list and their voices.

A persona is a text-to-speech voice recipe (free voices from Debian packages: espeak-ng,
flite, festival) and a StyleGAN2 seed: the face is the generator's own, so its latent is
exact. Which voice goes with which face is arbitrary: the personas show that the app works,
not that a voice predicts a face.

    assets/personas/personas.json     id, name, voice recipe, text, face seed
    assets/personas/voices/<id>.opus  the synthesised recordings (`write_voices` remakes them)

Their derived caches (gallery, mapper, face to voice for given models) are built by
`voiceface.persona_cache`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from . import storage
from .audio import SAMPLE_RATE, load_audio

PERSONAS_FILE = "personas.json"
VOICES_DIR = "voices"
VOICE_SUFFIX = ".opus"  # Ogg Opus at 16 kHz: ~35 kB per 10 s recording
VOICE_RMS_DBFS = -20.0  # loudness every recording is normalised to
MAX_VOICE_SECONDS = 10.0  # s: one encoder window, so the first start embeds each voice once
CUT_SEARCH_SECONDS = 2.0  # s before the limit searched for the quietest place to cut
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

"""The personas' voices, synthesised with free text-to-speech voices from Debian packages
(espeak-ng, flite, festival) and ffmpeg: `write_voices(assets/personas)` remakes every
recording that `personas.json` describes (`python -m voiceface persona-voices`).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from . import storage
from .audio import SAMPLE_RATE, load_audio
from .personas import VOICE_SUFFIX, VOICES_DIR, PersonaError, load_personas

VOICE_RMS_DBFS = -20.0  # loudness every recording is normalised to
MAX_VOICE_SECONDS = 10.0  # s: one encoder window, so the first start embeds each voice once
CUT_SEARCH_SECONDS = 2.0  # s before the limit searched for the quietest place to cut
TTS_TIMEOUT = 60  # s per synthesis command


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
                           "`voiceface.persona_voices.write_voices`.") from None
    except subprocess.CalledProcessError as err:
        raise PersonaError(f"{what} failed: {err.stderr.decode(errors='replace').strip()}") \
            from None

"""The default bundle's 48 clearly synthetic personas: their list, read and checked.

A persona is a text-to-speech voice recipe (free voices from Debian packages: espeak-ng,
flite, festival) and a StyleGAN2 seed: the face is the generator's own, so its latent is
exact. The face shown is the first from that seed on whose apparent sex agrees with the
voice's (`voiceface.persona_cache`); nothing else pairs them: the personas show that the app
works and that a face can follow a voice's apparent sex, not that a voice predicts a face.

    assets/personas/personas.json     id, name, voice recipe, text, face seed
    assets/personas/voices/<id>.opus  the synthesised recordings (`voiceface.persona_voices`
                                      remakes them)

Their derived caches (gallery, mapper, face to voice for given models) are built by
`voiceface.persona_cache`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


PERSONAS_FILE = "personas.json"
VOICES_DIR = "voices"
VOICE_SUFFIX = ".opus"  # Ogg Opus at 16 kHz: ~35 kB per 10 s recording
EXAMPLES = 6  # persona recordings offered as examples in the app


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

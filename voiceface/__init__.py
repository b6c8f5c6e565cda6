"""voiceface: from a voice to the nearest enrolled person and a generated face.

    import voiceface
    vf = voiceface.load("index/")        # a bundle: a directory or a Hub repo id
    result = vf("clip.wav")              # path, bytes, or (sample_rate, samples)
    result.face.save("face.png"); result.best; result.matches

Importing this package does no work: no downloads, no model loading, no CUDA calls, not even
importing torch. Each public name is imported from its module on first use (PEP 562).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .audio import AudioError, load_audio
    from .gallery import Gallery
    from .pipeline import VoiceFace
    from .stylegan2 import Generator
    from .voice import VoiceEncoder

__version__ = "0.1.0"
__all__ = ["load", "VoiceFace", "load_audio", "AudioError", "VoiceEncoder", "Gallery",
           "Generator"]
_LAZY = {"VoiceFace": "pipeline", "load_audio": "audio", "AudioError": "audio",
         "VoiceEncoder": "voice", "Gallery": "gallery", "Generator": "stylegan2"}


def load(bundle: str | os.PathLike | None = None, **kwargs) -> VoiceFace:
    """The pipeline of a bundle: `VoiceFace.from_pretrained(bundle, **kwargs)` (a directory
    or Hub repo id; default $VOICEFACE_BUNDLE, else `index` in the current directory)."""
    from .pipeline import VoiceFace

    return VoiceFace.from_pretrained(bundle, **kwargs)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'voiceface' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

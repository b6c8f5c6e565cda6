"""What of a voice's traits a mapper takes (`voiceface.mapper`), measured per encoder window
and kept per person.

The features (`TRAIT_FEATURES`) come from `voiceface.traits`: log pitch (log Hz) and the
apparent-sex classifier's P(male) - 0.5 (signed, so that unsure voices sit at 0). They are
measured on each encoder window (`window_trait_features`), not once per recording: the
query is a short clip, and a mapper trained on short windows' traits learns how far a short
clip's traits can be trusted. A gallery person keeps two numbers of them
(`extra[TRAITS_KEY]`, `person_traits`): the mean pitch in Hz and the mean apparent-sex score,
for the live gallery's retraining; no audio is kept.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .audio import AudioError
from .traits import (FRAME_STEP, MIN_VOICED_SECONDS, PITCH_CEILING, PITCH_FLOOR, VoiceTraits,
                     classifier, measure)
from .voice import HOP_SECONDS, WINDOW_SECONDS, window_bounds

TRAIT_FEATURES = ("log_pitch_hz", "male_probability_minus_half")  # log Hz; probability
TRAITS_KEY = "voice_traits"  # in a gallery person's `extra`: {"pitch_hz", "sex_score"}


def trait_features(traits: VoiceTraits | None) -> np.ndarray:
    """The raw features [TRAIT_FEATURES] a mapper takes from a voice's traits: log pitch and
    P(male) - 0.5; NaN (unknown: the trained mean) for None (no voiced speech)."""
    if traits is None:
        return np.full(len(TRAIT_FEATURES), np.nan)
    return np.array([np.log(traits.pitch_hz), traits.male_probability - 0.5])


def window_trait_features(wav: np.ndarray, window_seconds: float = WINDOW_SECONDS,
                          hop_seconds: float = HOP_SECONDS) -> np.ndarray:
    """`trait_features` [n, TRAIT_FEATURES] of each encoder window of 16 kHz mono `wav` [T]
    (`voiceface.voice.window_bounds`: pass the encoder's window and hop), a NaN row for a
    window without voiced speech: row i goes with the encoder's window embedding i."""
    rows = []
    for start, end in window_bounds(len(wav), window_seconds, hop_seconds):
        try:
            rows.append(trait_features(measure(wav[start:end])))
        except AudioError:  # a window of silence or whisper: unknown
            rows.append(trait_features(None))
    return np.stack(rows)


def person_traits(window_traits: np.ndarray) -> dict | None:
    """The record a gallery person keeps (`extra[TRAITS_KEY]`) from their windows' features
    [n, TRAIT_FEATURES]: pitch in Hz (geometric mean of the windows') and the mean
    apparent-sex score P(male) - 0.5; None when no window had voiced speech."""
    t = np.asarray(window_traits, np.float64)
    t = t[~np.isnan(t).any(axis=1)]
    if not len(t):
        return None
    return {"pitch_hz": round(float(np.exp(t[:, 0].mean())), 2),
            "sex_score": round(float(t[:, 1].mean()), 4)}


def record_features(record: dict | None) -> np.ndarray:
    """`trait_features` [TRAIT_FEATURES] of a person's record (`person_traits`); NaN for
    None (a person enrolled before traits were kept)."""
    if record is None:
        return trait_features(None)
    return np.array([np.log(record["pitch_hz"]), record["sex_score"]])


def record_apparent_sex(record: dict | None) -> str | None:
    """A person's voice's apparent sex from their record (`person_traits`): the shipped
    classifier's decision on their windows' mean P(male); None when unsure or unrecorded."""
    if record is None:
        return None
    return classifier().decide(record["sex_score"] + 0.5)[0]


def voice_traits_fingerprint() -> str:
    """How voice traits are measured: the pitch tracker's settings and the apparent-sex
    classifier's weights. Caches of trait features are keyed by it; mappers record it."""
    settings = [PITCH_FLOOR, PITCH_CEILING, FRAME_STEP, MIN_VOICED_SECONDS,
                classifier().to_dict()]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

"""Voice traits measured from the signal: pitch, and an apparent-sex estimate.

    traits = voice_traits("clip.wav")   # path, bytes or (rate, samples), as `load_audio`
    traits.pitch_hz, traits.pitch_spread_hz, traits.apparent_sex, traits.confidence

Pitch is Praat's autocorrelation tracker (praat-parselmouth): the median F0 of the voiced
frames and its spread (interquartile range), in Hz. Apparent sex is a small logistic
regression over what voices carry beyond pitch: the pitch itself, the formants and the
vocal-tract length they imply, and the spectral envelope (MFCC means of the voiced frames).
Its weights are data shipped with the package (`data/voice_sex.json`, written by
`python -m benchmarks.traits`, which also reports its accuracy on held-out speakers). When
the classifier's probability is below the shipped threshold, the answer is None (unsure).

Apparent sex is how a voice tends to be heard (a perceptual trait of the voice, learnt from
recordings labelled with their speakers' recorded sex), never a statement about a person's
sex or gender identity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import parselmouth
import torch
import torchaudio

from .audio import SAMPLE_RATE, AudioError, AudioSource, load_audio

PITCH_FLOOR = 60.0  # Hz; below the lowest speaking voices (about 65 Hz)
PITCH_CEILING = 500.0  # Hz; above the highest speaking voices (children's reach ~400 Hz)
FRAME_STEP = 0.01  # s between analysis frames (pitch, formants, MFCC)
MIN_VOICED_SECONDS = 0.3  # s of voiced frames needed to say anything about a voice
FORMANTS = 4  # F1..F4 are measured
MAX_FORMANT = 5500.0  # Hz; Praat's advice for a mixed population of adult voices
FORMANT_COUNT = 5  # formants Burg's method looks for below MAX_FORMANT
MFCC_COEFFICIENTS = 13  # c0 (level) is dropped: it says how loud, not what voice
MFCC_WINDOW = 400  # samples (25 ms at 16 kHz)
MFCC_MELS = 40  # mel bands
CLASSIFIER_FILE = "voice_sex.json"  # in voiceface/data/
LABELS = ("female", "male")  # the classifier's 0 and 1
FEATURES = ("log_f0", "f0_iqr_semitones", "log_f1", "log_f2", "log_f3", "log_f4",
            "log_formant_spacing", *(f"mfcc{i}" for i in range(1, MFCC_COEFFICIENTS)),
            "log_f0_squared", "log_f0_x_log_formant_spacing")


@dataclass(frozen=True)
class VoiceTraits:
    """What a recording's voice carries. `apparent_sex` is None when the classifier is unsure;
    `confidence` is its probability of the more likely answer, in [0.5, 1];
    `male_probability` the classifier's continuous answer, which the mapper takes
    (`voiceface.mapper.trait_features`)."""

    pitch_hz: float  # median F0 of the voiced frames
    pitch_spread_hz: float  # interquartile range of F0 over the voiced frames
    apparent_sex: str | None  # "female", "male" or None (unsure)
    confidence: float
    male_probability: float  # p("male") of the classifier, in [0, 1]

    def summary(self) -> dict:
        """The keys of `python -m voiceface traits --json` and of `voice_traits` in
        `predict --json` and `/predict` (`male_probability` is for the mapper only)."""
        shown = {k: v for k, v in asdict(self).items() if k != "male_probability"}
        return {**shown, "pitch_hz": round(self.pitch_hz, 1),
                "pitch_spread_hz": round(self.pitch_spread_hz, 1),
                "confidence": round(self.confidence, 3)}


@dataclass(frozen=True)
class SexClassifier:
    """Logistic regression on standardised features: p(male) = sigmoid(bias + weights .
    (x - mean) / scale). Answers only at a confidence of at least `threshold`."""

    mean: np.ndarray  # [FEATURES]
    scale: np.ndarray  # [FEATURES]
    weights: np.ndarray  # [FEATURES]
    bias: float
    threshold: float  # probability of the likelier answer below which it says None
    fit: dict  # how it was fitted and measured (see benchmarks/traits.py)

    def probability_male(self, x: np.ndarray) -> np.ndarray:
        """x: [n, FEATURES] or [FEATURES] -> p(male) of the same leading shape."""
        z = self.bias + ((x - self.mean) / self.scale) @ self.weights
        return 1.0 / (1.0 + np.exp(-z))

    def decide(self, p_male: float) -> tuple[str | None, float]:
        """The answer ("female", "male" or None when unsure) and its confidence."""
        confidence = max(p_male, 1.0 - p_male)
        return (LABELS[int(p_male > 0.5)] if confidence >= self.threshold else None,
                confidence)

    def to_dict(self) -> dict:
        """The JSON form shipped in `data/` (lists of floats; feature names for checking)."""
        return {"features": list(FEATURES), "labels": list(LABELS),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias,
                "threshold": self.threshold, "fit": self.fit}

    @classmethod
    def from_dict(cls, data: dict) -> SexClassifier:
        """Read `to_dict`'s form; refuses one made for other features."""
        if data.get("features") != list(FEATURES) or data.get("labels") != list(LABELS):
            raise ValueError("The apparent-sex classifier was fitted on other features than "
                             "this version of voiceface measures; refit it with `python -m "
                             "benchmarks.traits`.")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "weights")}
        if any(a.shape != (len(FEATURES),) or not np.isfinite(a).all() for a in arrays.values()) \
                or not (arrays["scale"] > 0).all() or not 0.5 <= data["threshold"] <= 1:
            raise ValueError("The apparent-sex classifier's file is damaged (arrays of the "
                             "wrong shape or values out of range); refit it with `python -m "
                             "benchmarks.traits`.")
        return cls(**arrays, bias=float(data["bias"]), threshold=float(data["threshold"]),
                   fit=data.get("fit", {}))


@lru_cache(maxsize=1)
def classifier() -> SexClassifier:
    """The shipped apparent-sex classifier (`data/voice_sex.json`), read once."""
    text = resources.files("voiceface").joinpath("data", CLASSIFIER_FILE).read_text()
    return SexClassifier.from_dict(json.loads(text))


def voice_traits(audio: AudioSource) -> VoiceTraits:
    """Decode `audio` (with the limits of any query: `load_audio`) and measure its traits.
    Raises AudioError for unusable audio, or a recording without voiced speech."""
    return measure(load_audio(audio))


def measure(wav: np.ndarray, name: str = "The recording") -> VoiceTraits:
    """Traits of 16 kHz mono speech `wav` [T] float32 (as `load_audio` returns it). Raises
    AudioError when fewer than `MIN_VOICED_SECONDS` of it are voiced (whisper, noise)."""
    f0, x = voice_features(wav, name)
    model = classifier()
    p_male = float(model.probability_male(x))
    return VoiceTraits(float(np.median(f0)), float(np.subtract(*np.percentile(f0, [75, 25]))),
                       *model.decide(p_male), p_male)


def voice_features(wav: np.ndarray, name: str = "The recording"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The voiced frames' F0 [n] in Hz and the classifier's feature vector [FEATURES]:
    log median F0, F0 interquartile range in semitones, log median F1..F4, log formant
    spacing (the vocal tract's length, inverted), MFCC c1..c12 means over voiced frames, and
    two products: log F0 squared, log F0 times log formant spacing."""
    assert wav.ndim == 1, wav.shape
    sound = parselmouth.Sound(wav.astype(np.float64), SAMPLE_RATE)
    pitch = sound.to_pitch_ac(time_step=FRAME_STEP, pitch_floor=PITCH_FLOOR,
                              pitch_ceiling=PITCH_CEILING)
    f0 = pitch.selected_array["frequency"]
    voiced = f0 > 0
    if voiced.sum() * FRAME_STEP < MIN_VOICED_SECONDS:
        raise AudioError(f"{name} has only {voiced.sum() * FRAME_STEP:.2f} s of voiced speech "
                         f"(at least {MIN_VOICED_SECONDS:g} s is needed to measure a voice); "
                         "speak in your normal voice, not a whisper, near the microphone.")
    times = pitch.xs()[voiced]
    f0 = f0[voiced]
    formant = sound.to_formant_burg(time_step=FRAME_STEP, max_number_of_formants=FORMANT_COUNT,
                                    maximum_formant=MAX_FORMANT)
    formants = np.array([[formant.get_value_at_time(i, t) for t in times]
                         for i in range(1, FORMANTS + 1)])  # [FORMANTS, n], NaN where none
    medians = np.nanmedian(formants, axis=1)
    # a uniform tube closed at one end: F_i = (2i - 1) / 2 * spacing, spacing = c / (2 L)
    odd = (2 * np.arange(1, FORMANTS + 1) - 1) / 2
    spacing = float(medians @ odd / (odd @ odd))
    cepstra = _mfcc(wav)  # [frames, MFCC_COEFFICIENTS]
    rows = np.clip(np.round(times / FRAME_STEP).astype(int), 0, len(cepstra) - 1)
    log_f0, log_spacing = np.log(np.median(f0)), np.log(spacing)
    x = np.concatenate([
        [log_f0, 12 * np.subtract(*np.percentile(np.log2(f0), [75, 25]))],
        np.log(medians), [log_spacing], cepstra[rows, 1:].mean(axis=0),
        # pitch says less in the range both sexes share: let the model bend there, and weigh
        # pitch against the tract's length
        [log_f0 ** 2, log_f0 * log_spacing]])
    assert x.shape == (len(FEATURES),), x.shape
    return f0, x.astype(np.float64)


def _mfcc(wav: np.ndarray) -> np.ndarray:
    """MFCCs [frames, MFCC_COEFFICIENTS], one frame every FRAME_STEP s, frame i centred at
    i * FRAME_STEP s."""
    with torch.inference_mode():
        return _mfcc_transform()(torch.from_numpy(wav)).T.numpy().astype(np.float64)


@lru_cache(maxsize=1)
def _mfcc_transform() -> torchaudio.transforms.MFCC:
    return torchaudio.transforms.MFCC(
        SAMPLE_RATE, n_mfcc=MFCC_COEFFICIENTS,
        melkwargs={"n_fft": MFCC_WINDOW, "hop_length": int(FRAME_STEP * SAMPLE_RATE),
                   "n_mels": MFCC_MELS})

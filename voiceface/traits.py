"""Voice traits measured from the signal: pitch, and an apparent-sex estimate.

    traits = voice_traits("clip.wav")   # path, bytes or (rate, samples), as `load_audio`
    traits.pitch_hz, traits.pitch_spread_hz, traits.apparent_sex, traits.confidence

Everything is measured here in numpy (and torchaudio's MFCC), with no GPL code:
- Pitch: Boersma's (1993) autocorrelation method, written from the paper: per 10 ms frame
  the autocorrelation of a Hanning-windowed 3-period slice divided by the window's own
  autocorrelation, its peaks (parabolically interpolated) as F0 candidates with an octave
  cost, plus an unvoiced candidate, and a Viterbi path through them with octave-jump and
  voicing-change costs. On the 100 development speakers it makes no octave error against
  Praat's own tracker (median F0 within 0.8 Hz of it), at about 0.15 s per 10 s of speech.
  Chosen over librosa's pYIN (ISC; no octave error on 40 speakers, but 7 s per 10 s warm and
  255 s of numba compiling at its first call, on this loaded 2-core machine) and pyworld's
  harvest (MIT; one octave error, 3.6 s per 10 s); torchaudio's `detect_pitch_frequency` made
  10 octave errors. Praat itself (praat-parselmouth) is GPL-3.0, which an Apache-2.0 Space
  cannot ship.
- Formants: linear prediction (autocorrelation method, Levinson-Durbin, order 10 at 11 kHz:
  five formants below 5.5 kHz, as Praat's Burg default) on the voiced frames; the roots of
  each predictor give frequencies and bandwidths, and those narrower than MAX_BANDWIDTH are
  formants. F1-F4 fit to a uniform tube give the formant spacing (the vocal tract's length,
  inverted). On the 100 development speakers the median F1-F4 are 0-4 % from Praat's Burg
  formants (the median speaker; 90 % of speakers within 12 %), at 0.1 s per 5 s.
- Apparent sex: logistic regression on the median F0 and its spread, the formant spacing,
  the spectral envelope (MFCC c1-c12: means and standard deviations over the voiced frames)
  and two products of pitch with itself and with the spacing. In cross-validation by speaker
  the MFCC spreads helped most; F1-F4 one by one, voicing strength and training on extra
  3-6 s crops did not. Its numbers are data shipped with the package (`data/voice_sex.json`,
  written by `python -m benchmarks.traits`, which also reports its accuracy on held-out
  speakers). When the classifier's probability of its answer is below the shipped threshold,
  the answer is None (unsure).

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
import torch
import torchaudio

from .audio import SAMPLE_RATE, AudioError, AudioSource, load_audio

FRAME_STEP = 0.01  # s between analysis frames (pitch, formants, MFCC); frame i centred at i * step
MIN_VOICED_SECONDS = 0.3  # s of voiced frames needed to say anything about a voice
# Pitch (Boersma 1993; the values are Praat's defaults for its autocorrelation method)
PITCH_FLOOR = 60.0  # Hz; below the lowest speaking voices (about 65 Hz)
PITCH_CEILING = 500.0  # Hz; above the highest speaking voices (children's reach ~400 Hz)
PITCH_WINDOW_PERIODS = 3  # window length in periods of PITCH_FLOOR (50 ms)
PITCH_CANDIDATES = 15  # per frame, the unvoiced one included
SILENCE_THRESHOLD = 0.03  # frame peak / recording peak (full scale) below which it is silent
VOICING_THRESHOLD = 0.45  # normalised autocorrelation a voiced frame's peak must beat
OCTAVE_COST = 0.01  # per octave below the ceiling: favours the shortest of equal periods
OCTAVE_JUMP_COST = 0.35  # per octave of F0 change between neighbouring frames
VOICED_UNVOICED_COST = 0.14  # per change between voiced and unvoiced frames
# Formants (linear prediction)
FORMANTS = 4  # F1..F4 are measured
MAX_FORMANT = 5500.0  # Hz; Praat's advice for a mixed population of adult voices
LPC_ORDER = 10  # two poles per formant: five formants below MAX_FORMANT
LPC_RATE = int(2 * MAX_FORMANT)  # Hz, the rate the predictor is fitted at
LPC_WINDOW = 0.025  # s, Hamming window
PRE_EMPHASIS_FROM = 50.0  # Hz; first-order pre-emphasis above this (the spectrum's -6 dB/oct)
MIN_FORMANT = 50.0  # Hz; roots below this (or within it of MAX_FORMANT) are not formants
MAX_BANDWIDTH = 700.0  # Hz; wider roots are the predictor's spare poles, not formants
# Spectral envelope
MFCC_COEFFICIENTS = 13  # c0 (level) is dropped: it says how loud, not what voice
MFCC_WINDOW = 400  # samples (25 ms at 16 kHz)
MFCC_MELS = 40  # mel bands
CLASSIFIER_FILE = "voice_sex.json"  # in voiceface/data/
LABELS = ("female", "male")  # the classifier's 0 and 1
FEATURES = ("log_f0", "f0_iqr_semitones", "log_formant_spacing",
            *(f"mfcc{i}_mean" for i in range(1, MFCC_COEFFICIENTS)),
            *(f"mfcc{i}_std" for i in range(1, MFCC_COEFFICIENTS)),
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
    log median F0, F0 interquartile range in semitones, log formant spacing (median F1..F4
    fit to a uniform tube), MFCC c1..c12 means and standard deviations over the voiced
    frames, and two products: log F0 squared, log F0 times log formant spacing."""
    assert wav.ndim == 1, wav.shape
    f0 = pitch_track(wav)
    voiced = f0 > 0
    if voiced.sum() * FRAME_STEP < MIN_VOICED_SECONDS:
        raise AudioError(f"{name} has only {voiced.sum() * FRAME_STEP:.2f} s of voiced speech "
                         f"(at least {MIN_VOICED_SECONDS:g} s is needed to measure a voice); "
                         "speak in your normal voice, not a whisper, near the microphone.")
    frames = np.flatnonzero(voiced)
    f0 = f0[voiced]
    medians = np.nanmedian(formant_tracks(wav, frames), axis=0)  # [FORMANTS]
    if not np.isfinite(medians).all():  # too short or too odd for four formants
        raise AudioError(f"{name} has no measurable formants in its voiced speech; record "
                         "speech (not a tone or a hum), near the microphone.")
    # a uniform tube closed at one end: F_i = (2i - 1) / 2 * spacing, spacing = c / (2 L)
    odd = (2 * np.arange(1, FORMANTS + 1) - 1) / 2
    spacing = float(medians @ odd / (odd @ odd))
    cepstra = _mfcc(wav)  # [frames, MFCC_COEFFICIENTS]
    voiced_cepstra = cepstra[np.minimum(frames, len(cepstra) - 1), 1:]
    log_f0, log_spacing = np.log(np.median(f0)), np.log(spacing)
    x = np.concatenate([
        [log_f0, 12 * np.subtract(*np.percentile(np.log2(f0), [75, 25])), log_spacing],
        voiced_cepstra.mean(axis=0), voiced_cepstra.std(axis=0),
        # pitch says less in the range both sexes share: let the model bend there, and weigh
        # pitch against the tract's length
        [log_f0 ** 2, log_f0 * log_spacing]])
    assert x.shape == (len(FEATURES),), x.shape
    return f0, x.astype(np.float64)


def pitch_track(wav: np.ndarray) -> np.ndarray:
    """F0 in Hz of 16 kHz `wav` [T], one frame every FRAME_STEP s (frame i centred at
    i * FRAME_STEP s), 0 where unvoiced: Boersma's (1993) autocorrelation method with a
    Viterbi path (see the module's docstring; the constants above are its parameters)."""
    x = wav.astype(np.float64) - float(np.mean(wav))
    hop = round(FRAME_STEP * SAMPLE_RATE)
    count = len(x) // hop + 1
    length = round(PITCH_WINDOW_PERIODS / PITCH_FLOOR * SAMPLE_RATE)
    frames = _frames(x, length, hop, count)
    frames -= frames.mean(axis=1, keepdims=True)
    window = np.hanning(length + 2)[1:-1]
    size = 1 << int(np.ceil(np.log2(2 * length)))
    shortest, longest = int(SAMPLE_RATE / PITCH_CEILING), int(np.ceil(SAMPLE_RATE / PITCH_FLOOR))
    # the signal's autocorrelation: the windowed frame's, normalised, divided by the window's
    r = np.fft.irfft(np.abs(np.fft.rfft(frames * window, size)) ** 2, size)[:, :longest + 2]
    r_window = np.fft.irfft(np.abs(np.fft.rfft(window, size)) ** 2, size)[:longest + 2]
    energy = r[:, :1]
    r = np.divide(r, energy, out=np.zeros_like(r), where=energy > 0) / (r_window / r_window[0])
    # local maxima at lags shortest..longest, refined by a parabola through three lags
    before, at, after = (r[:, shortest - 1 + k:longest + k] for k in range(3))
    curvature = before - 2 * at + after
    shift = np.clip(np.divide(0.5 * (before - after), curvature, out=np.zeros_like(at),
                              where=curvature < 0), -0.5, 0.5)  # within half a lag at a peak
    height = at - 0.25 * (before - after) * shift
    height = np.where(height > 1, 1 / np.maximum(height, 1), height)  # a peak above 1 folds back
    lag = (np.arange(shortest, longest + 1)[None, :] + shift) / SAMPLE_RATE  # s
    frequency = 1 / lag
    is_peak = (at > before) & (at >= after) & (at > 0.5 * VOICING_THRESHOLD) \
        & (frequency >= PITCH_FLOOR) & (frequency <= PITCH_CEILING)
    strength = np.where(is_peak, height - OCTAVE_COST * np.log2(PITCH_FLOOR * lag), -np.inf)
    best = np.argsort(-strength, axis=1)[:, :PITCH_CANDIDATES - 1]
    strength = np.take_along_axis(strength, best, axis=1)
    frequency = np.where(np.isfinite(strength), np.take_along_axis(frequency, best, axis=1), 0)
    # the unvoiced candidate (frequency 0): strong where the frame is quiet or aperiodic
    peak = np.abs(frames).max(axis=1) / max(float(np.abs(x).max()), np.finfo(float).tiny)
    unvoiced = VOICING_THRESHOLD + np.maximum(
        0, 2 - peak / (SILENCE_THRESHOLD / (1 + VOICING_THRESHOLD)))
    strength = np.c_[unvoiced, np.where(np.isfinite(strength), strength, -np.inf)]
    frequency = np.c_[np.zeros(count), frequency]
    return frequency[np.arange(count), _viterbi(strength, frequency)]


def _viterbi(strength: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """The candidate path [frames] that maximises the summed strengths [frames, candidates]
    minus the transition costs between neighbouring frames' frequencies (0 = unvoiced)."""
    count, width = strength.shape
    voiced = frequency > 0
    log_f = np.log2(np.where(voiced, frequency, 1.0))
    score = strength[0].copy()
    back = np.zeros((count, width), dtype=np.int64)
    for t in range(1, count):
        both = voiced[t - 1][:, None] & voiced[t][None, :]
        cost = np.where(both, OCTAVE_JUMP_COST * np.abs(log_f[t - 1][:, None] - log_f[t][None, :]),
                        0.0)
        cost += VOICED_UNVOICED_COST * (voiced[t - 1][:, None] != voiced[t][None, :])
        total = score[:, None] - cost  # [from, to]
        back[t] = total.argmax(axis=0)
        score = total[back[t], np.arange(width)] + strength[t]
    path = np.empty(count, dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for t in range(count - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def formant_tracks(wav: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """F1..F4 in Hz [len(frames), FORMANTS] of 16 kHz `wav` [T] at the given frame indices
    (frame i centred at i * FRAME_STEP s), NaN where a frame has fewer formants: linear
    prediction at LPC_RATE, the lowest roots of each frame's predictor narrower than
    MAX_BANDWIDTH."""
    x = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wav, np.float32)),
                                       SAMPLE_RATE, LPC_RATE).numpy().astype(np.float64)
    x[1:] -= np.exp(-2 * np.pi * PRE_EMPHASIS_FROM / LPC_RATE) * x[:-1]
    length = round(LPC_WINDOW * LPC_RATE)
    hop = FRAME_STEP * LPC_RATE
    starts = np.round(frames * hop).astype(np.int64)  # in the signal padded by length // 2
    padded = np.pad(x, (length // 2, length))
    windowed = padded[np.minimum(starts[:, None] + np.arange(length), len(padded) - 1)] \
        * np.hamming(length)
    size = 1 << int(np.ceil(np.log2(2 * length)))
    r = np.fft.irfft(np.abs(np.fft.rfft(windowed, size)) ** 2, size)[:, :LPC_ORDER + 1]
    r[:, 0] = r[:, 0] * (1 + 1e-9) + np.finfo(float).tiny  # silent frames stay solvable
    # Levinson-Durbin over all frames at once: predictor a [frames, order + 1], a[:, 0] = 1
    a = np.zeros((len(frames), LPC_ORDER + 1))
    a[:, 0] = 1.0
    error = r[:, 0].copy()
    for i in range(1, LPC_ORDER + 1):
        k = -(a[:, :i] * r[:, i:0:-1]).sum(axis=1) / error
        a[:, 1:i + 1] += k[:, None] * a[:, i - 1::-1]
        error *= 1 - k ** 2
    companion = np.zeros((len(frames), LPC_ORDER, LPC_ORDER))
    companion[:, 0, :] = -a[:, 1:]
    companion[:, np.arange(1, LPC_ORDER), np.arange(LPC_ORDER - 1)] = 1.0
    roots = np.linalg.eigvals(companion)
    hz = np.angle(roots) * LPC_RATE / (2 * np.pi)
    bandwidth = -np.log(np.abs(roots)) * LPC_RATE / np.pi
    formant = (hz > MIN_FORMANT) & (hz < MAX_FORMANT - MIN_FORMANT) & (bandwidth < MAX_BANDWIDTH)
    hz = np.sort(np.where(formant, hz, np.inf), axis=1)[:, :FORMANTS]
    return np.where(np.isfinite(hz), hz, np.nan)


def _frames(x: np.ndarray, length: int, hop: int, count: int) -> np.ndarray:
    """[count, length] slices of `x`, slice i centred at sample i * hop (zeros outside)."""
    padded = np.pad(x, (length // 2, length // 2 + hop * count))
    return padded[np.arange(count)[:, None] * hop + np.arange(length)[None, :]]


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

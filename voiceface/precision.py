"""Which precision the voice encoder embeds visitors' voices in, checked on the bundle's own
voices when the app starts.

A reduced-precision encoder (bf16 autocast, or int8 dynamic quantisation on the CPU) embeds a
voice about 1.7x faster on a CPU with bf16 instructions, but its embeddings differ slightly
from fp32's. The gallery is fp32's; a query embedded in reduced precision can search it when
its embeddings stay close enough. Whether they do depends on the weights, so the check is
made where the weights are, at every start:

    decision = settle(vf, "auto")    # after the gallery exists
    decision.describe()              # the figures, for the log

`settle` embeds up to `MAX_VOICES` of the bundle's voices (their first `CLIP_SECONDS`) with
fp32 and with each reduced precision, timed round-robin, and switches `vf.query_encoder` to
the fastest reduced one only if every embedding is within cosine `MIN_COSINE` of fp32's,
every voice's nearest person in the gallery is the same, and it is at least `MIN_SPEEDUP`
times as fast. The encoder keeps the fp32 fingerprint, so the gallery, its caches and
everything enrolled stay fp32's (`VoiceEncoder.with_precision`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, AudioError, load_audio
from .bundle import BundleSpec
from .gallery import Gallery
from .pipeline import VoiceFace
from .voice import VoiceEncoder

CHOICES = ("auto", "fp32", "bf16", "int8")  # what may be asked for (`--precision`)
REDUCED = ("bf16", "int8")  # the reduced precisions `auto` tries (int8: CPU only)
PRECISION_VAR = "VOICEFACE_PRECISION"  # the app's environment variable for `--precision`
MIN_COSINE = 0.999  # lowest cosine to fp32's embedding any checked voice may have
MIN_SPEEDUP = 1.1  # x fp32's speed a reduced precision must reach to be worth switching to
MAX_VOICES = 12  # voices checked, spread over the bundle's people
MIN_VOICES = 3  # voices checked even when the time budget is spent
CLIP_SECONDS = 5.0  # s of each voice embedded: a visitor's typical recording
BUDGET_SECONDS = 10.0  # s of checking after which no further voice is started

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionCheck:
    """How one reduced precision compared with fp32 on the voices it was run on."""

    precision: str  # "bf16" or "int8"
    cosines: tuple[float, ...]  # per voice: cosine of its embedding to fp32's
    same_nearest: tuple[bool, ...]  # per voice: the gallery's nearest person is fp32's
    seconds: float  # median s per voice in this precision
    fp32_seconds: float  # median s per voice in fp32, timed alongside
    min_cosine: float = MIN_COSINE  # what every cosine had to reach

    @property
    def voices(self) -> int:
        """How many voices were compared."""
        return len(self.cosines)

    @property
    def lowest_cosine(self) -> float:
        """The lowest cosine to fp32 over the voices."""
        return min(self.cosines)

    @property
    def agree(self) -> int:
        """How many voices kept fp32's nearest person."""
        return sum(self.same_nearest)

    @property
    def speedup(self) -> float:
        """fp32's time per voice over this precision's (above 1: faster)."""
        return self.fp32_seconds / self.seconds

    @property
    def accurate(self) -> bool:
        """Every voice within `min_cosine` of fp32 and with fp32's nearest person."""
        return self.voices > 0 and self.lowest_cosine >= self.min_cosine and \
            self.agree == self.voices

    def describe(self) -> str:
        """One line of figures, for the log."""
        return (f"{self.precision}: lowest cosine to fp32 {self.lowest_cosine:.5f} (needs "
                f"{self.min_cosine}), same nearest person {self.agree}/{self.voices}, "
                f"{self.seconds:.3f} s a voice against fp32's {self.fp32_seconds:.3f} s "
                f"({self.speedup:.2f}x)")


@dataclass(frozen=True)
class PrecisionDecision:
    """What visitors' voices are embedded in, and why."""

    precision: str  # "fp32", "bf16" or "int8"
    how: str  # "checked" (by `settle`), "configured" (asked for), "quantized" (the
    # encoder itself is int8: `quantize=True`), "no voices" (nothing to check on: fp32)
    checks: tuple[PrecisionCheck, ...] = ()  # the reduced precisions compared, when checked
    min_speedup: float = MIN_SPEEDUP  # x fp32's speed a checked precision had to reach

    @property
    def chosen(self) -> PrecisionCheck | None:
        """The check that the chosen reduced precision passed (None: fp32, or not checked)."""
        return next((c for c in self.checks if c.precision == self.precision), None)

    @property
    def best(self) -> PrecisionCheck | None:
        """The check to show: the chosen one, else the closest to passing (highest cosine)."""
        return self.chosen or max(self.checks, key=lambda c: c.lowest_cosine, default=None)

    def describe(self) -> str:
        """The decision and its figures in one line, for the log."""
        if self.how == "configured":
            return f"voice encoder precision: {self.precision}, as configured (not checked)"
        if self.how == "quantized":
            return ("voice encoder precision: int8, the encoder's own (quantize: the gallery "
                    "is embedded in int8 too; not checked)")
        if self.how == "no voices":
            return ("voice encoder precision: fp32 (the bundle has no voices to check a "
                    "reduced precision on)")
        verdict = (f"{self.precision}, checked on the bundle's voices" if self.chosen else
                   "fp32: no reduced precision was close enough to fp32 on the bundle's "
                   f"voices and at least {self.min_speedup:g}x as fast")
        return f"voice encoder precision: {verdict}; " + "; ".join(
            c.describe() for c in self.checks)


def sample_voices(spec: BundleSpec, n: int = MAX_VOICES,
                  seconds: float = CLIP_SECONDS) -> list[np.ndarray]:
    """Up to `n` of the bundle's own recordings (`spec.voice_samples()`, else its examples),
    spread evenly over its people, each cut to its first `seconds` of 16 kHz samples [T].
    Recordings that cannot be read are left out."""
    paths = [path for _, path in sorted(spec.voice_samples().items())] or list(spec.examples)
    if len(paths) > n:
        paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, n).round()]
    wavs = []
    for path in paths:
        try:
            wavs.append(load_audio(path)[:int(seconds * SAMPLE_RATE)])
        except AudioError as err:
            log.warning("precision check: leaving out %s: %s", path.name, err)
    return wavs


def compare(encoder: VoiceEncoder, candidates: Mapping[str, VoiceEncoder],
            wavs: Sequence[np.ndarray], gallery: Gallery, *, min_cosine: float = MIN_COSINE,
            budget: float = BUDGET_SECONDS) -> list[PrecisionCheck]:
    """Each candidate's embeddings of `wavs` against fp32 `encoder`'s: cosine, nearest person
    in `gallery`, time. The encoders take turns on each voice (after one untimed warm-up call
    each), so load from other work falls on all alike; a candidate stops at its first voice
    out of tolerance; no voice is started after `budget` s once `MIN_VOICES` are done."""
    if not wavs:
        raise ValueError("No voices to compare the precisions on.")
    start = time.perf_counter()
    for enc in (encoder, *candidates.values()):
        enc.embed(wavs[0])
    times: dict[str, list[float]] = {name: [] for name in ("fp32", *candidates)}
    cosines: dict[str, list[float]] = {name: [] for name in candidates}
    same: dict[str, list[bool]] = {name: [] for name in candidates}
    for i, wav in enumerate(wavs):
        if i >= MIN_VOICES and time.perf_counter() - start > budget:
            break
        running = [name for name in candidates if all(same[name]) and
                   all(c >= min_cosine for c in cosines[name])]
        if not running:
            break
        clock = time.perf_counter()
        reference = encoder.embed(wav)
        times["fp32"].append(time.perf_counter() - clock)
        nearest = gallery.search(reference, k=1)[0].id
        for name in running:
            clock = time.perf_counter()
            embedding = candidates[name].embed(wav)
            times[name].append(time.perf_counter() - clock)
            cosines[name].append(float(embedding @ reference))
            same[name].append(gallery.search(embedding, k=1)[0].id == nearest)
    fp32_seconds = float(np.median(times["fp32"]))
    return [PrecisionCheck(name, tuple(cosines[name]), tuple(same[name]),
                           float(np.median(times[name])), fp32_seconds, min_cosine)
            for name in candidates]


def choose(checks: Sequence[PrecisionCheck], min_speedup: float = MIN_SPEEDUP
           ) -> PrecisionCheck | None:
    """The fastest accurate check at least `min_speedup` times fp32's speed (None: fp32)."""
    fit = [c for c in checks if c.accurate and c.speedup >= min_speedup]
    return max(fit, key=lambda c: c.speedup, default=None)


def settle(vf: VoiceFace, requested: str = "auto", *,
           candidates: Mapping[str, VoiceEncoder] | None = None,
           wavs: Sequence[np.ndarray] | None = None, min_cosine: float = MIN_COSINE,
           min_speedup: float = MIN_SPEEDUP, budget: float = BUDGET_SECONDS
           ) -> PrecisionDecision:
    """Choose the precision `vf` embeds visitors' voices in and serve queries with it
    (`vf.serve_queries_with`); log the decision and return it.

    `requested`: "fp32" keeps fp32; "bf16" or "int8" use it unchecked; "auto" checks the
    reduced precisions (`candidates`, default `vf.encoder.with_precision(p)` for each of
    `REDUCED` the device runs) on `wavs` (default `sample_voices(vf.spec)`) against the
    gallery and takes the fastest that passes (`compare`, `choose`), else keeps fp32. An
    encoder quantised at loading (`quantize=True`, its own fingerprint) stays as it is.
    """
    if requested not in CHOICES:
        raise ValueError(f"precision {requested!r} is not one of {', '.join(CHOICES)}.")
    if vf.encoder.config.quantize:
        if requested not in ("auto", "int8"):
            raise ValueError(f"The voice encoder was loaded in int8 (quantize), so its "
                             f"queries cannot run in {requested}; load it without quantize "
                             f"to choose a precision.")
        decision = PrecisionDecision("int8", "quantized")
    elif requested != "auto":
        vf.serve_queries_with(vf.encoder.with_precision(requested))
        decision = PrecisionDecision(requested, "configured")
    else:
        wavs = sample_voices(vf.spec) if wavs is None else wavs
        if not wavs:
            decision = PrecisionDecision("fp32", "no voices")
        else:
            if candidates is None:
                runs = REDUCED if vf.encoder.device.type == "cpu" else ("bf16",)
                candidates = {p: vf.encoder.with_precision(p) for p in runs}
            checks = tuple(compare(vf.encoder, candidates, wavs, vf.gallery,
                                   min_cosine=min_cosine, budget=budget))
            best = choose(checks, min_speedup)
            if best is not None:
                vf.serve_queries_with(candidates[best.precision])
            decision = PrecisionDecision(best.precision if best else "fp32", "checked", checks,
                                         min_speedup)
    log.info(decision.describe())
    return decision

"""1:1 verification: is this voice really the person it claims to be?

    result = vf.verify("clip.wav", "dev03")
    result.accepted, result.score, result.threshold, result.far, result.frr

**Scores.** A raw cosine between a voice and the claimed person's embedding drifts per
person and per recording: a voice near everybody scores high against everybody. Adaptive
symmetric normalisation (AS-norm; Cumani et al., Interspeech 2011; Matějka et al.,
Interspeech 2017) measures both sides of a trial against a cohort of impostors. For the
claimed person's embedding e, the voice t and their cosine s:

    s_norm = 0.5 * ((s - mean_e) / std_e + (s - mean_t) / std_t)

where mean_e, std_e are the mean and (population) standard deviation of the K highest
cosines of e against the cohort, and mean_t, std_t those of t. A normalised score counts
cohort standard deviations above the nearest impostors, so one threshold means the same for
everyone. The cohort is the other enrolled people's embeddings, never the claimed person's.
K = min(`COHORT_TOP_K`, cohort size): 200, a few hundred of the nearest impostors as AS-norm
is run with cohorts of thousands; a gallery of up to 201 people thus uses its whole cohort
(plain symmetric normalisation); whether another K scores better is for `eval` to measure.

**Trials.** The threshold is measured, never assumed (`VerificationCalibration`). A
non-mated trial is a recording window of person p scored against the enrollment of another
person q (the claim), as if p were not enrolled: p is left out of the cohort too, like the
open-set calibration's trials (`voiceface.calibration`). Leaving both out needs
`MIN_COHORT` others, so galleries of fewer than `MIN_COHORT + 2` people score raw cosines
(the result's `method` says so). A mated trial is a window of person p against p's
enrollment pooled from p's *other* recordings (or the other part of a recording split in
time): leave one recording out, not one window, because windows overlap by half and a
neighbouring window would have heard the trial's audio. People with a single unsplit
recording give no mated trial. A live gallery keeps one embedding per person and no
recordings, so there every trial is non-mated and the false-reject rate is unmeasured
(None).

The threshold accepts (`score >= threshold`) at most a target share of the non-mated trials
(`voiceface.calibration.threshold_at_far`; by default the build's `--far`, 1 %); the rate it
achieved and the false-reject rate on the mated trials are reported with their trial counts.
Without a measurement (a gallery saved before verification, or changed since without
recalibrating) the placeholders `DEFAULT_NORM_THRESHOLD` and `DEFAULT_RAW_THRESHOLD` are
used and the result says so. Calibration scores every trial against every claim: its cost
grows with people^2 x trials, which is seconds for galleries of a few hundred people.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from .calibration import FALSE_ALARM_RATE
from .gallery import Gallery
from .metrics import threshold_at_far
from .thresholds import Calibrations, VerificationCalibration


AS_NORM, RAW = "as-norm", "raw-cosine"  # what a score is
COHORT_TOP_K = 200  # cohort scores averaged per side (K); fewer when the cohort is smaller
MIN_COHORT = 2  # cohort members needed for a standard deviation
STD_FLOOR = 1e-3  # cosine; a cohort whose top scores all but coincide carries no scale
DEFAULT_NORM_THRESHOLD = 3.0  # AS-norm; unmeasured placeholder: 3 cohort std above the impostors
DEFAULT_RAW_THRESHOLD = 0.70  # cosine; unmeasured placeholder, as the open-set one
MAX_IDS_SHOWN = 20  # ids listed in an unknown-claim message
BUILD_METHOD = ("mated: each window against its person's enrollment from their other "
                "recordings; non-mated: each window against every other person, its own "
                "person left out of the cohort")
LIVE_METHOD = ("non-mated: each enrolled person's embedding against every other person, "
               "its own person left out of the cohort; no mated trials (a live gallery keeps "
               "one embedding per person, no recordings)")


class UnknownClaim(ValueError):
    """The claimed person is not enrolled; the message lists who is."""


@dataclass(frozen=True)
class TrialScores:
    """Scores of one kind (`AS_NORM` or `RAW`) of a set of trials."""

    mated: np.ndarray  # [M] each test against its own person's enrollment
    non_mated: np.ndarray  # [T'] each test against every other person


@dataclass
class VerifyResult:
    """What `VoiceFace.verify` returns: is the voice `claim`'s?"""

    claim: str
    name: str  # the claimed person's display name
    score: float  # `method`'s score of the voice against the claimed person
    threshold: float  # accepted when score >= threshold
    accepted: bool
    far: float | None  # share of non-mated calibration trials the threshold accepts
    far_trials: int  # ... out of this many (0: unmeasured)
    frr: float | None  # share of mated calibration trials it rejects (None: unmeasured)
    frr_trials: int
    method: str  # AS_NORM or RAW (a gallery too small for a cohort)
    cosine: float  # the raw cosine behind `score`
    notes: list[str] = field(default_factory=list)  # what was not measured, and why
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


# -- the maths: pure functions over arrays --------------------------------------------------

    def summary(self, test_weights: bool) -> dict:
        """The result for programs: the keys of `python -m voiceface verify --json`."""
        return {"claim": self.claim, "score": round(self.score, 6),
                "threshold": round(self.threshold, 6), "accepted": self.accepted,
                "far": self.far, "frr": self.frr, "far_trials": self.far_trials,
                "frr_trials": self.frr_trials, "method": self.method, "notes": self.notes,
                "timings": {k: round(v, 4) for k, v in self.timings.items()},
                "test_weights": test_weights}


def top_k_stats(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation [M] of each row's min(k, n) highest of its n
    finite scores (`scores` [M, C]; -inf marks who is not in that row's cohort). The
    standard deviation is floored at `STD_FLOOR`. Every row needs `MIN_COHORT` finite
    scores."""
    scores = np.asarray(scores, np.float64)
    assert scores.ndim == 2, scores.shape
    finite = np.isfinite(scores).sum(axis=1)
    if scores.shape[0] and finite.min() < MIN_COHORT:
        raise ValueError(f"A cohort needs at least {MIN_COHORT} members; a row has "
                         f"{finite.min()}.")
    used = np.minimum(k, finite)[:, None]  # [M, 1]
    top = -np.sort(-scores, axis=1)  # highest first; -inf last
    keep = np.arange(scores.shape[1])[None] < used
    top = np.where(keep, top, 0.0)
    mean = top.sum(axis=1, keepdims=True) / used
    var = (np.where(keep, top - mean, 0.0) ** 2).sum(axis=1) / used[:, 0]
    return mean[:, 0], np.maximum(np.sqrt(var), STD_FLOOR)


def as_norm(raw: np.ndarray, enroll_cohort: np.ndarray, test_cohort: np.ndarray,
            k: int = COHORT_TOP_K) -> np.ndarray:
    """AS-norm scores [M] of raw cosines [M], from each trial's enrollment-side cohort
    cosines [M, C] and test-side cohort cosines [M, C'] (-inf: not in the cohort)."""
    mean_e, std_e = top_k_stats(enroll_cohort, k)
    mean_t, std_t = top_k_stats(test_cohort, k)
    raw = np.asarray(raw, np.float64)
    return 0.5 * ((raw - mean_e) / std_e + (raw - mean_t) / std_t)


def score_kind(n_people: int) -> str:
    """The score a gallery of `n_people` verifies with: AS_NORM when a non-mated trial, with
    the claim and the impostor both out of the cohort, keeps `MIN_COHORT` members; else RAW."""
    return AS_NORM if n_people - 2 >= MIN_COHORT else RAW


def score_trials(tests: np.ndarray, owners: Sequence[str], enrollments: np.ndarray,
                 ids: Sequence[str], *, mated: np.ndarray | None = None,
                 mated_enrollments: np.ndarray | None = None,
                 k: int = COHORT_TOP_K) -> dict[str, TrialScores]:
    """Score trials both ways, raw cosine and AS-norm, so they can be compared.

    tests [T, D] are unit voice embeddings owned by `owners` (ids, enrolled or not);
    enrollments [N, D] the people `ids`. Each test is a non-mated trial against every person
    but its owner (its owner left out of the cohort), and, where `mated` [T] (default: every
    test with an enrolled owner), a mated trial against its owner's enrollment, or the row of
    `mated_enrollments` [T, D] given for it (e.g. pooled without the test's recording).
    Returns {RAW: ..., AS_NORM: ...}; AS_NORM only when `score_kind(N)` allows it.
    """
    tests = np.asarray(tests, np.float64)
    enrollments = np.asarray(enrollments, np.float64)
    n = len(enrollments)
    assert tests.ndim == enrollments.ndim == 2 and len(tests) == len(owners), \
        (tests.shape, enrollments.shape, len(owners))
    column = {person: i for i, person in enumerate(ids)}
    own = np.array([column.get(owner, -1) for owner in owners], int)  # -1: not enrolled
    mated = own >= 0 if mated is None else np.asarray(mated, bool) & (own >= 0)
    normalise = score_kind(n) == AS_NORM
    cross = tests @ enrollments.T  # [T, N]
    between = enrollments @ enrollments.T  # [N, N]
    if mated_enrollments is None:  # rows of tests without a mated trial are never read
        mated_raw = cross[np.arange(len(tests)), own]
        mated_cohort = between[own]  # [T, N] each claimed enrollment against everyone
    else:
        mated_enrollments = np.asarray(mated_enrollments, np.float64)
        mated_raw = np.einsum("td,td->t", tests, mated_enrollments)
        mated_cohort = mated_enrollments @ enrollments.T
    out = {RAW: ([mated_raw[mated]], []), AS_NORM: ([], [])}
    if normalise and mated.any():
        test_side, enroll_side = cross[mated].copy(), mated_cohort[mated].copy()
        rows = np.arange(len(test_side))
        test_side[rows, own[mated]] = -np.inf
        enroll_side[rows, own[mated]] = -np.inf
        out[AS_NORM][0].append(as_norm(mated_raw[mated], enroll_side, test_side, k))
    for q in range(n):  # every claim: the non-mated trials of everyone else's tests
        others = np.flatnonzero(own != q)
        raw = cross[others, q]
        out[RAW][1].append(raw)
        if not normalise or not len(others):
            continue
        enrolled = own[others] >= 0
        test_side = cross[others].copy()
        test_side[:, q] = -np.inf
        test_side[np.flatnonzero(enrolled), own[others][enrolled]] = -np.inf
        # the claim's enrollment against the cohort without each possible impostor
        without = np.repeat(between[q][None], n + 1, axis=0)  # row p: p left out; row n: none
        without[:, q] = -np.inf
        without[np.arange(n), np.arange(n)] = -np.inf
        enroll_side = without[np.where(enrolled, own[others], n)]
        out[AS_NORM][1].append(as_norm(raw, enroll_side, test_side, k))
    return {kind: TrialScores(np.concatenate(m) if m else np.zeros(0),
                              np.concatenate(nm) if nm else np.zeros(0))
            for kind, (m, nm) in out.items() if kind == RAW or normalise}


def score_claim(embedding: np.ndarray, claim: str, gallery: Gallery,
                k: int = COHORT_TOP_K) -> tuple[float, float, str]:
    """(score, raw cosine, score kind) of a voice embedding [D] against `claim`'s enrollment,
    normalised against the cohort of everyone else when the gallery is large enough."""
    check_claim(gallery, claim)
    enrollments = gallery.embeddings().astype(np.float64)  # [N, D]
    q = [p.id for p in gallery.people].index(claim)
    test_side = enrollments @ np.asarray(embedding, np.float64)  # [N]
    raw = float(test_side[q])
    kind = score_kind(len(enrollments))
    if kind == RAW:
        return raw, raw, kind
    enroll_side = enrollments @ enrollments[q]
    test_side[q] = enroll_side[q] = -np.inf
    return float(as_norm(np.array([raw]), enroll_side[None], test_side[None], k)[0]), raw, kind


def check_claim(gallery: Gallery, claim: str) -> None:
    """Raise `UnknownClaim`, naming who is enrolled, when `claim` is not."""
    if claim in gallery:
        return
    ids = [p.id for p in gallery.people]
    if not ids:
        raise UnknownClaim(f"No enrolled person has the id {claim!r}: the gallery is empty.")
    shown = ", ".join(ids[:MAX_IDS_SHOWN])
    more = f" and {len(ids) - MAX_IDS_SHOWN} more" if len(ids) > MAX_IDS_SHOWN else ""
    raise UnknownClaim(f"No enrolled person has the id {claim!r}; claim one of the "
                       f"{len(ids)} enrolled ids: {shown}{more}.")


# -- calibration ----------------------------------------------------------------------------
def calibrate_scores(scores: TrialScores, kind: str, far: float, people: int,
                     encoder_fingerprint: str, method: str) -> VerificationCalibration:
    """The verification calibration at target false-accept rate `far` from trial scores."""
    threshold, accepted = threshold_at_far(scores.non_mated, far)
    trials = int(scores.non_mated.size)
    rejected = int(np.count_nonzero(scores.mated < threshold))
    return VerificationCalibration(threshold, kind, COHORT_TOP_K, float(far), accepted / trials,
                                   trials, accepted, int(scores.mated.size), rejected, people,
                                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   encoder_fingerprint, method)


def calibrate_verification(windows: np.ndarray, owners: Sequence[str],
                           recordings: Sequence[str], calibrations: Calibrations[Gallery],
                           far: float = FALSE_ALARM_RATE) -> VerificationCalibration | None:
    """Calibrate the verification threshold of `calibrations.gallery` (recorded in
    `calibrations`) on recording windows [T, D] of its people (`owners`), each from recording
    `recordings[i]` (a name unique within its owner; the parts of a split recording count as
    two). Mated trials use the owner's windows from other recordings, pooled (see the module
    docstring). Returns the calibration, or None (nothing recorded) with fewer than 2
    people."""
    gallery = calibrations.gallery
    ids = [p.id for p in gallery.people]
    if len(ids) < 2:
        calibrations.verification = None
        return None
    windows = np.asarray(windows, np.float64)
    # each window's enrollment without its recording: the owner's sum minus the recording's
    # (the renormalised mean, as `voiceface.voice.pool` makes an enrollment)
    by_owner: dict[str, np.ndarray] = {}
    by_recording: dict[tuple[str, str], np.ndarray] = {}
    for window, owner, recording in zip(windows, owners, recordings):
        by_owner[owner] = by_owner.get(owner, 0) + window
        by_recording[owner, recording] = by_recording.get((owner, recording), 0) + window
    counts = {}
    for owner, _ in by_recording:
        counts[owner] = counts.get(owner, 0) + 1
    mated = np.array([counts[owner] > 1 for owner in owners], bool)  # another recording
    rest = np.array([by_owner[o] - by_recording[o, r] for o, r in zip(owners, recordings)])
    pooled = rest / np.maximum(np.linalg.norm(rest, axis=1, keepdims=True), 1e-12)
    kind = score_kind(len(ids))
    scores = score_trials(windows, owners, gallery.embeddings(), ids, mated=mated,
                          mated_enrollments=pooled)[kind]
    result = calibrate_scores(scores, kind, far, len(ids), gallery.encoder_fingerprint,
                              BUILD_METHOD)
    calibrations.verification = result
    return result


def recalibrate_verification(calibrations: Calibrations[Gallery]
                             ) -> VerificationCalibration | None:
    """Recalibrate a changed live gallery's (`calibrations.gallery`) verification threshold
    (recorded in `calibrations`) from its stored embeddings alone: no mated trials (FRR
    unmeasured). The target is the previous record's; a change of people clears that record,
    so then the open-set calibration's (a build sets both from its --far), else
    `FALSE_ALARM_RATE`. With fewer than 2 people nothing is recorded (None)."""
    gallery, previous = calibrations.gallery, calibrations.verification
    far = next((c.far_target for c in (previous, calibrations.open_set) if c is not None),
               FALSE_ALARM_RATE)
    ids = [p.id for p in gallery.people]
    if len(ids) < 2:
        calibrations.verification = None
        return None
    embeddings = gallery.embeddings()
    kind = score_kind(len(ids))
    scores = score_trials(embeddings, ids, embeddings, ids, mated=np.zeros(len(ids), bool))[kind]
    result = calibrate_scores(scores, kind, far, len(ids), gallery.encoder_fingerprint,
                              LIVE_METHOD)
    if previous is not None and replace(previous, date=result.date) == result:
        return previous  # nothing changed but the clock
    calibrations.verification = result
    return result


# -- the call -------------------------------------------------------------------------------
def decide(embedding: np.ndarray, claim: str, gallery: Gallery,
           calibration: VerificationCalibration | None,
           timings: dict[str, float]) -> VerifyResult:
    """The answer for a voice's `embedding` claiming to be `claim` (checked with `check_claim`
    first): its score against the gallery's measured threshold of that kind of score
    (`calibration`, its `Calibrations.verification`), else the placeholder. `timings` (the
    stages so far) gain "score" and "total"."""
    start = time.perf_counter()
    score, cosine, kind = score_claim(embedding, claim, gallery)
    timings = {**timings, "score": time.perf_counter() - start}
    timings["total"] = sum(timings.values())
    notes = []
    if kind == RAW:
        notes.append(f"raw cosine: {len(gallery)} people leave fewer than {MIN_COHORT} in the "
                     "cohort, too few to normalise against")
    if calibration is not None and calibration.score != kind:
        calibration = None  # measured on the other kind of score: it does not apply
    if calibration is None:
        threshold = DEFAULT_NORM_THRESHOLD if kind == AS_NORM else DEFAULT_RAW_THRESHOLD
        notes.append(f"threshold unmeasured (the gallery holds no verification calibration "
                     f"for {kind} scores): placeholder {threshold}")
        far, far_trials, frr, frr_trials = None, 0, None, 0
    else:
        threshold = calibration.threshold
        far, far_trials = calibration.far_achieved, calibration.non_mated_trials
        frr, frr_trials = calibration.frr, calibration.mated_trials
        if not calibration.enough_trials:
            notes.append(f"{far_trials} non-mated trials cannot measure the target false-accept "
                         f"rate {calibration.far_target:.1%}: the threshold accepts none of them")
        if not calibration.mated_trials:
            notes.append("false-reject rate unmeasured: the calibration had no mated trials (a "
                         "live gallery keeps one embedding per person; a build needs people "
                         "with two recordings, or one long enough to be split)")
    return VerifyResult(claim, gallery.person(claim).name, score, threshold,
                        score >= threshold, far, far_trials, frr, frr_trials, kind, cosine,
                        notes, timings)

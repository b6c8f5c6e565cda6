"""The open-set threshold, measured: the score an unenrolled voice's best match stays under.

A gallery answers "no confident match" when the best score is below its threshold
(`Gallery.confident`: accepted when `score >= threshold`). The threshold is set from
*non-mated trials*: voices scored against a gallery their own person is not in, each trial
keeping its best score (what an unenrolled voice would get). At a target false-alarm rate f
over T trials, at most k = floor(f * T) trials may be accepted; the threshold is the
smallest number above the (k+1)-th highest score, so that score and every score tied with
it are rejected (`voiceface.metrics.threshold_at_far`). With f * T < 1 no trial may be
accepted: the finest rate T trials can measure is 1/T, and the calibration says so
(`Calibration.enough_trials`) instead of claiming f.

Who the trials are depends on what is at hand; `Calibration.method` records it:
- `build` and the personas: every window of every person's recordings, scored against the
  gallery's other people (`calibrate_open_set`);
- `eval`: the held-out windows, scored against the enrollment embeddings of the others;
- a live gallery (`recalibrate_open_set`): only embeddings are kept, so each enrolled
  person's stored embedding is a trial against everyone else's (N people give N trials).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

import numpy as np

from .gallery import Gallery
from .metrics import threshold_at_far
from .thresholds import FALSE_ALARM_RATE, Calibration, Calibrations


WINDOWS_METHOD = ("best score of each recording window against the other people's gallery "
                  "embeddings")
LIVE_METHOD = "best score of each enrolled person's embedding against everyone else's"
TRIAL_CHUNK = 2048  # trials scored at once: memory stays [TRIAL_CHUNK, N], not [T, N]


def best_non_mated(trials: np.ndarray, owners: Sequence[str], embeddings: np.ndarray,
                   ids: Sequence[str]) -> np.ndarray:
    """Each trial's best score [T] among the people (`embeddings` [N, D], `ids`) other than
    its owner. Trials [T, D] whose owner is the only person give no score and are dropped."""
    trials = np.asarray(trials, np.float32)
    assert trials.ndim == 2 and len(trials) == len(owners), (trials.shape, len(owners))
    embeddings = np.asarray(embeddings, np.float32)
    if not len(embeddings):
        return np.zeros(0)
    column = {person: i for i, person in enumerate(ids)}
    own = np.array([column.get(owner, -1) for owner in owners])  # -1: owner not enrolled
    best = np.empty(len(trials))
    for start in range(0, len(trials), TRIAL_CHUNK):  # in chunks: large galleries fit
        scores = trials[start:start + TRIAL_CHUNK] @ embeddings.T  # [chunk, N]
        rows = np.flatnonzero(own[start:start + TRIAL_CHUNK] >= 0)
        scores[rows, own[start + rows]] = -np.inf
        best[start:start + len(scores)] = scores.max(axis=1)
    return best[np.isfinite(best)]


def calibrate(non_mated: np.ndarray, far: float, encoder_fingerprint: str,
              method: str) -> Calibration:
    """The calibration at `far` from the trials' best non-mated scores [T]."""
    threshold, accepted = threshold_at_far(non_mated, far)
    trials = int(np.size(non_mated))
    return Calibration(threshold, float(far), accepted / trials, trials, accepted,
                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), encoder_fingerprint,
                       method)


def calibrate_open_set(windows: np.ndarray, owners: Sequence[str],
                       calibrations: Calibrations[Gallery],
                       far: float = FALSE_ALARM_RATE) -> Calibration | None:
    """Calibrate the threshold of `calibrations.gallery` (in place, recorded in
    `calibrations`) on recording windows [T, D] of its people (`owners`: whose each window
    is), each scored against the other people's gallery embeddings. Returns the calibration,
    or None (gallery unchanged) with fewer than 2 people."""
    gallery = calibrations.gallery
    scores = best_non_mated(windows, owners, gallery.embeddings(),
                            [p.id for p in gallery.people])
    if scores.size == 0:
        return None
    result = calibrate(scores, far, gallery.encoder_fingerprint, WINDOWS_METHOD)
    calibrations.calibrate(result)
    return result


def recalibrate_open_set(calibrations: Calibrations[Gallery]) -> Calibration | None:
    """Recalibrate a changed live gallery (`calibrations.gallery`, in place) from its stored
    embeddings alone: each person's embedding (pooled over their recording) is a trial, its
    best score against everyone else's embedding its non-mated score, so N people give N
    trials. The target is the previous record's (else `FALSE_ALARM_RATE`). With fewer than 2
    people the gallery is left uncalibrated (threshold unchanged, `open_set` None)."""
    gallery, previous = calibrations.gallery, calibrations.open_set
    far = previous.far_target if previous is not None else FALSE_ALARM_RATE
    embeddings, ids = gallery.embeddings(), [p.id for p in gallery.people]
    scores = best_non_mated(embeddings, ids, embeddings, ids)
    if scores.size == 0:
        calibrations.calibrate(None)
        return None
    result = calibrate(scores, far, gallery.encoder_fingerprint, LIVE_METHOD)
    if previous is not None and replace(previous, date=result.date) == result:
        return previous  # nothing changed but the clock (e.g. a latent was added)
    calibrations.calibrate(result)
    return result

"""Evaluation metrics: pure functions over score and distance arrays.

The protocol that produces the arrays (which recordings are held out) lives in
`voiceface.evaluate`; the folds over identities (`identity_folds`) are here, shared by both
directions (voice to face and face to voice); the threshold records in
`voiceface.thresholds`. Every
decision here follows one rule, the gallery's (`Gallery.confident`): a trial is accepted
when `score >= threshold`; a genuine trial below the threshold is a miss (false reject), a
non-mated trial at or above it a false alarm (false accept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

COUNT_TOLERANCE = 1e-9  # trials; so that e.g. 0.29 * 100 allows 29 accepted trials, not 28
BOOTSTRAP = 2000  # resamples for confidence intervals
CI95 = (0.025, 0.975)  # quantiles bounding a 95 % interval
P_TARGET = 0.01  # prior of a genuine trial in the detection cost (NIST SRE convention)
C_MISS = C_FA = 1.0  # costs of a miss and of a false alarm in the detection cost
RANKS = (1, 5, 10)  # R@k reported by `retrieval`
Z95 = 1.959964  # standard normal quantile bounding a two-sided 95 % interval


def _scores(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    scores = np.asarray(values, np.float64).ravel()
    if scores.size == 0:
        raise ValueError(f"No {what} scores: the metric needs at least one.")
    return scores


def error_rates(genuine: np.ndarray, impostor: np.ndarray,
                thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rate, miss rate), each [len(thresholds)]: the share of impostor scores
    accepted (`>= t`) and of genuine scores rejected (`< t`) at each threshold t."""
    genuine, impostor = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    # counted on sorted scores: a scan per threshold is quadratic in both (N^4 in people)
    below_impostor = np.searchsorted(np.sort(impostor), thresholds, side="left")
    false_alarm = (impostor.size - below_impostor) / impostor.size
    miss = np.searchsorted(np.sort(genuine), thresholds, side="left") / genuine.size
    return false_alarm, miss


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate: at the observed score where the false-alarm and miss rates are
    nearest, their mean."""
    thresholds = np.unique(np.concatenate([_scores(genuine, "genuine"),
                                           _scores(impostor, "impostor")]))
    false_alarm, miss = error_rates(genuine, impostor, thresholds)
    i = int(np.argmin(np.abs(false_alarm - miss)))
    return float((false_alarm[i] + miss[i]) / 2)


def det_curve(genuine: np.ndarray, impostor: np.ndarray) -> dict[str, np.ndarray]:
    """The DET curve's points, one per threshold, from accepting everything (the lowest
    score: false-alarm rate 1, miss rate 0) to accepting nothing (just above the highest:
    0 and 1): {"threshold", "false_alarm_rate", "miss_rate"}, each [P], thresholds rising."""
    scores = np.unique(np.concatenate([_scores(genuine, "genuine"),
                                       _scores(impostor, "impostor")]))
    thresholds = np.append(scores, np.nextafter(scores[-1], np.inf))
    false_alarm, miss = error_rates(genuine, impostor, thresholds)
    return {"threshold": thresholds, "false_alarm_rate": false_alarm, "miss_rate": miss}


def min_dcf(genuine: np.ndarray, impostor: np.ndarray, p_target: float = P_TARGET,
            c_miss: float = C_MISS, c_fa: float = C_FA) -> float:
    """Minimum normalised detection cost over the DET curve's thresholds:
    min_t (c_miss * p_target * miss(t) + c_fa * (1 - p_target) * fa(t)), divided by the cost
    of the better trivial system (accept all or reject all), min(c_miss * p_target,
    c_fa * (1 - p_target)); so 1 is no better than a fixed answer."""
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be between 0 and 1, got {p_target}; e.g. 0.01.")
    curve = det_curve(genuine, impostor)
    cost = (c_miss * p_target * curve["miss_rate"]
            + c_fa * (1 - p_target) * curve["false_alarm_rate"])
    return float(cost.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


def threshold_at_far(non_mated: Sequence[float] | np.ndarray, far: float) -> tuple[float, int]:
    """(threshold, accepted): the lowest threshold accepting (`score >= threshold`) at most
    floor(far * T) of the T non-mated scores, ties included, and how many it accepts."""
    scores = np.sort(np.asarray(non_mated, np.float64).ravel())[::-1]  # highest first
    if scores.size == 0:
        raise ValueError("No non-mated trials to set a threshold on: a gallery needs at least "
                         "2 people to be calibrated.")
    if not np.all(np.isfinite(scores)):
        raise ValueError("Non-mated scores contain NaN or infinity; check the embeddings.")
    if not 0 < far < 1:
        raise ValueError(f"The false-alarm rate must be between 0 and 1, got {far}; e.g. 0.01 "
                         "for 1 %.")
    allowed = min(math.floor(far * scores.size + COUNT_TOLERANCE), scores.size - 1)
    threshold = float(np.nextafter(scores[allowed], np.inf))
    return threshold, int(np.count_nonzero(scores >= threshold))


@dataclass(frozen=True)
class OperatingPoint:
    """Error rates at the threshold set on the impostor trials at a target false-alarm rate,
    with the trial counts behind them."""

    threshold: float
    far_target: float
    impostor_trials: int
    false_alarms: int  # impostor trials accepted
    genuine_trials: int
    misses: int  # genuine trials rejected

    @property
    def far(self) -> float:
        """The false-alarm rate achieved (at most `far_target`)."""
        return self.false_alarms / self.impostor_trials

    @property
    def frr(self) -> float:
        """The false-reject (miss) rate at the threshold."""
        return self.misses / self.genuine_trials


def frr_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> OperatingPoint:
    """The miss rate of the genuine trials at the threshold `threshold_at_far(impostor, far)`."""
    genuine = _scores(genuine, "genuine")
    threshold, accepted = threshold_at_far(impostor, far)
    return OperatingPoint(threshold, float(far), int(np.size(impostor)), accepted,
                          genuine.size, int(np.count_nonzero(genuine < threshold)))


def ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The rank [T] of each trial's true candidate among scores [T, N] (higher is better):
    0 when no candidate scores above it; ties count in its favour."""
    scores = np.asarray(scores)
    truth = np.asarray(truth)
    assert scores.ndim == 2 and truth.shape == (len(scores),), (scores.shape, truth.shape)
    own = scores[np.arange(len(truth)), truth]
    return (scores > own[:, None]).sum(axis=1)


def recall_at_k(rank: np.ndarray, k: int) -> float:
    """R@k: the share of trials whose true candidate is among the k best (rank < k)."""
    return float(np.mean(np.asarray(rank) < k))


def matching_1to2(distances: np.ndarray) -> np.ndarray:
    """1:2 matching per person [N] from distances [N, N] (row i: person i's prediction,
    column j: person j's truth): the share of the other people j != i whose truth lies
    farther from i's prediction than i's own truth does (ties count as losses)."""
    distances = np.asarray(distances, np.float64)
    n = len(distances)
    assert distances.shape == (n, n) and n >= 2, distances.shape
    own = np.diag(distances)
    wins = (own[:, None] < distances).astype(float)
    np.fill_diagonal(wins, np.nan)  # a person is never their own foil
    return np.nanmean(wins, axis=1)


def bootstrap_ci95(values: np.ndarray, seed: int,
                   resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """The percentile bootstrap 95 % interval for the mean of `values` [N] (resampled with
    replacement, `resamples` times, from a generator seeded with `seed`)."""
    values = np.asarray(values)
    n = len(values)
    rng = np.random.default_rng(seed)
    means = [np.mean(values[rng.integers(0, n, n)]) for _ in range(resamples)]
    low, high = np.quantile(means, CI95)
    return float(low), float(high)


def wilson_ci95(successes: int, trials: int) -> tuple[float, float]:
    """Wilson's score interval (95 %) for a proportion of `successes` in `trials` > 0: right
    near 0 and 1, where the normal approximation's interval leaves [0, 1]."""
    if trials <= 0:
        raise ValueError(f"a proportion needs at least one trial, not {trials}")
    p, z2 = successes / trials, Z95 ** 2
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials ** 2)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def identity_folds(people: list[str], folds: int,
                   seed: int) -> list[tuple[list[str], list[str]]]:
    """(training people, held-out people) per fold: `people` shuffled with `seed` and cut
    into min(folds, N) folds, each held out once; no one is in both of a fold's lists."""
    rng = np.random.default_rng(seed)
    chunks = np.array_split(rng.permutation(people), min(folds, len(people)))
    fold_of = {p: f for f, chunk in enumerate(chunks) for p in chunk}
    return [([p for p in people if fold_of[p] != fold],
             [p for p in people if fold_of[p] == fold]) for fold in range(len(chunks))]


def retrieval(predicted: np.ndarray, truth: np.ndarray, seed: int) -> dict:
    """R@k and 1:2 matching of predicted latents [N, W] against the true ones [N, W]
    (Euclidean), by the rank of each person's own latent among everyone's."""
    n = len(truth)
    distances = np.linalg.norm(predicted[:, None] - truth[None], axis=2)  # [N, N]
    rank = ranks(-distances, np.arange(n))  # 0 = the true latent is the nearest
    per_person = matching_1to2(distances)
    result = {f"R@{k}": recall_at_k(rank, k) for k in RANKS if k <= n}
    result.update({f"chance_R@{k}": k / n for k in RANKS if k <= n})
    result.update({"matching_1to2": float(np.mean(per_person)),
                   "matching_1to2_ci95": list(bootstrap_ci95(per_person, seed))})
    return result

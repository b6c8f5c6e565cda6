"""The evaluation metrics on small inputs worked out by hand, and a property over any input.

Imports nothing but numpy, Hypothesis and `voiceface.metrics`: mutation testing runs this file
once per mutant (CONTRIBUTING.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceface.metrics import (OperatingPoint, bootstrap_ci95, det_curve, eer, frr_at_far,
                               matching_1to2, min_dcf, ranks, recall_at_k, threshold_at_far)

# Overlapping genuine and impostor scores, used by the EER, DET, minDCF and FRR tests.
GENUINE = [0.3, 0.6, 0.8, 0.9]
IMPOSTOR = [0.1, 0.2, 0.4, 0.7]


def above(x: float) -> float:
    return float(np.nextafter(x, np.inf))


def test_eer_on_overlapping_scores():
    # accepted when score >= t; false alarm: impostor >= t, miss: genuine < t
    #   t     false alarms    misses        |fa - miss|
    #   0.1   4/4             0/4           1
    #   0.2   3/4             0/4           0.75
    #   0.3   2/4 (0.4, 0.7)  0/4           0.5   (0.3 itself is accepted)
    #   0.4   2/4             1/4 (0.3)     0.25
    #   0.6   1/4 (0.7)       1/4 (0.3)     0     <- equal: EER = 1/4
    #   0.7   1/4             2/4           0.25
    #   0.8   0/4             2/4           0.5
    #   0.9   0/4             3/4           0.75
    assert eer(np.array(GENUINE), np.array(IMPOSTOR)) == 0.25
    assert eer(np.array([0.6, 0.9]), np.array([0.1, 0.5])) == 0.0  # apart: no errors at 0.6
    # reversed: fa, miss at t = 0.1: 1, 0; 0.5: 1, 1/2; 0.6: 1, 1 (equal); 0.9: 1/2, 1
    assert eer(np.array([0.1, 0.5]), np.array([0.6, 0.9])) == 1.0


def test_det_curve_runs_from_accepting_everything_to_nothing():
    curve = det_curve(np.array(GENUINE), np.array(IMPOSTOR))
    assert curve["threshold"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, above(0.9)]
    assert curve["false_alarm_rate"].tolist() == [1, 0.75, 0.5, 0.5, 0.25, 0.25, 0, 0, 0]
    assert curve["miss_rate"].tolist() == [0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 1]


def test_min_dcf_normalised_by_the_best_fixed_answer():
    # cost(t) = 0.01 * miss + 0.99 * fa over the DET points above:
    #   0.99, 0.7425, 0.495, 0.4975, 0.25, 0.2525, 0.005 (t = 0.8), 0.0075, 0.01
    # min 0.005, divided by min(0.01 * 1, 0.99 * 1) = 0.01 -> 0.5
    assert min_dcf(np.array(GENUINE), np.array(IMPOSTOR)) == pytest.approx(0.5, abs=1e-12)
    # p_target 0.5: cost = (miss + fa) / 2, smallest 0.25 (t = 0.3, 0.6 or 0.8), over 0.5
    assert min_dcf(np.array(GENUINE), np.array(IMPOSTOR), p_target=0.5) == 0.5
    # no separation: the best is a fixed answer (reject all: 0.01), so 1
    assert min_dcf(np.array([0.5]), np.array([0.5])) == pytest.approx(1.0, abs=1e-12)
    # a miss costing 10: cost = 0.1 * miss + 0.99 * fa: 0.99, 0.7425, 0.495, 0.52, 0.2725,
    # 0.2975, 0.05, 0.075, 0.1 -> 0.05 over min(0.1, 0.99) = 0.5
    assert min_dcf(np.array(GENUINE), np.array(IMPOSTOR), c_miss=10) == pytest.approx(0.5)
    for p_target in (0.0, -0.5, 1.0, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            min_dcf(np.array(GENUINE), np.array(IMPOSTOR), p_target=p_target)


def test_min_dcf_weighs_misses_against_false_alarms():
    genuine, impostor = np.array([0.5, 0.6, 0.8, 0.9]), np.array([0.1, 0.2, 0.3, 0.7])
    # DET points (fa, miss) at t = 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, above:
    #   (1, 0) (3/4, 0) (1/2, 0) (1/4, 0) (1/4, 1/4) (1/4, 1/2) (0, 1/2) (0, 3/4) (0, 1)
    # p 0.5: cost (miss + fa) / 2, least 1/8 at (1/4, 0) (not 1/4 at (0, 1/2)); over 1/2
    assert min_dcf(genuine, impostor, p_target=0.5) == 0.25
    # p 0.9: cost 0.9 miss + 0.1 fa, least 0.025 at (1/4, 0); over min(0.9, 0.1) = 0.1
    assert min_dcf(genuine, impostor, p_target=0.9) == pytest.approx(0.25)
    # a false alarm costing 1/2 at p 0.5: 0.5 miss + 0.25 fa, least 1/16 at (1/4, 0);
    # over min(0.5, 0.25) = 1/4
    assert min_dcf(genuine, impostor, p_target=0.5, c_fa=0.5) == 0.25


def test_frr_at_far_gives_the_rates_and_the_trials_behind_them():
    # 25 % of 4 impostors: one (0.7) may pass, so 0.4 is rejected: t just above 0.4;
    # of the genuine scores only 0.3 falls below it
    point = frr_at_far(np.array(GENUINE), np.array(IMPOSTOR), 0.25)
    assert point == OperatingPoint(above(0.4), 0.25, 4, 1, 4, 1)
    assert (point.far, point.frr) == (0.25, 0.25)
    # a genuine score equal to the threshold is accepted (>=), not a miss
    at = frr_at_far(np.array([above(0.4), 0.9]), np.array(IMPOSTOR), 0.25)
    assert (at.misses, at.frr) == (0, 0.0)
    # 3 impostors cannot measure 10 %: none is accepted, every genuine below 0.7 missed
    few = frr_at_far(np.array(GENUINE), np.array([0.1, 0.7, 0.2]), 0.1)
    assert (few.threshold, few.false_alarms, few.misses, few.frr) == (above(0.7), 0, 2, 0.5)


def test_threshold_at_far_rejects_ties_and_accepts_the_threshold_itself():
    scores = [0.2, 0.5, 0.5, 0.9]
    threshold, accepted = threshold_at_far(scores, 0.5)  # 2 of 4 may pass, but 0.5 is tied
    assert (threshold, accepted) == (above(0.5), 1)
    assert np.count_nonzero(np.array(scores) >= threshold) == 1
    # the threshold is the lowest such number: one step lower accepts the tied pair too
    assert np.count_nonzero(np.array(scores) >= np.nextafter(threshold, -np.inf)) == 3


def test_empty_score_lists_are_refused():
    with pytest.raises(ValueError, match="No genuine scores"):
        eer(np.array([]), np.array([0.1]))
    with pytest.raises(ValueError, match="No impostor scores"):
        det_curve(np.array([0.1]), np.array([]))
    with pytest.raises(ValueError, match="No non-mated trials"):
        threshold_at_far([], 0.1)


@pytest.mark.parametrize("far", [0.0, -0.1, 1.0, 1.5])
def test_threshold_at_far_refuses_a_rate_outside_0_1(far):
    with pytest.raises(ValueError, match="between 0 and 1"):
        threshold_at_far([0.1, 0.2], far)


def test_threshold_at_far_near_1_still_rejects_the_lowest_score():
    # floor((1 - 1e-12) * 2 + 1e-9) = 2 trials allowed, but a threshold above a score
    # rejects it: the most it can accept is all but the lowest
    assert threshold_at_far([0.1, 0.2], 1 - 1e-12) == (above(0.1), 1)


def test_a_score_equal_to_the_threshold_is_counted_as_accepted():
    # 1 of 2 may pass: the threshold is just above 0.5, which is the other score itself
    assert threshold_at_far([0.5, above(0.5)], 0.5) == (above(0.5), 1)


def test_an_operating_point_is_a_frozen_record():
    point = frr_at_far(np.array(GENUINE), np.array(IMPOSTOR), 0.25)
    with pytest.raises(AttributeError):
        point.misses = 0


def test_ranks_count_the_candidates_strictly_above_the_truth():
    scores = np.array([[0.9, 0.1, 0.2, 0.3, 0.4, 0.5],   # truth 0 best: rank 0
                       [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],   # truth 4 (0.5): 4 above it
                       [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],   # truth 5 (0.4): 5 above it
                       [0.5, 0.5, 0.1, 0.1, 0.1, 0.1]])  # truth 1, tied with 0: rank 0
    rank = ranks(scores, np.array([0, 4, 5, 1]))
    assert rank.tolist() == [0, 4, 5, 0]
    assert recall_at_k(rank, 1) == 0.5
    assert recall_at_k(rank, 5) == 0.75  # rank 4 is within the top 5, rank 5 is not
    assert recall_at_k(rank, 6) == 1.0


@pytest.mark.parametrize("scores, truth", [
    (np.zeros((2, 3, 1)), [0, 0]),  # not [T, N]
    (np.zeros(3), [0, 0, 0]),
    (np.zeros((2, 3)), [0]),  # a truth per trial
    (np.zeros((2, 3)), [0, 0, 0]),
])
def test_ranks_check_the_shapes(scores, truth):
    with pytest.raises(AssertionError):
        ranks(scores, np.array(truth))


@pytest.mark.parametrize("shape", [(2, 3), (2, 1), (1, 1), (3,)])
def test_matching_1to2_needs_a_square_of_2_or_more_people(shape):
    with pytest.raises(AssertionError):
        matching_1to2(np.ones(shape))


def test_matching_1to2_leaves_each_person_out_of_their_own_foils():
    # row i: distances from person i's prediction to each person's true latent
    half = np.array([[1.0, 2.0, 0.5],   # beats foil 1, loses to 2: 1/2
                     [3.0, 1.0, 0.0],   # beats 0, loses to 2: 1/2
                     [0.0, 4.0, 2.0]])  # loses to 0, beats 1: 1/2
    assert matching_1to2(half).tolist() == [0.5, 0.5, 0.5]
    # person 2 beats both foils; a tie (row 0 against foil 1) is a loss
    other = np.array([[1.0, 1.0, 0.5],
                      [3.0, 1.0, 0.0],
                      [5.0, 4.0, 2.0]])
    assert matching_1to2(other).tolist() == [0.0, 0.5, 1.0]
    assert np.mean(matching_1to2(other)) == 0.5
    assert np.mean(matching_1to2(half[:, ::-1][::-1])) == 0.5  # same people, reordered
    assert matching_1to2(np.array([[1.0, 0.5], [3.0, 1.0]])).tolist() == [0.0, 1.0]  # two


def test_bootstrap_interval():
    assert bootstrap_ci95(np.full(5, 0.25), seed=0) == (0.25, 0.25)
    # two people scoring 0 and 1: a resample's mean is 0, 1/2 or 1 (a quarter of the time
    # each end), so the 2.5 % and 97.5 % quantiles of 2000 resamples are the ends
    assert bootstrap_ci95(np.array([0.0, 1.0]), seed=0) == (0.0, 1.0)
    # one of three people scores 1: a resample's mean is 1 only when all three draws are
    # that person, (1/3)^3 = 3.7 % of resamples (about 74 of 2000): the 97.5 % quantile is 1,
    # while a 90 % interval would end at 2/3; the mean is 0 in (2/3)^3 = 30 % of them
    assert bootstrap_ci95(np.array([1.0, 0.0, 0.0]), seed=0) == (0.0, 1.0)


@settings(derandomize=True, database=None, deadline=None, max_examples=60)
@given(st.lists(st.one_of(st.floats(-1, 1), st.sampled_from([0.25, 0.5, 0.75])),
                min_size=1, max_size=200),  # the sampled values make ties common
       st.floats(0.001, 0.999))
def test_a_threshold_at_far_never_accepts_more_than_f_of_its_trials(trials, far):
    threshold, accepted = threshold_at_far(trials, far)
    trials = np.array(trials)
    allowed = math.floor(far * len(trials) + 1e-9)
    assert np.count_nonzero(trials >= threshold) == accepted <= allowed
    # and it is the lowest such threshold: one step down accepts too many
    assert np.count_nonzero(trials >= np.nextafter(threshold, -np.inf)) > allowed

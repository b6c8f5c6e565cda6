"""The open-set threshold: exact boundaries, its record in the gallery, live recalibration."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from voiceface import calibration
from voiceface.calibration import (FALSE_ALARM_RATE, LIVE_METHOD, WINDOWS_METHOD, Calibration,
                                   best_non_mated, calibrate, calibrate_open_set,
                                   recalibrate_open_set, threshold_at_far)
from voiceface.enrolled import Enrolled
from voiceface.gallery_files import MANIFEST
from voiceface.thresholds import VerificationCalibration


def above(x: float) -> float:
    return float(np.nextafter(x, np.inf))


@pytest.mark.parametrize("scores, far, threshold, accepted", [
    # 5 trials at 20 %: one may pass; the 2nd highest (0.4) and below are rejected
    ([0.1, 0.2, 0.3, 0.4, 0.5], 0.2, above(0.4), 1),
    # a tie at the boundary: accepting one 0.5 accepts both, so neither is accepted
    ([0.5, 0.2, 0.5, 0.4, 0.3], 0.2, above(0.5), 0),
    # 40 % of 5 = 2 may pass; 0.8 is tied twice, so only 0.9 is
    ([0.9, 0.8, 0.8, 0.7, 0.1], 0.4, above(0.8), 1),
    # 3 trials cannot measure 1 %: none is accepted
    ([0.3, 0.1, 0.2], 0.01, above(0.3), 0),
    # 29 % of 100 is 29 trials, although 0.29 * 100 < 29 in floating point
    (np.arange(100) / 100, 0.29, above(0.70), 29),
    # negative scores work the same way
    ([-0.2, -0.1, -0.3, -0.4], 0.5, above(-0.3), 2),
])
def test_threshold_at_far_accepts_at_most_the_allowed_trials(scores, far, threshold, accepted):
    got, count = threshold_at_far(scores, far)
    assert got == threshold and count == accepted
    assert np.count_nonzero(np.asarray(scores) >= got) == accepted  # what Gallery.confident does
    assert accepted <= far * len(scores) + 1e-9


def test_threshold_at_far_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError, match="at least 2 people"):
        threshold_at_far([], 0.01)
    with pytest.raises(ValueError, match="between 0 and 1"):
        threshold_at_far([0.1, 0.2], 1.0)
    with pytest.raises(ValueError, match="NaN"):
        threshold_at_far([0.1, np.nan], 0.1)


def test_calibration_reports_the_rate_achieved_and_too_few_trials():
    c = calibrate(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), 0.2, "enc", "hand")
    assert (c.threshold, c.far_achieved, c.trials, c.accepted, c.enough_trials) == \
        (above(0.4), 0.2, 5, 1, True)
    few = calibrate(np.array([0.3, 0.1, 0.2]), 0.01, "enc", "hand")
    assert (few.far_achieved, few.accepted, few.enough_trials) == (0.0, 0, False)
    assert "3 trials cannot measure 1.0% (the finest rate is 33.3%)" in few.describe()
    assert Calibration.from_dict(few.to_dict()) == few


def test_best_non_mated_leaves_each_trials_own_person_out():
    embeddings = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    trials = np.array([[1, 0], [0, 1], [0, 1]], np.float32)
    best = best_non_mated(trials, ["a", "c", "b"], embeddings, ["a", "b", "c"])
    # a's trial: b 0.6, c 0; c's trial: a 0, b 0.8 (its own 1.0 left out); b's trial: c 1.0
    assert best.tolist() == [float(np.float32(0.6)), float(np.float32(0.8)), 1.0]
    alone = best_non_mated(trials[:1], ["a"], embeddings[:1], ["a"])
    assert alone.size == 0


def enrolled_of(vectors: dict[str, list[float]]) -> Enrolled:
    enrolled = Enrolled.new(2, "enc")
    for person_id, v in vectors.items():
        enrolled.gallery.add(person_id, np.array(v, np.float32))
    return enrolled


def test_a_live_gallery_recalibrates_on_its_embeddings():
    enrolled = enrolled_of({"a": [1, 0], "b": [0.6, 0.8], "c": [0, 1]})
    gallery, records = enrolled.gallery, enrolled.calibrations
    records.calibrate(calibrate(np.array([0.1, 0.2, 0.3]), 0.67, "enc", "before"))
    got = recalibrate_open_set(records)  # best non-mated: a 0.6, b 0.8, c 0.8; 67 % of 3 pass 2
    f32 = float(np.float32(0.6))
    assert (got.threshold, got.accepted, got.trials, got.far_target, got.method) == \
        (above(f32), 2, 3, 0.67, LIVE_METHOD)
    assert records.open_set == got and gallery.threshold == got.threshold
    assert recalibrate_open_set(records) is got  # unchanged people: the record (and date) stay
    gallery.remove("c")
    assert recalibrate_open_set(records).trials == 2
    gallery.remove("b")
    assert recalibrate_open_set(records) is None and records.open_set is None
    assert gallery.threshold == above(f32)  # nothing to measure on: the threshold stays


def test_the_calibration_is_saved_and_a_hand_set_threshold_is_not_called_calibrated(tmp_path):
    enrolled = enrolled_of({"a": [1, 0], "b": [0, 1]})
    assert enrolled.calibrations.open_set is None
    recalibrate_open_set(enrolled.calibrations)
    enrolled.save(tmp_path / "g")
    loaded = Enrolled.load(tmp_path / "g")
    assert loaded.calibrations.open_set == enrolled.calibrations.open_set
    assert loaded.gallery.threshold == enrolled.gallery.threshold
    loaded.gallery.threshold = 0.5
    assert loaded.calibrations.open_set is None
    loaded.save(tmp_path / "g")
    assert json.loads((tmp_path / "g" / MANIFEST).read_text())["calibration"] is None
    assert Enrolled.load(tmp_path / "g").gallery.threshold == 0.5


def test_a_manifest_from_before_calibration_still_loads(tmp_path):
    enrolled_of({"a": [1, 0], "b": [0, 1]}).save(tmp_path / "g")
    manifest = json.loads((tmp_path / "g" / MANIFEST).read_text())
    del manifest["calibration"]
    (tmp_path / "g" / MANIFEST).write_text(json.dumps(manifest))
    loaded = Enrolled.load(tmp_path / "g")
    assert loaded.calibrations.open_set is None
    assert loaded.gallery.threshold == 0.70 and len(loaded.gallery) == 2


def test_best_non_mated_in_chunks_equals_the_whole_product(monkeypatch):
    rng = np.random.default_rng(0)
    people = rng.normal(size=(7, 5)).astype(np.float32)
    ids = [f"p{i}" for i in range(7)]
    # each trial near its owner (the unenrolled one near p1), so that leaving out the wrong
    # score, or none, changes the best
    near = [i % 7 for i in range(9)] + [1]
    trials = (people[near] + 0.01 * rng.normal(size=(10, 5))).astype(np.float32)
    owners = [ids[i] for i in near[:9]] + ["not-enrolled"]
    whole = trials @ people.T
    for row, owner in enumerate(owners):
        if owner in ids:
            whole[row, ids.index(owner)] = -np.inf
    monkeypatch.setattr(calibration, "TRIAL_CHUNK", 3)  # 10 trials: chunks of 3, 3, 3, 1
    assert np.array_equal(calibration.best_non_mated(trials, owners, people, ids),
                          whole.max(axis=1))


def test_best_non_mated_takes_the_best_even_when_every_other_score_is_negative():
    embeddings = np.array([[1, 0], [-1, 0], [0, -1]], np.float32)
    best = best_non_mated(np.array([[1, 0]], np.float32), ["a"], embeddings, ["a", "b", "c"])
    assert best.tolist() == [0.0]  # c's 0, not a's own 1.0
    best = best_non_mated(np.array([[1, 0]], np.float32), ["a"], embeddings[:2], ["a", "b"])
    assert best.tolist() == [-1.0]  # b's -1: a's own score is left out, not set to 0


def test_best_non_mated_with_nobody_enrolled_or_malformed_trials():
    trials = np.array([[1, 0], [0, 1]], np.float32)
    assert best_non_mated(trials[:1], ["a"], np.zeros((0, 2)), []).size == 0
    # an owner who is not enrolled has no score left out: each trial's best is its own match
    assert best_non_mated(trials, ["x", "x"], trials, ["a", "b"]).tolist() == [1.0, 1.0]
    many = np.tile(trials, (150, 1))  # 300 trials: counts past CPython's small-int cache
    assert best_non_mated(many, ["a", "b"] * 150, trials, ["a", "b"]).tolist() == [0.0] * 300
    for bad_trials, owners in [(trials[0], ["a", "b"]),  # a row [D], not trials [T, D]
                               (trials[None], ["a"]),  # [1, T, D]
                               (trials, ["a"]),  # fewer owners than trials
                               (trials[:1], ["a", "b"])]:  # more owners than trials
        with pytest.raises(AssertionError):
            best_non_mated(bad_trials, owners, trials, ["a", "b"])


def test_calibrate_open_set_scores_each_window_against_the_others_and_sets_the_gallery():
    enrolled = enrolled_of({"a": [1, 0], "b": [0, 1]})
    windows = np.array([[0.6, 0.8], [1, 0], [0, 1]], np.float32)
    # a's window against b: 0.8; b's windows against a: 1.0 and 0.0
    got = calibrate_open_set(windows, ["a", "b", "b"], enrolled.calibrations, far=0.34)  # 1 of 3
    f32 = float(np.float32(0.8))
    assert (got.threshold, got.accepted, got.trials, got.far_target, got.method) == \
        (above(f32), 1, 3, 0.34, WINDOWS_METHOD)
    assert enrolled.calibrations.open_set == got and enrolled.gallery.threshold == got.threshold
    alone = enrolled_of({"a": [1, 0]})
    alone.gallery.threshold = 0.5
    assert calibrate_open_set(windows[:1], ["a"], alone.calibrations) is None
    assert alone.calibrations.open_set is None and alone.gallery.threshold == 0.5


def test_an_uncalibrated_live_gallery_recalibrates_at_the_default_rate():
    enrolled = enrolled_of({f"p{i}": [np.cos(i / 10), np.sin(i / 10)] for i in range(3)})
    got = recalibrate_open_set(enrolled.calibrations)
    assert got.far_target == FALSE_ALARM_RATE == 0.01 and got.trials == 3 and got.accepted == 0


def test_the_calibration_record_describes_itself_exactly():
    c = Calibration(0.5, 0.2, 0.2, 5, 1, "2026-01-01T00:00:00Z", "enc", "hand")
    assert c.describe() == ("threshold 0.5000: accepts 1 of 5 non-mated trials (20.0%; target "
                            "20.0%); hand; 2026-01-01T00:00:00Z")
    few = Calibration(0.5, 0.01, 0.0, 3, 0, "2026-01-01T00:00:00Z", "enc", "hand")
    assert few.describe() == ("threshold 0.5000: accepts 0 of 3 non-mated trials (0.0%; target "
                              "1.0%); 3 trials cannot measure 1.0% (the finest rate is 33.3%), "
                              "so none is accepted; hand; 2026-01-01T00:00:00Z")


def test_the_threshold_records_cannot_be_changed_once_made():
    """A gallery hands out its records: a caller must not be able to alter the threshold a
    record says was measured."""
    record = Calibration(0.5, 0.2, 0.2, 5, 1, "", "enc", "hand")
    verification = VerificationCalibration(3.0, "as-norm", 200, 0.01, 0.0, 100, 0, 10, 1, 5,
                                           "", "enc", "hand")
    for made in (record, verification):
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.threshold = 0.0


@pytest.mark.parametrize("far, trials, enough", [
    (0.2, 5, True),  # f * T = 1: one trial may be accepted
    (1 / 49, 49, True),  # f * T = 1, although (1 / 49) * 49 < 1 in floating point
    (0.19, 5, False),  # f * T = 0.95: not even one
])
def test_enough_trials_means_one_trial_may_be_accepted(far, trials, enough):
    assert Calibration(0.5, far, 0.0, trials, 0, "", "enc", "hand").enough_trials is enough

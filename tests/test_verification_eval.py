"""eval's verification section on trials whose scores are known, and its DET plot."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from voiceface.verification_eval import (better, det_corners, evaluate_verification, markdown,
                                         plot_det)
from voiceface.verification import AS_NORM, RAW

# three people enrolled on the axes; each held-out window's cosines are its coordinates
ENROLL = {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0]), "c": np.array([0, 0, 1.0])}
TRIALS = [("a", np.array([0.8, 0.6, 0])),  # mated 0.8; non-mated b 0.6, c 0
          ("a", np.array([0.6, 0, 0.8])),  # mated 0.6; non-mated b 0, c 0.8
          ("b", np.array([0, 1.0, 0])),  # mated 1.0; non-mated 0, 0
          ("c", np.array([0, 0.6, 0.8]))]  # mated 0.8; non-mated a 0, b 0.6
# mated [0.8, 0.6, 1.0, 0.8]; non-mated [0.6, 0, 0, 0.8, 0, 0, 0, 0.6]


def test_the_raw_scores_of_a_hand_worked_case():
    section = evaluate_verification(["a", "b", "c"], ENROLL, TRIALS, 0.25, None)
    assert (section["people"], section["mated_trials"], section["non_mated_trials"]) == (3, 4, 8)
    assert list(section["scores"]) == [RAW]  # 3 people: no cohort left for AS-norm
    raw = section["scores"][RAW]
    # (false-accept, miss) at the thresholds 0, 0.6, 0.8, 1: (1, 0), (3/8, 0), (1/8, 1/4),
    # (0, 3/4); nearest at 0.8: EER (1/8 + 1/4) / 2
    assert raw["eer"] == pytest.approx(0.1875)
    # cost 0.01 miss + 0.99 fa, over 0.01: 99, 37.125, 12.625, 0.75 and 1 (reject all)
    assert raw["min_dcf"] == pytest.approx(0.75)
    # at 25 %: at most 2 of the 8 accepted; the tie at 0.6 makes it 1 (the 0.8); the mated
    # 0.6 is rejected
    t = raw["threshold"]
    assert 0.6 < t["threshold"] <= 0.8
    assert (t["false_accepts"], t["non_mated_trials"], t["false_rejects"], t["mated_trials"],
            t["far"], t["frr"], t["enough_trials"]) == (1, 8, 1, 4, 0.125, 0.25, True)
    # 8 non-mated trials cannot measure 1 % or 0.1 %: none is accepted, 3 of 4 mated rejected
    at_1, at_01 = raw["frr_at_far"]
    assert (at_1["far_target"], at_01["far_target"]) == (0.01, 0.001)
    for point in (at_1, at_01):
        assert (point["false_accepts"], point["false_rejects"], point["enough_trials"]) == \
            (0, 3, False)
    assert raw["det"] == {"false_alarm_rate": [1.0, 0.375, 0.125, 0.0, 0.0],
                          "miss_rate": [0.0, 0.0, 0.25, 0.75, 1.0]}
    assert section["better"] is None


def test_the_report_says_when_the_trials_are_too_few_and_which_score_is_better():
    text = "\n".join(markdown(evaluate_verification(["a", "b", "c"], ENROLL, TRIALS, 0.25,
                                                    None)))
    assert "4 mated trials" in text and "8 non-mated" in text
    assert "too few trials: 8 non-mated cannot measure 1.0% (that needs 100)" in text
    assert "too few trials: 8 non-mated cannot measure 0.1% (that needs 1000)" in text
    assert "| raw cosine | 0.188 | 0.750 |" in text
    assert "0.125 / 0.250 |" in text  # the threshold's FAR / FRR
    assert "Only the raw cosine: 3 people" in text and "mean nothing" in text
    rng = np.random.default_rng(0)
    people = {f"p{i}": v / np.linalg.norm(v) for i, v in enumerate(rng.standard_normal((6, 8)))}
    trials = [(p, e + 0.3 * rng.standard_normal(8)) for p, e in people.items() for _ in range(20)]
    trials = [(p, t / np.linalg.norm(t)) for p, t in trials]
    section = evaluate_verification(list(people), people, trials, 0.01, None)
    assert list(section["scores"]) == [RAW, AS_NORM]
    assert section["non_mated_trials"] == 120 * 5
    at_1 = section["scores"][AS_NORM]["frr_at_far"][0]
    assert at_1["enough_trials"] and at_1["false_accepts"] <= 6
    text = "\n".join(markdown(section))
    assert "| AS-norm |" in text and f"of 120 mated rejected; {at_1['false_accepts']} of 600 " \
                                     "non-mated accepted" in text
    assert ("**Better here:" in text) == (section["better"] is not None)


def test_the_better_score_is_lower_in_eer_and_min_dcf():
    def kinds(raw, norm):
        return {RAW: dict(zip(("eer", "min_dcf"), raw)),
                AS_NORM: dict(zip(("eer", "min_dcf"), norm))}

    assert better(kinds((0.2, 0.5), (0.1, 0.5))) == AS_NORM
    assert better(kinds((0.1, 0.4), (0.1, 0.5))) == RAW
    assert better(kinds((0.1, 0.6), (0.2, 0.5))) is None  # each lower in one
    assert better(kinds((0.1, 0.5), (0.1, 0.5))) is None
    assert better({RAW: {"eer": 0.1, "min_dcf": 0.5}}) is None


def test_the_det_staircase_keeps_its_corners_only():
    fa = np.array([1, 0.75, 0.5, 0.5, 0.5, 0.25, 0.0])
    miss = np.array([0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0])
    assert det_corners(fa, miss).tolist() == [True, False, True, False, True, False, True]


@pytest.mark.parametrize("case", ["scores", "note"])
def test_the_det_plot_is_a_png(tmp_path, case):
    section = (evaluate_verification(["a", "b", "c"], ENROLL, TRIALS, 0.25, None)
               if case == "scores" else evaluate_verification(["a"], ENROLL, [], 0.01, None))
    path = plot_det(section, tmp_path / "det.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (600, 600)
    assert path.stat().st_size > 10_000

"""eval's protocol: which windows enroll and which are trials, which people train the mapper,
and the retrieval scores of predicted latents, on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from voiceface.evaluate import held_out_split
from voiceface.metrics import identity_folds, retrieval


def test_retrieval_scores_predictions_against_the_true_latents():
    truth = np.array([[0.0], [1.0], [3.0]])
    predicted = np.array([[2.0], [4.0], [2.5]])
    # distances from each prediction to the latents 0, 1, 3:
    #   p0 = 2:   2, 1, 1       own 2: both others nearer, rank 2, beats no foil: 0
    #   p1 = 4:   4, 3, 1       own 3: rank 1, beats foil 0 (4), not foil 2 (1): 1/2
    #   p2 = 2.5: 2.5, 1.5, 0.5 own 0.5: rank 0, beats both: 1
    result = retrieval(predicted, truth, seed=0)
    assert result["R@1"] == pytest.approx(1 / 3) and result["chance_R@1"] == pytest.approx(1 / 3)
    assert "R@5" not in result  # 3 people: only ranks within the gallery are reported
    assert result["matching_1to2"] == 0.5
    low, high = result["matching_1to2_ci95"]
    assert 0 <= low < 0.5 < high <= 1


def test_the_held_out_windows_never_enroll():
    rows = [{"person": "a", "recording": "r0.wav"}, {"person": "a", "recording": "r0.wav"},
            {"person": "a", "recording": "r1.wav"}, {"person": "a", "recording": "r1.wav"},
            {"person": "b", "recording": "r.wav", "part": "enroll"},
            {"person": "b", "recording": "r.wav", "part": "held_out"},
            {"person": "b", "recording": "r.wav", "part": "enroll"},
            {"person": "c", "recording": "r.wav"},  # unsplit: enrolls, nothing held out
            {"person": "d", "recording": "r.wav", "part": "held_out"}]  # nothing to enroll
    by_person = {}
    for i, row in enumerate(rows):
        by_person.setdefault(row["person"], []).append(i)
    split = held_out_split(["a", "b", "c", "d", "e"], rows, by_person)
    assert split == {"a": ([0, 1], [2, 3]), "b": ([4, 6], [5]), "c": ([7], [])}
    for person, (kept, held) in split.items():
        assert not set(kept) & set(held) and sorted(kept + held) == by_person[person], person
        assert all(rows[i].get("part") != "held_out" for i in kept), person
    recordings = [{rows[i]["recording"] for i in rows_} for rows_ in split["a"]]
    assert recordings == [{"r0.wav"}, {"r1.wav"}]  # the held-out recording enrolls nothing


def test_identity_folds_hold_out_everyone_once_and_never_train_on_them():
    people = [f"p{i}" for i in range(10)]
    folds = identity_folds(people, 4, seed=0)
    assert sorted(len(test) for _, test in folds) == [2, 2, 3, 3]
    assert sorted(p for _, test in folds for p in test) == sorted(people)
    for train, test in folds:
        assert not set(train) & set(test) and sorted(train + test) == sorted(people)
    assert identity_folds(people, 4, seed=0) == folds
    assert len(identity_folds(people[:3], 5, seed=0)) == 3  # never more folds than people

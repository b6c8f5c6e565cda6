"""Issue 16: generated faces of unseen people stay in the enrolled population.

Synthetic people whose latents lie far from w_avg (`benchmarks.population`); `python -m
benchmarks.population` prints the figures, the old behaviour (everything centred on w_avg)
beside the new one.
"""

from __future__ import annotations

import numpy as np

from benchmarks.population import measure, synthetic_population

MIN_RATIO = 4.0  # drawn latents at least this many times nearer the centre than w_avg


def test_unseen_peoples_faces_are_drawn_near_the_population_not_the_average_face():
    data = synthetic_population(seed=0)
    typical = np.sqrt(data["latents"].shape[1])  # of a sampled w from w_avg
    assert np.linalg.norm(data["latents"].mean(0) - data["w_avg"]) > 2.5 * typical  # far away
    result = measure(data, centred_on_population=True)
    assert result["ratio"] >= MIN_RATIO, result

"""Properties that hold for every input, checked with Hypothesis on generated ones (the
threshold at a false-alarm rate has its own in test_metrics.py).

Derandomised (the same examples on every run, so CI is deterministic), without an example
database, and with few examples each: the file runs in seconds.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from voiceface import audio
from voiceface.audio import (MAX_DECODED_SAMPLES, MAX_DECODED_SECONDS,
                             MAX_INPUT_RATE, MIN_INPUT_RATE,
                             RAW_SECONDS_FACTOR, SAMPLE_RATE, AudioError, load_audio)
from voiceface.enrolled import Enrolled
from voiceface.gallery import Gallery

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
DIM = 6


def unit_vectors(n: int):
    """n vectors [n, DIM] of norm 1 (drawn as coordinates, kept away from the zero vector)."""
    vectors = arrays(np.float32, (n, DIM),
                     elements=st.floats(-1, 1, width=32, allow_subnormal=False))
    return vectors.filter(lambda v: bool(np.all(np.linalg.norm(v, axis=1) > 0.1))).map(
        lambda v: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))


@st.composite
def galleries(draw):
    """A gallery after some adds and removes, and a few queries [Q, DIM]."""
    n = draw(st.integers(1, 12))
    gallery = Gallery(DIM, "enc", index=draw(st.sampled_from(["flat", "hnsw"])))
    ids = draw(st.permutations([f"p{i}" for i in range(n)]))  # added in any order
    for person, e in zip(ids, draw(unit_vectors(n))):
        gallery.add(person, e, name=f"Person {person}")
    for person in draw(st.sets(st.sampled_from(ids), max_size=n - 1)):
        gallery.remove(person)
    return gallery, draw(unit_vectors(draw(st.integers(1, 3))))


@pytest.mark.slow
@PROPERTY
@given(galleries(), st.integers(1, 12))
def test_a_saved_and_loaded_gallery_searches_the_same(case, k):
    gallery, queries = case
    before = [gallery.search(q, k) for q in queries]  # also with an index built before saving
    with tempfile.TemporaryDirectory() as directory:
        loaded = Enrolled.load(Enrolled.of(gallery).save(f"{directory}/g")).gallery
        assert [loaded.search(q, k) for q in queries] == before
        assert [p.id for p in loaded.people] == [p.id for p in gallery.people]


BOMB_RATE = 384_000  # Hz
rates = st.integers(MIN_INPUT_RATE, MAX_INPUT_RATE)
channels = st.integers(1, 8)


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any sample is converted (decoded) from here on."""
    to_float = audio._to_float

    def checked(samples):
        assert len(samples) == 0, "samples were decoded"
        return to_float(samples)

    monkeypatch.setattr(audio, "_to_float", checked)


@PROPERTY
@given(rates, channels, st.sampled_from(["samples", "length"]), st.floats(0.0, 3.0),
       st.sampled_from([None, 30.0]))
@example(BOMB_RATE, 8, "samples", 0.0, None)  # issue 21's file: 384 kHz, 8 channels
@example(48_000, 6, "samples", 0.0, None)  # 5.1 surround, still under the length cap
def test_audio_over_a_limit_is_refused_at_every_rate_and_channel_count(
        no_decoding, rate, n_channels, cap, excess, max_seconds):
    """However many channels at whatever rate, more samples than the decoded-sample cap or a
    longer recording than the length cap is refused from its header, before a sample is
    decoded (the samples are a broadcast view of one zero)."""
    if cap == "samples":
        limit = MAX_DECODED_SAMPLES // n_channels
    else:
        limit = (MAX_DECODED_SECONDS if max_seconds is None
                 else RAW_SECONDS_FACTOR * max_seconds) * rate
    frames = int(limit * (1 + excess)) + 1
    samples = np.broadcast_to(np.zeros((1, 1), np.int16), (frames, n_channels))
    try:
        load_audio((rate, samples), max_seconds=max_seconds)
    except AudioError as err:
        assert str(err).startswith("The recording ") and str(err).endswith(".")
    else:
        raise AssertionError(f"{frames} frames x {n_channels} at {rate} Hz were accepted")


@settings(PROPERTY, max_examples=25)
@given(st.one_of(rates, st.sampled_from([8_000, 11_025, 22_050, 44_100, 48_000, 96_000])),
       channels, st.floats(1.2, 2.0))
def test_audio_within_the_limits_decodes_to_16_khz_mono_at_every_rate(rate, n_channels,
                                                                      seconds):
    frames = int(seconds * rate)
    t = np.arange(frames) / rate
    tone = 0.5 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    samples = np.repeat(tone[:, None], n_channels, axis=1).astype(np.float32)
    try:
        out = load_audio((rate, samples), trim=False)
    except AudioError as err:  # rates whose resampling table would be too large
        assert "unusual sample rate" in str(err) and math.gcd(rate, SAMPLE_RATE) < 1000
        return
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == math.ceil(frames * SAMPLE_RATE / rate)
    assert np.all(np.isfinite(out))
    assert 0.5 < np.abs(out).max() < 1.0  # the channels averaged, not summed

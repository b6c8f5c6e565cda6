"""1:1 verification: AS-norm maths on hand-worked numbers, the calibrated threshold, the call,
the CLI's exit codes, and live recalibration."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from badaudio import write_corpus
from conftest import DEV_PEOPLE, PHOTO, REPO
from voiceface import cli
from voiceface.audio import AudioError, load_audio
from voiceface.calibration import calibrate
from voiceface.build import BuildConfig, build
from voiceface.devbundle import (TINY_GENERATOR, synthetic_voice, write_people_folder,
                                 write_random_backbone)
from voiceface.enroll import LiveGallery
from voiceface import verification
from voiceface.enrolled import Enrolled
from voiceface.gallery import DEFAULT_THRESHOLD
from voiceface.gallery_files import MANIFEST
from voiceface.invert import InversionConfig
from voiceface.pipeline import VoiceFace
from voiceface.stylegan2 import Generator
from voiceface.verification import (AS_NORM, BUILD_METHOD, DEFAULT_NORM_THRESHOLD,
                              DEFAULT_RAW_THRESHOLD, LIVE_METHOD, RAW, STD_FLOOR, UnknownClaim,
                              VerificationCalibration, as_norm, calibrate_verification,
                              check_claim, decide, recalibrate_verification, score_kind,
                              score_trials, top_k_stats)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECORDINGS = 2  # per dev person: the enrollment and the example in voices/, one window each


@pytest.fixture(scope="module")
def vf(dev_bundle):
    return VoiceFace.from_pretrained(dev_bundle, progress=False)


def example(dev_bundle, i: int):
    return dev_bundle / "voices" / f"dev{i:02d}.flac"


# -- the maths ------------------------------------------------------------------------------
def test_top_k_stats_uses_the_k_highest_of_each_cohort():
    scores = np.array([[0.25, 0.75, 0.5, -np.inf],  # top 2: 0.75, 0.5
                       [0.5, 0.0, -0.5, -np.inf]])  # k larger than the cohort: all 3
    mean, std = top_k_stats(scores[:1], 2)
    assert (mean[0], std[0]) == (0.625, 0.125)
    mean, std = top_k_stats(scores, 200)
    assert mean.tolist() == pytest.approx([0.5, 0.0], abs=1e-15)
    assert std[1] == pytest.approx(math.sqrt(0.5 / 3), abs=1e-15)  # (0.25 + 0 + 0.25) / 3
    _, flat = top_k_stats(np.array([[0.5, 0.5]]), 2)
    assert flat[0] == STD_FLOOR  # identical scores: no division by zero
    with pytest.raises(ValueError, match="at least 2 members"):
        top_k_stats(np.array([[0.5, -np.inf]]), 2)


def test_as_norm_averages_both_sides_normalised():
    # enrollment side: top 2 of (0.25, 0.75, 0.5) -> mean 0.625, std 0.125:
    # (0.75 - 0.625) / 0.125 = 1
    # test side: top 2 of (0.5, 0.0) -> mean 0.25, std 0.25: (0.75 - 0.25) / 0.25 = 2
    got = as_norm(np.array([0.75]), np.array([[0.25, 0.75, 0.5]]),
                  np.array([[0.5, 0.0, -np.inf]]), k=2)
    assert got.tolist() == [1.5]


def test_score_trials_leave_the_claim_and_the_impostor_out_of_the_cohort():
    a, b, c, d = [0.6, 0.8, 0, 0], [0, 1, 0, 0], [0, 0.6, 0.8, 0], [0, 0.8, 0, 0.6]
    t = [0.6, 0, 0.8, 0]  # a test of a's
    got = score_trials(np.array([t]), ["a"], np.array([a, b, c, d]), list("abcd"), k=2)
    # raw: mated t.a = 0.36; non-mated, claims b, c, d: 0, 0.64, 0
    assert got[RAW].mated.tolist() == pytest.approx([0.36])
    assert got[RAW].non_mated.tolist() == pytest.approx([0.0, 0.64, 0.0])
    # mated (t, a), cohort b, c, d: enrollment side a.(b, c, d) = 0.8, 0.48, 0.64 -> top 2
    # mean 0.72, std 0.08; test side t.(b, c, d) = 0, 0.64, 0 -> top 2 mean 0.32, std 0.32
    assert got[AS_NORM].mated.tolist() == pytest.approx(
        [0.5 * ((0.36 - 0.72) / 0.08 + (0.36 - 0.32) / 0.32)])  # -2.1875
    # non-mated (t, b), cohort c, d (a is the impostor): b.(c, d) = 0.6, 0.8 -> mean 0.7,
    # std 0.1; t.(c, d) = 0.64, 0 -> mean 0.32, std 0.32; s = 0.5 * (-7 + -1) = -4
    assert got[AS_NORM].non_mated[0] == pytest.approx(-4.0)
    assert got[AS_NORM].non_mated.size == 3


def test_galleries_too_small_for_a_cohort_score_raw_cosines():
    assert [score_kind(n) for n in (1, 2, 3, 4)] == [RAW, RAW, RAW, AS_NORM]
    e = np.eye(3)
    got = score_trials(e, ["a", "b", "c"], e, ["a", "b", "c"])
    assert set(got) == {RAW} and got[RAW].non_mated.size == 6


# -- calibration ----------------------------------------------------------------------------
def unit(rng, n, d=8):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_gallery(rng, people=8, windows=3):
    """A gallery of `people` (with its records) and their windows: two recordings each (one
    for the last)."""
    enrolled = Enrolled.new(8, "enc")
    gallery = enrolled.gallery
    rows, owners, recordings = [], [], []
    for i in range(people):
        centre = unit(rng, 1)[0]
        w = unit(rng, 2 * windows) * 0.5 + centre  # near their own centre
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        n_rec = 1 if i == people - 1 else 2
        w = w[:n_rec * windows]
        gallery.add(f"p{i}", (w.mean(0) / np.linalg.norm(w.mean(0))).astype(np.float32))
        rows.append(w)
        owners += [f"p{i}"] * len(w)
        recordings += [f"voice{j // windows}.wav" for j in range(len(w))]
    return enrolled, np.concatenate(rows), owners, recordings


@pytest.mark.parametrize("far", [0.01, 0.05, 0.2, 0.5])
def test_the_threshold_accepts_at_most_the_target_share_of_its_non_mated_trials(far):
    enrolled, windows, owners, recordings = random_gallery(np.random.default_rng(1))
    gallery = enrolled.gallery
    c = calibrate_verification(windows, owners, recordings, enrolled.calibrations, far)
    assert enrolled.calibrations.verification is c and c.score == AS_NORM and c.people == 8
    # non-mated: 7 * 6 + 3 windows, each against the 7 others; mated: the 7 people with two
    # recordings, each window against their other recording (the last person has none)
    assert (c.non_mated_trials, c.mated_trials) == ((7 * 6 + 3) * 7, 7 * 6)
    ids = [p.id for p in gallery.people]
    non_mated = score_trials(windows, owners, gallery.embeddings(), ids)[AS_NORM].non_mated
    accepted = int(np.count_nonzero(non_mated >= c.threshold))
    assert accepted == c.false_accepts <= far * c.non_mated_trials
    assert c.far_achieved == accepted / c.non_mated_trials <= far
    assert 0 <= c.frr <= 1 and c.frr == c.false_rejects / c.mated_trials


def test_a_mated_trial_is_scored_against_the_owners_other_recordings_pooled(monkeypatch):
    """Leave one recording out: a window's enrollment is the renormalised sum of its owner's
    windows from their other recording (the last person has one recording: no mated trial)."""
    enrolled, windows, owners, recordings = random_gallery(np.random.default_rng(4), people=5)
    calls = []
    real = verification.score_trials
    monkeypatch.setattr(verification, "score_trials",
                        lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs))
    calibrate_verification(windows, owners, recordings, enrolled.calibrations)
    mated, pooled = calls[0]["mated"], calls[0]["mated_enrollments"]
    assert mated.tolist() == [owner != "p4" for owner in owners]
    for i in np.flatnonzero(mated):
        other = [j for j in range(len(windows))
                 if owners[j] == owners[i] and recordings[j] != recordings[i]]
        expected = windows[other].sum(axis=0)
        np.testing.assert_allclose(pooled[i], expected / np.linalg.norm(expected), atol=1e-12)


def test_the_score_is_timed_within_the_call_and_a_small_gallery_has_the_open_set_placeholder():
    gallery = random_gallery(np.random.default_rng(5), people=3)[0].gallery
    start = time.perf_counter()
    result = decide(gallery.embedding("p0"), "p0", gallery, None, {})
    elapsed = time.perf_counter() - start
    assert 0 < result.timings["score"] == result.timings["total"] <= elapsed
    # raw cosines without a calibration: the open-set placeholder, so the two decisions agree
    assert result.method == RAW and result.threshold == DEFAULT_THRESHOLD
    assert result.accepted and result.score == pytest.approx(1.0)


def test_the_record_round_trips_and_old_galleries_load(tmp_path):
    enrolled, windows, owners, recordings = random_gallery(np.random.default_rng(2))
    c = calibrate_verification(windows, owners, recordings, enrolled.calibrations)
    enrolled.save(tmp_path / "g")
    assert Enrolled.load(tmp_path / "g").calibrations.verification == c
    assert VerificationCalibration.from_dict(c.to_dict()) == c
    manifest = json.loads((tmp_path / "g" / MANIFEST).read_text())
    del manifest["verification"]  # as saved before verification existed
    (tmp_path / "g" / MANIFEST).write_text(json.dumps(manifest))
    old = Enrolled.load(tmp_path / "g")
    assert old.calibrations.verification is None and len(old.gallery) == 8
    enrolled.gallery.remove("p0")  # changed people: the measurement no longer describes them
    assert enrolled.calibrations.verification is None


def test_a_live_recalibration_has_no_mated_trials_and_keeps_the_target_rate():
    enrolled = random_gallery(np.random.default_rng(3), people=5)[0]
    gallery, records = enrolled.gallery, enrolled.calibrations
    records.calibrate(calibrate(np.array([0.1, 0.2]), 0.2, "enc", "open set, as a build sets it"))
    c = recalibrate_verification(records)
    assert (c.non_mated_trials, c.mated_trials, c.frr, c.method) == (5 * 4, 0, None, LIVE_METHOD)
    assert c.far_target == 0.2
    assert "FRR unmeasured" in c.describe()
    assert recalibrate_verification(records) is c  # nothing changed: the record (and date) stay
    for person in ("p0", "p1", "p2"):
        gallery.remove(person)
    two = recalibrate_verification(records)
    assert (two.score, two.non_mated_trials) == (RAW, 2)
    gallery.remove("p3")
    assert recalibrate_verification(records) is None and records.verification is None


def test_the_verification_record_describes_itself_exactly():
    measured = VerificationCalibration(3.25, AS_NORM, 200, 0.25, 0.25, 4, 1, 8, 1, 5, "D", "enc",
                                       "hand")
    assert measured.frr == 0.125 and measured.enough_trials
    assert measured.describe() == (
        "verification threshold 3.2500 (as-norm): accepts 1 of 4 non-mated trials (25.0%; "
        "target 25.0%); rejects 1 of 8 mated trials (12.5%); 5 people; hand; D")
    few = VerificationCalibration(0.5, RAW, 200, 0.1, 0.0, 4, 0, 0, 0, 2, "D", "enc", "hand")
    assert few.frr is None and not few.enough_trials
    assert few.describe() == (
        "verification threshold 0.5000 (raw-cosine): accepts 0 of 4 non-mated trials (0.0%; "
        "target 10.0%), too few to measure 10.0% (the finest rate is 25.0%), so none is "
        "accepted; no mated trials: FRR unmeasured; 2 people; hand; D")
    # f * T = 1 although (1 / 49) * 49 < 1 in floating point: one trial may be accepted
    assert VerificationCalibration(0.5, RAW, 200, 1 / 49, 0.0, 49, 0, 0, 0, 2, "D", "enc",
                                   "hand").enough_trials


# -- the call -------------------------------------------------------------------------------
def test_the_claimed_persons_own_voice_is_accepted_and_another_rejected(vf, dev_bundle):
    c = vf.state.enrolled.calibrations.verification
    people = DEV_PEOPLE
    assert (c.non_mated_trials, c.mated_trials) == (people * RECORDINGS * (people - 1),
                                                    people * RECORDINGS)
    # The tiny random encoder puts every voice at cosine ~0.99; AS-norm still ranks each
    # example voice highest against its own person, though only dev01 clears the threshold
    # that accepts none of the non-mated trials (the result's FRR says how often it misses).
    for i in range(people):
        scores = [vf.verify(example(dev_bundle, i), f"dev{j:02d}").score for j in range(people)]
        assert int(np.argmax(scores)) == i
    accepted = vf.verify(example(dev_bundle, 1), "dev01")
    assert accepted.accepted and accepted.score >= accepted.threshold == c.threshold
    assert (accepted.claim, accepted.name, accepted.method) == ("dev01", "Test person 2", AS_NORM)
    assert (accepted.far, accepted.far_trials) == (c.far_achieved, c.non_mated_trials)
    assert (accepted.frr, accepted.frr_trials) == (c.frr, c.mated_trials)
    assert set(accepted.timings) == {"load_audio", "embed", "score", "total"}
    rejected = vf.verify(example(dev_bundle, 1), "dev00")
    assert not rejected.accepted and rejected.score < rejected.threshold
    assert rejected.cosine > 0.9  # a raw cosine alone would not tell them apart


def test_a_query_is_scored_as_the_calibration_scores_a_mated_trial(vf, dev_bundle):
    embedding = vf.encoder.embed(load_audio(example(dev_bundle, 2)))
    ids = [p.id for p in vf.gallery.people]
    trials = score_trials(embedding[None], ["dev02"], vf.gallery.embeddings(), ids)
    result = vf.verify(example(dev_bundle, 2), "dev02")
    assert result.score == pytest.approx(trials[AS_NORM].mated[0], abs=1e-9)
    assert result.cosine == pytest.approx(trials[RAW].mated[0], abs=1e-6)


def test_an_unknown_claim_names_the_enrolled_ids_before_reading_the_audio(vf, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    with pytest.raises(UnknownClaim, match="nobody.*6 enrolled ids: dev00, dev01.*dev05"):
        vf.verify(bad, "nobody")
    assert issubclass(UnknownClaim, ValueError)
    many = random_gallery(np.random.default_rng(6), people=23)[0].gallery  # more than listed
    with pytest.raises(UnknownClaim, match=r"23 enrolled ids: p0, p1, .*, p19 and 3 more\.$"):
        check_claim(many, "nobody")


@pytest.mark.slow
def test_bad_audio_is_refused_with_the_reason(vf, tmp_path):
    cases = write_corpus(tmp_path)
    for name in ("empty file", "png image", "pure silence", "50 ms clip"):
        case = cases[name]
        with pytest.raises(AudioError) as err:
            vf.verify(case.path, "dev00")
        for pattern in case.expect:
            assert err.match(pattern), (name, str(err.value))


def test_tiny_and_unmeasured_galleries_say_so(vf, dev_bundle):
    three = Enrolled.new(vf.gallery.dim, vf.gallery.encoder_fingerprint)
    for i in range(3):
        three.gallery.add(f"dev{i:02d}", vf.gallery.embedding(f"dev{i:02d}"))
    result = VoiceFace(vf.encoder, vf.generator, three).verify(example(dev_bundle, 1), "dev01")
    assert result.method == RAW and result.score == result.cosine
    assert result.threshold == DEFAULT_RAW_THRESHOLD and result.far is None and result.frr is None
    assert any("too few to normalise" in n for n in result.notes)
    assert any("threshold unmeasured" in n for n in result.notes)
    three.gallery.add("dev03", vf.gallery.embedding("dev03"))  # 4 people: AS-norm, still unmeasured
    result = VoiceFace(vf.encoder, vf.generator, three).verify(example(dev_bundle, 1), "dev01")
    assert (result.method, result.threshold, result.far_trials) == (AS_NORM,
                                                                     DEFAULT_NORM_THRESHOLD, 0)


# -- the CLI --------------------------------------------------------------------------------
def run(capsys, *args):
    code = cli.main(["verify", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes_and_json(dev_bundle, capsys, tmp_path):
    voice_path = example(dev_bundle, 1)
    code, out, _ = run(capsys, voice_path, "--claim", "dev01", "--bundle", dev_bundle, "--json")
    report = json.loads(out)
    assert code == 0 and report["accepted"] is True and report["claim"] == "dev01"
    assert {"claim", "score", "threshold", "accepted", "far", "frr", "timings"} <= set(report)
    assert report["score"] >= report["threshold"] and report["timings"]["total"] > 0
    code, out, _ = run(capsys, voice_path, "--claim", "dev00", "--bundle", dev_bundle)
    assert code == 1 and out.startswith("rejected: Test person 1 (dev00)")
    code, out, err = run(capsys, voice_path, "--claim", "nobody", "--bundle", dev_bundle)
    assert code == 2 and not out and err.count("\n") == 1 and "dev00, dev01" in err
    bad = tmp_path / "clip.wav"
    bad.write_bytes(b"")
    code, out, err = run(capsys, bad, "--claim", "dev01", "--bundle", dev_bundle)
    assert code == 2 and not out and err.startswith("error:") and "empty" in err


@pytest.mark.slow
def test_cli_exit_status_of_the_process(dev_bundle):
    proc = subprocess.run([sys.executable, "-m", "voiceface", "verify",
                           str(example(dev_bundle, 1)), "--claim", "dev00", "--bundle",
                           str(dev_bundle)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ})
    assert proc.returncode == 1 and proc.stdout.startswith("rejected:"), proc.stderr


# -- live enrollment ------------------------------------------------------------------------
def test_live_enrollment_and_deletion_recalibrate_the_verification_threshold(dev_bundle,
                                                                            tmp_path):
    inversion = InversionConfig(steps=3, n_init=2, resolution=32, revision=None,
                                backbone=str(write_random_backbone(tmp_path / "backbone")))
    vf = VoiceFace.from_pretrained(dev_bundle, progress=False)
    live = LiveGallery.open(vf, tmp_path / "live", inversion=inversion,
                            min_people=DEV_PEOPLE + 2)
    try:
        built = vf.state.enrolled.calibrations.verification
        aiko_voice = (16_000, synthetic_voice(6.0, seed=1, f0=320.0, formant=1300.0))
        aiko = live.enroll("Aiko", aiko_voice, PHOTO, consent=True)
        for enrolled in (vf.state.enrolled, Enrolled.load(tmp_path / "live" / "gallery")):
            c = enrolled.calibrations.verification
            assert (c.people, c.non_mated_trials, c.mated_trials, c.method) == (
                DEV_PEOPLE + 1, (DEV_PEOPLE + 1) * DEV_PEOPLE, 0, LIVE_METHOD)
            assert c.far_target == built.far_target
        result = vf.verify(aiko_voice, aiko)
        assert result.frr is None and result.frr_trials == 0
        assert any("false-reject rate unmeasured" in n for n in result.notes)
        live.delete(aiko)
        c = vf.state.enrolled.calibrations.verification
        assert (c.people, c.non_mated_trials) == (DEV_PEOPLE, DEV_PEOPLE * (DEV_PEOPLE - 1))
    finally:
        live.close()


# -- build ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_build_calibrates_verification_on_every_window(tiny_xvector_dir, tmp_path):
    people = write_people_folder(tmp_path / "people", n_people=4)  # two recordings each
    Generator(TINY_GENERATOR, seed=1).save_pretrained(tmp_path / "generator")
    config = BuildConfig(encoder=str(tiny_xvector_dir), encoder_revision=None,
                         generator=str(tmp_path / "generator"), generator_revision=None,
                         inversion=InversionConfig(steps=2, n_init=1, resolution=32,
                                                   backbone=str(write_random_backbone(
                                                       tmp_path / "backbone")), revision=None),
                         far=0.05)
    report = build(people, tmp_path / "index", config, progress=False)
    windows = len(np.load(tmp_path / "index" / "windows.npy"))
    c = Enrolled.load(tmp_path / "index" / "gallery").calibrations.verification
    # every window is a mated trial (each person has another recording) and a non-mated
    # trial against each of the 3 others; the open set's target rate is the verification's
    assert (c.score, c.people, c.far_target, c.method) == (AS_NORM, 4, 0.05, BUILD_METHOD)
    assert (c.mated_trials, c.non_mated_trials) == (windows, 3 * windows)
    assert c.false_accepts <= 0.05 * c.non_mated_trials and c.frr is not None
    assert report.verification == c.to_dict() and "verification threshold" in report.summary()

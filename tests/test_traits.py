"""Voice traits: pitch from synthetic voices of known F0, the shipped apparent-sex classifier's
answers on real LibriSpeech speakers it was not fitted on, bad input, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from voiceface import traits
from voiceface.audio import SAMPLE_RATE, AudioError
from voiceface.devbundle import synthetic_voice

SPEAKERS = REPO.parent / "shared" / "fixtures" / "librispeech-sex"
# Held-out speakers (not in the classifier's train_files): file, recorded sex, what the
# shipped classifier answers, median F0 in Hz. 8629 is one of its disagreements (a male voice
# heard as female at 171 Hz), 1363 one it leaves unsure.
HELD_OUT = [
    ("1040-133433-0000.flac", "M", "male", 129.9),
    ("1069-133699-0000.flac", "F", "female", 192.3),
    ("1624-142933-0000.flac", "M", "male", 98.3),
    ("250-140277-0000.flac", "F", "female", 181.1),
    ("1363-135842-0000.flac", "F", None, 184.7),
    ("8629-261139-0000.flac", "M", "female", 171.1),
]
PITCH_TOLERANCE = 3.0  # Hz, for synthetic voices of known F0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "voiceface", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ))


@pytest.mark.parametrize("name,recorded,answer,pitch", HELD_OUT)
def test_shipped_classifier_on_held_out_speakers(name, recorded, answer, pitch):
    assert name not in traits.classifier().fit["train_files"]
    t = traits.voice_traits(SPEAKERS / name)
    assert t.apparent_sex == answer
    assert t.pitch_hz == pytest.approx(pitch, abs=1.0)
    assert 0.5 <= t.confidence <= 1 and (t.confidence >= traits.classifier().threshold) \
        == (answer is not None)


@pytest.mark.parametrize("f0", [95.0, 140.0, 210.0, 300.0])
def test_pitch_of_synthetic_voices(f0):
    t = traits.measure(synthetic_voice(4.0, seed=int(f0), f0=f0))
    assert t.pitch_hz == pytest.approx(f0, abs=PITCH_TOLERANCE)
    assert 0 < t.pitch_spread_hz < 0.15 * f0  # the voice wobbles by +-5 %


def test_a_lower_voice_leans_male():
    low, high = (traits.classifier().probability_male(traits.voice_features(
        synthetic_voice(4.0, seed=1, f0=f0))[1]) for f0 in (95.0, 260.0))
    assert low > high


def test_silence_too_short_and_unvoiced_are_audio_errors(tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SAMPLE_RATE * 2, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="silent|no sound|quiet"):
        traits.voice_traits(silent)
    with pytest.raises(AudioError, match="speak for at least"):
        traits.voice_traits((SAMPLE_RATE, synthetic_voice(0.5)))
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, SAMPLE_RATE * 2).astype(np.float32)
    with pytest.raises(AudioError, match="voiced speech"):
        traits.voice_traits((SAMPLE_RATE, noise))


def test_shipped_json_is_well_formed():
    data = json.loads((REPO / "voiceface" / "data" / traits.CLASSIFIER_FILE).read_text())
    model = traits.SexClassifier.from_dict(data)
    assert data["features"] == list(traits.FEATURES) and data["labels"] == ["female", "male"]
    assert model.weights.shape == model.mean.shape == (len(traits.FEATURES),)
    assert 0.5 <= model.threshold < 1
    held_out = model.fit["held_out"]["whole"]
    assert held_out["clips"] == 30 and len(model.fit["train_files"]) == 70
    assert held_out["ci95"][0] <= held_out["agreement"] <= held_out["ci95"][1]


@pytest.mark.parametrize("change", [
    {"features": ["log_f0"]},
    {"weights": [1.0, 2.0]},
    {"scale": [0.0] * len(traits.FEATURES)},
    {"threshold": 1.5},
])
def test_a_damaged_or_foreign_classifier_is_refused(change):
    data = {**traits.classifier().to_dict(), **change}
    with pytest.raises(ValueError, match="benchmarks.traits"):
        traits.SexClassifier.from_dict(data)


def test_cli_json_one_object_per_file():
    files = [SPEAKERS / name for name, *_ in HELD_OUT[:2]]
    proc = run_cli("traits", *files, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["file"] for r in report] == [str(f) for f in files]
    assert all(set(r) == {"file", "pitch_hz", "pitch_spread_hz", "apparent_sex", "confidence"}
               for r in report)
    assert [r["apparent_sex"] for r in report] == ["male", "female"]
    assert report[0] == {"file": str(files[0]),
                         **traits.voice_traits(files[0]).summary()}  # one library call
    text = run_cli("traits", files[0])
    assert text.returncode == 0 and "pitch 130 Hz" in text.stdout and "male" in text.stdout


@pytest.mark.parametrize("kind", ["silent", "short", "not-audio"])
def test_cli_bad_file_exits_2_with_one_line(tmp_path, kind):
    bad = tmp_path / "bad.wav"
    if kind == "not-audio":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    else:
        sf.write(bad, np.zeros(SAMPLE_RATE * 2, np.float32) if kind == "silent"
                 else synthetic_voice(0.5), SAMPLE_RATE)
    proc = run_cli("traits", SPEAKERS / HELD_OUT[0][0], bad, "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.wav" in lines[0]

"""Face to voice: bad photos are refused clearly, the dev bundle and a built bundle answer,
the CLI's JSON, and the evaluation on galleries whose answer is known."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PHOTO, REPO
from voiceface import face2voice as face2voice_module
from voiceface.build import BuildConfig, BuildReport, build
from voiceface.devbundle import TINY_GENERATOR, write_people_folder, write_random_backbone
from voiceface.evaluate import evaluate, markdown
from voiceface.face2voice import FACE2VOICE_DIR, FaceToVoice, evaluate_reverse
from voiceface.face2voice import markdown as face2voice_markdown
from voiceface.faces import FaceError
from voiceface.enrolled import Enrolled
from voiceface.invert import InversionConfig
from voiceface.pipeline import VoiceFace
from voiceface.stylegan2 import Generator


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vf(dev_bundle):
    return VoiceFace.from_pretrained(dev_bundle, progress=False)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "voiceface", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ))


def bad_photo(kind: str, directory):
    """A photo file of `kind` and the words its error must contain."""
    path = directory / f"{kind}.png"
    if kind == "no-face":
        ramp = np.linspace(0, 255, 300, dtype=np.float32)
        pixels = np.stack([ramp[None, :] + 0 * ramp[:, None], ramp[:, None] + 0 * ramp[None, :],
                           np.full((300, 300), 128.0)], axis=-1).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        return path, "No face found"
    if kind == "two-faces":
        photo = Image.open(PHOTO).convert("RGB")
        pair = Image.new("RGB", (photo.width * 2, photo.height))
        pair.paste(photo, (0, 0))
        pair.paste(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (photo.width, 0))
        pair.save(path)
        return path, "Found 2 faces"
    if kind == "not-an-image":
        path.write_text("these are words, not pixels")
        return path, "not an image"
    path.write_bytes(b"")
    return path, "empty (0 bytes)"


BAD_KINDS = ["no-face", "two-faces", "not-an-image", "empty"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_photos_raise_a_clear_face_error(vf, tmp_path, kind):
    path, message = bad_photo(kind, tmp_path)
    with pytest.raises(FaceError, match=re.escape(message)):
        vf.face2voice(path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_cli_bad_photo_exits_2_with_one_line(dev_bundle, tmp_path, kind):
    path, message = bad_photo(kind, tmp_path)
    proc = run_cli("face2voice", path, "--bundle", dev_bundle, "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], \
        proc.stderr


def test_the_dev_bundle_answers_with_the_voices_nearest_the_predicted_one(vf, dev_bundle):
    result = vf.face2voice(PHOTO, k=3)
    assert result.method == "mapper"
    assert [m.rank for m in result.matches] == [1, 2, 3]
    assert np.isclose(np.linalg.norm(result.embedding), 1, atol=1e-5)
    gallery = Enrolled.load(dev_bundle / "gallery").gallery
    scores = gallery.embeddings() @ result.embedding  # every enrolled voice against the guess
    best = [gallery.people[i].id for i in np.argsort(-scores)[:3]]
    assert [m.id for m in result.matches] == best
    assert np.allclose([m.score for m in result.matches], np.sort(scores)[::-1][:3], atol=1e-5)
    assert set(result.timings) == {"align", "features", "map", "search", "total"}
    assert result.timings["total"] >= result.timings["align"] > 0


def test_without_everyone_the_mapper_knew_the_knn_blend_answers(vf, dev_bundle):
    """A mapper trained on someone no longer enrolled is not used; the kNN blend of the people
    still enrolled answers, and the person gone is never among the matches."""
    gallery = Enrolled.load(dev_bundle / "gallery").gallery
    gallery.remove("dev00")
    f2v = FaceToVoice.from_pretrained(
        dev_bundle / FACE2VOICE_DIR, dev_bundle, encoder_fingerprint=vf.encoder.fingerprint,
        generator_fingerprint=vf.generator_fingerprint)
    result = f2v(PHOTO, gallery, k=len(gallery))
    assert result.method == "knn-blend"
    assert "dev00" not in [m.id for m in result.matches] and len(result.matches) == len(gallery)


def test_a_saved_model_loads_the_same(vf, dev_bundle, tmp_path):
    fingerprints = dict(encoder_fingerprint=vf.encoder.fingerprint,
                        generator_fingerprint=vf.generator_fingerprint)
    f2v = FaceToVoice.from_pretrained(dev_bundle / FACE2VOICE_DIR, dev_bundle, **fingerprints)
    f2v.save(tmp_path / "copy" / FACE2VOICE_DIR)  # its parent is made too
    copy = FaceToVoice.from_pretrained(tmp_path / "copy" / FACE2VOICE_DIR, dev_bundle,
                                       **fingerprints)
    assert np.array_equal(copy.features, f2v.features)
    assert copy(PHOTO, vf.gallery).matches == f2v(PHOTO, vf.gallery).matches


@pytest.mark.slow
def test_cli_json_keys(dev_bundle):
    proc = run_cli("face2voice", PHOTO, "--bundle", dev_bundle, "--json", "-k", "4")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"matches", "method", "timings"} <= set(report)
    assert report["method"] == "mapper" and report["test_weights"] is True
    assert len(report["matches"]) == 4
    assert all(set(m) == {"id", "name", "score"} for m in report["matches"])
    scores = [m["score"] for m in report["matches"]]
    assert scores == sorted(scores, reverse=True)
    assert report["timings"]["total"] >= report["timings"]["features"] > 0


def test_a_model_made_for_other_models_is_refused(dev_bundle, vf, tmp_path):
    with pytest.raises(ValueError, match="made for encoder"):
        FaceToVoice.from_pretrained(dev_bundle / FACE2VOICE_DIR, dev_bundle,
                                    encoder_fingerprint="another encoder",
                                    generator_fingerprint=vf.generator_fingerprint)
    other = tmp_path / "bundle"
    shutil.copytree(dev_bundle / FACE2VOICE_DIR, other / FACE2VOICE_DIR)
    write_random_backbone(other / "backbone", seed=1)  # same name, other weights
    with pytest.raises(ValueError, match="made with backbone"):
        FaceToVoice.from_pretrained(other / FACE2VOICE_DIR, other,
                                    encoder_fingerprint=vf.encoder.fingerprint,
                                    generator_fingerprint=vf.generator_fingerprint)
    with pytest.raises(FileNotFoundError, match="no face-to-voice model"):
        FaceToVoice.from_pretrained(tmp_path / "nothing", tmp_path,
                                    encoder_fingerprint=vf.encoder.fingerprint,
                                    generator_fingerprint=vf.generator_fingerprint)


def known_gallery(n_people=40, n_features=8, dim=12, seed=0, related=True):
    """Unit face features and unit voices; with `related`, each voice is a fixed linear
    function of the face features plus a little noise, else drawn independently."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_people, n_features))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    relation = rng.standard_normal((dim, n_features))
    voices = features @ relation.T + 0.05 * rng.standard_normal((n_people, dim)) if related \
        else rng.standard_normal((n_people, dim))
    voices /= np.linalg.norm(voices, axis=1, keepdims=True)
    return ([f"p{i:02d}" for i in range(n_people)], features.astype(np.float32),
            voices.astype(np.float32))


@pytest.mark.slow
def test_the_reverse_mapper_learns_a_known_relation_and_beats_the_knn_blend(monkeypatch):
    trained_on = []
    train = face2voice_module.train_face2voice

    def recording(features, voices, groups, **kwargs):
        trained_on.append(set(groups))
        return train(features, voices, groups, **kwargs)

    monkeypatch.setattr(face2voice_module, "train_face2voice", recording)
    ids, features, voices = known_gallery()
    result = evaluate_reverse(ids, features, voices, folds=5)
    # identity-disjoint folds: everyone is left out of exactly one training set
    assert len(trained_on) == 5
    assert all(sum(i not in seen for seen in trained_on) == 1 for i in ids)
    mapper, knn = result["mapper"], result["knn-blend"]
    assert mapper["chance_R@1"] == 1 / 40 and mapper["chance_R@5"] == 5 / 40
    assert mapper["R@1"] > 10 * mapper["chance_R@1"]
    assert mapper["R@1"] > knn["R@1"] and mapper["matching_1to2"] > knn["matching_1to2"]
    assert mapper["matching_1to2_ci95"][0] > 0.9
    assert result["better_than_chance"]
    text = "\n".join(face2voice_markdown(result))
    assert "**Better than chance**" in text and "No better" not in text


def test_without_a_relation_the_report_says_no_better_than_chance():
    ids, features, voices = known_gallery(related=False)
    result = evaluate_reverse(ids, features, voices, folds=5)
    assert not result["better_than_chance"]
    assert result["mapper"]["matching_1to2_ci95"][0] <= 0.5
    assert "**No better than chance**" in "\n".join(face2voice_markdown(result))


def test_too_few_people_is_a_note():
    ids, features, voices = known_gallery(n_people=3)
    assert "needs 4 or more" in evaluate_reverse(ids, features, voices)["note"]


def tiny_build(root: Path, encoder: Path, n_people: int) -> tuple[Path, BuildReport]:
    """`build` of `n_people` synthetic people with tiny random models, all under `root`
    (the bundle in `root / "index"`): the people's folder and the build's report."""
    people = write_people_folder(root / "people", n_people=n_people)
    Generator(TINY_GENERATOR, seed=1).save_pretrained(root / "generator")
    config = BuildConfig(encoder=str(encoder), encoder_revision=None,
                         generator=str(root / "generator"), generator_revision=None,
                         inversion=InversionConfig(
                             steps=1, n_init=1, resolution=16, revision=None,
                             backbone=str(write_random_backbone(root / "backbone"))))
    return people, build(people, root / "index", config, progress=False)


@pytest.mark.slow
def test_build_writes_face2voice_and_eval_reports_it(tmp_path, tiny_xvector_dir):
    people, report = tiny_build(tmp_path, tiny_xvector_dir, n_people=4)
    assert report.face2voice is not None and report.face2voice["best_epoch"] >= 1
    spec = json.loads((tmp_path / "index" / FACE2VOICE_DIR / "face2voice.json").read_text())
    assert spec["ids"] == report.enrolled
    result = VoiceFace.from_pretrained(tmp_path / "index", progress=False).face2voice(PHOTO, k=2)
    assert result.method == "mapper" and len(result.matches) == 2
    evaluation = evaluate(tmp_path / "index", folds=4)
    reverse = evaluation["face2voice"]
    assert reverse["people"] == 4 and reverse["mapper"]["chance_R@1"] == 0.25
    assert "## Face to voice" in markdown(evaluation)

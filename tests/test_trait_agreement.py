"""eval's trait agreement: counting worked by hand, the faces and voices it reads, and the
section of a real `eval` run on a small built bundle (tiny random models; never the network)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from test_face2voice import tiny_build
from voiceface.devbundle import TINY_GENERATOR, write_random_face_traits
from voiceface.evaluate import evaluate, markdown
from voiceface.face_traits import FaceTraitModel
from voiceface.enrolled import Enrolled
from voiceface.stylegan2 import Generator
from voiceface.trait_agreement import (count_agreement, face_to_voice, render, suggested_sex,
                                       voice_to_face, wilson_interval)

from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F, M = "female", "male"


def test_wilson_intervals_match_the_worked_values():
    # 6 of 8: p = 0.75, z^2 = 3.8415; centre (0.75 + 0.2401) / 1.4802 = 0.6689, half-width
    # 1.96 / 1.4802 * sqrt(0.75 * 0.25 / 8 + 3.8415 / 256) = 0.2596
    assert wilson_interval(6, 8) == pytest.approx((0.4093, 0.9285), abs=1e-4)
    # 0 of 5: the interval starts at 0 and ends at z^2 / (n + z^2) = 3.8415 / 8.8415
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert wilson_interval(5, 5) == pytest.approx((0.5655, 1.0), abs=1e-4)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(3, 2)


def test_agreement_of_ten_people_counted_by_hand():
    own = [F, F, F, F, F, F, M, M, M, None]  # person 10's own face: the model is unsure
    mapper = [F, F, F, F, M, None, M, M, F, F]  # person 6's generated face: unsure
    mean_face = [F] * 10  # the population mean's face, the same for everyone
    result = count_agreement(own, {"mapper": mapper, "population-mean": mean_face})
    # own answers: 9 (6 F, 3 M): chance = always "female" = 6 / 9
    assert (result["people"], result["own_answered"], result["majority"]) == (10, 9, F)
    assert result["chance"] == pytest.approx(6 / 9)
    m = result["methods"]["mapper"]
    # answered: people 1-5 and 7-9 (8 of 10); agreed: 1-4, 7, 8 (6); 5 and 9 disagree
    assert (m["answered"], m["agreed"]) == (8, 6)
    assert m["answered_share"] == pytest.approx(0.8) and m["agreement"] == pytest.approx(0.75)
    assert m["ci95"] == pytest.approx([0.4093, 0.9285], abs=1e-4)
    p = result["methods"]["population-mean"]
    assert (p["answered"], p["agreed"]) == (9, 6)  # it agrees exactly as often as chance
    assert p["agreement"] == pytest.approx(result["chance"])
    # 6 of 9: centre (0.6667 + 0.2134) / 1.4268 = 0.6168, half-width 0.2758
    assert p["ci95"] == pytest.approx([0.3542, 0.8794], abs=1e-4)
    nobody = count_agreement([None, None], {"mapper": [F, M]})
    assert nobody["chance"] is None and nobody["methods"]["mapper"]["agreement"] is None
    with pytest.raises(ValueError, match="1 answers for 2 people"):
        count_agreement([F, M], {"mapper": [F]})


def test_the_suggested_voices_answer_by_majority_and_leave_the_person_out():
    angles = np.radians([0, 10, 25, 45, 100, 112])  # no two gaps alike
    voices = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    sexes = [F, M, M, F, F, None]
    # nearest to person 0's own voice, person 0 left out: persons 1, 2, 3 -> M, M, F
    assert suggested_sex(voices, sexes, voices[0], person=0, k=3) == M
    # near 105 degrees, person 4 left out: 5 (unsure), 3 (F), 2 (M): a tie is unsure
    query = np.array([np.cos(np.radians(105)), np.sin(np.radians(105))])
    assert suggested_sex(voices, sexes, query, person=4, k=3) is None
    # each person's own voice as the query: the suggestions are their neighbours
    counted = face_to_voice(voices, sexes, {"own-voice": voices}, k=1)
    # nearest other: 0 (F) -> 1 M, 1 (M) -> 0 F, 2 (M) -> 1 M, 3 (F) -> 2 M, 4 (F) -> 5
    # unsure, 5 (unsure) -> 4 F
    assert counted["suggested"] == 1
    answers = counted["apparent_sex"]
    assert answers["methods"]["own-voice"]["answered"] == 4  # 0, 1, 2, 3 (4: unsure; 5: own)
    assert answers["methods"]["own-voice"]["agreed"] == 1  # person 2 (M, M)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return FaceTraitModel.from_pretrained(write_random_face_traits(
        tmp_path_factory.mktemp("clip") / "clip", seed=2), None)


def test_the_faces_read_are_the_rendered_predictions(clip):
    generator = Generator(TINY_GENERATOR, seed=1)
    latents = np.random.default_rng(0).standard_normal((5, TINY_GENERATOR.style_dim))
    centres = np.zeros_like(latents)
    own = render(generator, latents, centres, 0.7)
    assert [im.size for im in own] == [(64, 64)] * 5  # at most the generator's side
    # equal rows are drawn once, and every row gets its own face, in order
    again = render(generator, latents[[1, 0, 1]], centres[:3], 0.7)
    assert again[0] is again[2] and again[1] is not again[0]
    assert [np.asarray(im).tolist() for im in again] == \
        [np.asarray(own[i]).tolist() for i in (1, 0, 1)]
    # the own faces as the prediction: every answered person agrees
    result = voice_to_face(own, {"own": latents, "centre": centres}, centres, generator, 0.7,
                           clip)
    same = result["apparent_sex"]["methods"]["own"]
    assert same["agreed"] == same["answered"] == result["apparent_sex"]["own_answered"]
    age = result["age_band"]["methods"]["own"]
    assert age["agreed"] == age["answered"] == result["age_band"]["own_answered"]
    # the centre's face is one face: its answers are the model's reading of that face
    (centre_face,) = clip(render(generator, centres[:1], centres[:1], 0.7))
    own_answers = [t.apparent_sex for t in clip(own)]
    expected = sum(a == centre_face.apparent_sex for a in own_answers if a is not None)
    assert result["apparent_sex"]["methods"]["centre"]["agreed"] == \
        (expected if centre_face.apparent_sex is not None else 0)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_xvector_dir):
    root = tmp_path_factory.mktemp("traits-eval")
    people, _ = tiny_build(root, tiny_xvector_dir, n_people=6)
    return people, root / "index"


@pytest.mark.slow
def test_eval_prints_the_trait_section_with_consistent_counts(built, tmp_path):
    people, index = built
    write_random_face_traits(index / "face_traits", seed=2)
    spec = json.loads((index / "bundle.json").read_text())
    (index / "bundle.json").write_text(json.dumps({**spec, "face_traits": {
        "name_or_path": "face_traits"}}))
    run = subprocess.run([sys.executable, "-m", "voiceface", "eval", str(people), "--bundle",
                          str(index), "--folds", "3", "--keep-threshold", "--out",
                          str(tmp_path / "eval")], cwd=REPO, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    faces, voices = report["traits"]["voice_to_face"], report["traits"]["face_to_voice"]
    assert faces["people"] == 6 and faces["own_photos"] == 6 and faces["own_renders"] == 0
    # the own faces are the gallery's photos, read by the same model
    gallery = Enrolled.load(index / "gallery").gallery
    model = FaceTraitModel.from_pretrained(index / "face_traits", None)
    own = model([Image.open(p.faces[0]) for p in gallery.people])
    for trait in ("apparent_sex", "age_band"):
        counted = faces[trait]
        answers = [getattr(t, trait) for t in own]
        assert counted["own_answered"] == sum(a is not None for a in answers)
        assert set(counted["methods"]) == {"mapper", "knn-blend", "population-mean"}
        for m in counted["methods"].values():
            assert m["agreed"] <= m["answered"] <= counted["own_answered"]
            assert m["answered_share"] == pytest.approx(m["answered"] / 6)
            if m["answered"]:
                assert m["agreement"] == pytest.approx(m["agreed"] / m["answered"])
                assert m["ci95"] == pytest.approx(list(wilson_interval(m["agreed"],
                                                                       m["answered"])))
    assert voices["people"] == 6 and voices["suggested"] == 5
    assert set(voices["apparent_sex"]["methods"]) == {"mapper", "knn-blend", "mean-voice"}
    text = (tmp_path / "eval" / "report.md").read_text()
    assert text == markdown(report) and text in run.stdout
    assert "## Trait agreement (people unseen by the mappers)" in text
    m = faces["apparent_sex"]["methods"]["mapper"]
    row = next(line for line in text.splitlines() if line.startswith("| apparent sex | mapper |"))
    assert row.endswith(f"| {m['answered']}/6 | {faces['apparent_sex']['chance']:.3f} "
                        f"({faces['apparent_sex']['majority']}) |")
    assert "6 photos, 0 renders of their latent" in text


@pytest.mark.slow
def test_without_a_face_trait_model_the_section_says_why(built, tmp_path):
    _, index = built
    spec = json.loads((index / "bundle.json").read_text())
    spec.pop("face_traits", None)
    (index / "bundle.json").write_text(json.dumps(spec))
    report = evaluate(index, folds=3)
    note = report["traits"]["voice_to_face"]["note"]
    assert "names no face-trait model; pass --face-traits openai/clip-vit-base-patch16" in note
    assert "apparent_sex" in report["traits"]["face_to_voice"]  # needs no face-trait model
    assert f"Not measured: {note}." in markdown(report)
    missing = evaluate(index, folds=3, face_traits=str(tmp_path / "nowhere"))
    assert "the face-trait model" in missing["traits"]["voice_to_face"]["note"]
    assert "cannot load" in missing["traits"]["voice_to_face"]["note"]

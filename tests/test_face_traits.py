"""Face traits (apparent sex, age band) read zero-shot by a CLIP model, and how a persona's
face seed is chosen from them. Tiny random CLIPs saved locally; never the network."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoTokenizer, CLIPModel

from voiceface import persona_cache
from voiceface.bundle import (DEFAULT_FACE_TRAITS, DEFAULT_FACE_TRAITS_REVISION, BundleSpec,
                              FaceTraitsSpec)
from voiceface.devbundle import write_random_face_traits
from voiceface.face_traits import (AGE_BANDS, SEX_MARGIN, SEXES, TEMPLATES, FaceTraitModel,
                                  FaceTraits)
from voiceface.hub import WeightsNotFound

from conftest import PHOTO, REPO


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_random_face_traits(tmp_path_factory.mktemp("clip") / "clip", seed=2)


def faces(n: int = 6) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.open(PHOTO).convert("RGB")] + [
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)) for _ in range(n - 1)]


def test_a_clip_of_configs_tokenizer_json_and_safetensors_answers(clip_dir):
    assert sorted(p.name for p in clip_dir.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
        "tokenizer_config.json"]  # no vocab.json / merges.txt: tokenizer.json is enough
    model = FaceTraitModel.from_pretrained(clip_dir, None)
    assert model.side == 32
    p_sex, p_age = model.probabilities(faces())
    assert p_sex.shape == (6, 2) and p_age.shape == (6, 4)
    np.testing.assert_allclose(p_sex.sum(1), 1, atol=1e-5)
    traits = model(faces())
    assert all(t.apparent_sex in (*SEXES, None) and t.age_band in (*AGE_BANDS, None)
               for t in traits)
    assert [t.sex_confidence for t in traits] == pytest.approx(p_sex.max(1).tolist())
    # the likelier sex, unless it leads by less than the margin
    lead = np.abs(p_sex[:, 0] - p_sex[:, 1])
    assert [t.apparent_sex for t in traits] == [
        None if d < SEX_MARGIN else list(SEXES)[int(p[1] > p[0])] for d, p in zip(lead, p_sex)]
    assert {t.apparent_sex for t in traits} >= {"male", None}  # both cases are exercised
    # each class is the normalised mean of its sentences' normalised text embeddings
    clip = CLIPModel.from_pretrained(clip_dir)
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    sentences = [t.format(p) for p in SEXES["female"] for t in TEMPLATES]
    with torch.inference_mode():
        text = clip.get_text_features(**tokenizer(sentences, padding=True,
                                                  return_tensors="pt")).pooler_output
    expected = F.normalize(F.normalize(text, dim=-1).mean(0), dim=-1)
    torch.testing.assert_close(model.sexes[0], expected, atol=1e-5, rtol=1e-5)


def test_an_undecided_model_says_unsure(clip_dir, tmp_path):
    """With CLIP's initial logit scale (1) the classes' probabilities stay within the
    margins: every answer is None, with its confidence still given."""
    clip = CLIPModel.from_pretrained(clip_dir)
    with torch.no_grad():
        clip.logit_scale.fill_(0.0)
    shutil.copytree(clip_dir, tmp_path / "flat")
    clip.save_pretrained(tmp_path / "flat")
    traits = FaceTraitModel.from_pretrained(tmp_path / "flat", None)(faces())
    assert [(t.apparent_sex, t.age_band) for t in traits] == [(None, None)] * 6
    assert all(0.5 <= t.sex_confidence < 0.6 for t in traits)
    assert traits[0].summary()["apparent_sex"] is None


def test_pickled_weights_are_refused(clip_dir, tmp_path):
    shutil.copy(clip_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(WeightsNotFound, match="face-trait model .* has no .safetensors weights"):
        FaceTraitModel.from_pretrained(tmp_path, None)


def test_the_fingerprint_follows_the_weights(clip_dir, tmp_path):
    one = FaceTraitModel.from_pretrained(clip_dir, None).fingerprint
    assert FaceTraitModel.from_pretrained(clip_dir, None).fingerprint == one
    other = write_random_face_traits(tmp_path / "other", seed=3)
    assert FaceTraitModel.from_pretrained(other, None).fingerprint != one
    assert "|prompts" in one


def test_the_default_is_clip_at_a_pinned_revision_and_a_bundle_may_name_another():
    assert BundleSpec().face_traits == FaceTraitsSpec(DEFAULT_FACE_TRAITS,
                                                      DEFAULT_FACE_TRAITS_REVISION)
    assert len(DEFAULT_FACE_TRAITS_REVISION) == 40
    shipped = json.loads((REPO / "index" / "bundle.json").read_text())["face_traits"]
    assert shipped == {"name_or_path": DEFAULT_FACE_TRAITS,
                       "revision": DEFAULT_FACE_TRAITS_REVISION}
    spec = BundleSpec.from_dict({"format_version": 1, "face_traits": {"name_or_path": "me/clip"}})
    assert spec.face_traits == FaceTraitsSpec("me/clip", None)
    readme = (REPO / "README.md").read_text()
    assert f"  - {DEFAULT_FACE_TRAITS}\n" in readme
    assert f"  - {DEFAULT_FACE_TRAITS} config.json,preprocessor_config.json,tokenizer.json," \
           f"tokenizer_config.json,model.safetensors {DEFAULT_FACE_TRAITS_REVISION}" in readme


def reader(answers: dict[int, str | None]):
    """A face-trait reading per seed, recording which seeds were read."""
    read = []

    def read_seed(seed: int) -> FaceTraits:
        read.append(seed)
        return FaceTraits(answers.get(seed), 0.9, "adult", 0.6)

    return read_seed, read


def test_the_first_seed_that_agrees_is_chosen():
    read_seed, read = reader({10: "male", 11: None, 12: "female", 13: "female"})
    seed, traits, agreed = persona_cache.choose_face_seed(10, "female", read_seed)
    assert (seed, traits.apparent_sex, agreed) == (12, "female", True) and read == [10, 11, 12]
    read_seed, read = reader({10: "male"})
    assert persona_cache.choose_face_seed(10, "male", read_seed)[::2] == (10, True)
    assert read == [10]


def test_when_no_seed_agrees_the_first_stays_and_is_logged(caplog):
    read_seed, read = reader({s: "male" for s in range(100, 200)})
    with caplog.at_level(logging.WARNING, logger="voiceface.persona_cache"):
        seed, traits, agreed = persona_cache.choose_face_seed(100, "female", read_seed, tries=5,
                                                              who="persona09")
    assert (seed, traits.apparent_sex, agreed) == (100, "male", False)
    assert read == [100, 101, 102, 103, 104]
    assert "None of 5 faces (seeds 100-104) reads as female for persona09" in caplog.text


def test_a_voice_of_unknown_sex_keeps_its_first_seed():
    read_seed, read = reader({7: "male"})
    assert persona_cache.choose_face_seed(7, None, read_seed)[::2] == (7, False)
    assert read == [7]


def test_the_voice_is_measured_and_the_declaration_used_only_when_unsure():
    from voiceface.audio import load_audio
    from voiceface.personas import load_personas

    male = next(p for p in load_personas(REPO / "assets" / "personas") if p["id"] == "persona02")
    wav = load_audio(male["voice_file"], max_seconds=None)  # measured male, 0.999
    declared_female = {**male, "voice": {**male["voice"], "sex": "female"}}
    assert persona_cache.voice_sex(declared_female, wav) == ("male", "measured")
    silent = np.zeros(16000 * 3, np.float32)  # nothing voiced: the measurement cannot say
    assert persona_cache.voice_sex(declared_female, silent) == ("female", "declared")
    undeclared = {**male, "voice": {k: v for k, v in male["voice"].items() if k != "sex"}}
    assert persona_cache.voice_sex(undeclared, silent) == (None, None)
    with pytest.raises(ValueError, match="persona02 the voice sex 'woman'; use one of"):
        persona_cache.voice_sex({**male, "voice": {**male["voice"], "sex": "woman"}}, silent)

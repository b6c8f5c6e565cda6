"""Face to voice says what the photo's face showed: its apparent sex and age band read by the
bundle's face-trait model (loaded once, at the first face query), the suggested voices'
apparent sex, on the page in every language and as `face_traits` in `/face2voice`. Tiny
CLIPs saved locally, some made to give a known answer; never the network."""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

from browser import browser_page
from conftest import PHOTO, REPO, serve_with_cache
from test_app import CLIPPED
from test_face2voice_app import ask_with_photo
from test_visitors import call, client, file_ref, upload
from voiceface import face_traits as face_traits_module
from voiceface.bundle import BUNDLE_FILE, BundleSpec
from voiceface.devbundle import write_random_face_traits
from voiceface.face2voice import FaceToVoice, FaceToVoiceResult
from voiceface.face_traits import AGE_BANDS, SEXES, FaceTraitModel, FaceTraits
from voiceface.pipeline import VoiceFace
from voiceface.trait_inputs import TRAITS_KEY, record_apparent_sex
from voiceface.traits import classifier
from voiceface.ui.face2voice import traits_text
from voiceface.ui.text import TEXT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SURE = 0.85  # the controlled model's confidence in its apparent-sex answer
LOAD_DELAY = 0.3  # s a spied load takes: concurrent first queries overlap within it


def controlled_clip(directory: Path, sex: str, age: str, confidence: float = SURE,
                    seed: int = 0) -> Path:
    """A tiny random CLIP that reads every image as `sex` with probability `confidence`
    and as `age` (most likely of the bands): its vision tower's last norm gives a constant,
    which the projection turns into the image embedding whose cosines with the classes'
    text embeddings are +c for the two wanted classes and -c for the others."""
    random = write_random_face_traits(directory.with_name(directory.name + "-random"), seed)
    reader = FaceTraitModel.from_pretrained(random, None)
    classes = torch.cat([reader.sexes, reader.ages])
    wanted = torch.full((len(classes),), -1.0)
    wanted[list(SEXES).index(sex)] = wanted[len(SEXES) + list(AGE_BANDS).index(age)] = 1.0
    target = torch.linalg.pinv(classes) @ wanted  # classes @ target == wanted
    clip = CLIPModel.from_pretrained(random)
    with torch.no_grad():
        norm = clip.vision_model.post_layernorm
        norm.weight.zero_()
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=torch.Generator().manual_seed(seed)))
        clip.visual_projection.weight.copy_(torch.outer(target, norm.bias)
                                            / norm.bias.dot(norm.bias))
        # the sexes' cosines differ by 2 / |target|: the scale that makes p(sex) = confidence
        clip.logit_scale.fill_(math.log(math.log(confidence / (1 - confidence))
                                        * float(target.norm()) / 2))
    shutil.copytree(random, directory)
    clip.save_pretrained(directory)
    return directory


def bundle_naming(dev_bundle: Path, directory: Path, face_traits: str) -> Path:
    """A copy of the dev bundle whose bundle.json names `face_traits` as its face-trait
    model."""
    shutil.copytree(dev_bundle, directory)
    spec = json.loads((directory / BUNDLE_FILE).read_text())
    (directory / BUNDLE_FILE).write_text(json.dumps(
        {**spec, "face_traits": {"name_or_path": face_traits}}))
    return directory


@pytest.fixture(scope="module")
def traits_bundle(dev_bundle, tmp_path_factory):
    """The dev bundle with a face-trait model that sees a female young adult in every face."""
    root = tmp_path_factory.mktemp("traits")
    bundle = bundle_naming(dev_bundle, root / "bundle", "face_traits")
    controlled_clip(bundle / "face_traits", "female", "young adult")
    return bundle


@pytest.fixture
def loads(monkeypatch):
    """The face-trait models loaded, by name, each load taking LOAD_DELAY longer."""
    loaded = []
    load = FaceTraitModel.from_pretrained.__func__

    def spied(cls, name_or_path, revision=None):
        loaded.append(str(name_or_path))
        time.sleep(LOAD_DELAY)
        return load(cls, name_or_path, revision)

    monkeypatch.setattr(face_traits_module.FaceTraitModel, "from_pretrained",
                        classmethod(spied))
    return loaded


def test_the_face_s_traits_come_from_the_model_the_bundle_names_loaded_at_the_first_query(
        traits_bundle, loads):
    vf = VoiceFace.from_pretrained(traits_bundle, progress=False)
    assert loads == []  # not at start-up
    result = vf.face2voice(PHOTO, k=4)
    assert loads == [str(traits_bundle / "face_traits")]
    assert (result.face_traits.apparent_sex, result.face_traits.age_band) == (
        "female", "young adult")
    assert result.face_traits.sex_confidence == pytest.approx(SURE, abs=0.01)
    assert result.summary(True)["face_traits"] == result.face_traits.summary()
    assert set(result.summary(True)["face_traits"]) == {
        "apparent_sex", "sex_confidence", "age_band", "age_confidence"}
    assert "traits" in result.timings
    # each suggested voice's apparent sex, as the gallery recorded the person's voice
    assert result.voice_sexes == [
        record_apparent_sex(vf.gallery.person(m.id).extra[TRAITS_KEY]) for m in result.matches]
    assert len(result.voice_sexes) == 4
    again = vf.face2voice(PHOTO, k=4)
    assert len(loads) == 1 and again.face_traits == result.face_traits


def test_concurrent_first_queries_load_the_model_once(traits_bundle, loads):
    vf = VoiceFace.from_pretrained(traits_bundle, progress=False)
    start = threading.Barrier(6)
    got = []

    def first_query() -> None:
        start.wait()
        got.append(vf.face_trait_model())

    threads = [threading.Thread(target=first_query) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len(got) == 6 and all(m is got[0] for m in got)


def test_concurrent_first_face_queries_load_face_to_voice_once(dev_bundle, monkeypatch):
    loaded = []
    load = FaceToVoice.from_pretrained.__func__

    def spied(cls, *args, **kwargs):
        loaded.append(1)
        time.sleep(LOAD_DELAY)
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(FaceToVoice, "from_pretrained", classmethod(spied))
    vf = VoiceFace.from_pretrained(dev_bundle, progress=False)
    start = threading.Barrier(4)
    answers = []

    def first_query() -> None:
        start.wait()
        answers.append([m.id for m in vf.face2voice(PHOTO, k=3).matches])

    threads = [threading.Thread(target=first_query) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loaded) == 1 and len(answers) == 4 and all(a == answers[0] for a in answers)


def test_a_bundle_naming_none_answers_without_face_traits(dev_bundle, loads):
    assert BundleSpec.read(dev_bundle).face_trait_model is None  # a built bundle naming none
    result = VoiceFace.from_pretrained(dev_bundle, progress=False).face2voice(PHOTO)
    assert result.face_traits is None and result.voice_sexes == []
    assert result.summary(True)["face_traits"] is None and "traits" not in result.timings
    assert loads == []  # nothing was fetched that the bundle did not ask for
    # a personas bundle reads photos with the model its caches were made with; an override
    # names one for any bundle
    index = BundleSpec.read(REPO / "index")
    assert index.face_trait_model == index.face_traits
    named = BundleSpec.read(dev_bundle).with_models(face_traits="other/clip")
    assert named.face_trait_model.name_or_path == "other/clip"


def test_a_model_that_cannot_load_is_warned_about_once(dev_bundle, tmp_path, caplog):
    bundle = bundle_naming(dev_bundle, tmp_path / "bundle", "no-such/clip")  # offline: absent
    vf = VoiceFace.from_pretrained(bundle, progress=False)
    with caplog.at_level(logging.WARNING, logger="voiceface.pipeline"):
        answers = [vf.face2voice(PHOTO) for _ in range(2)]
    assert [a.face_traits for a in answers] == [None, None]
    assert answers[0].matches == answers[1].matches and answers[0].matches
    warnings = [r.getMessage() for r in caplog.records if r.name == "voiceface.pipeline"]
    assert len(warnings) == 1 and "no-such/clip could not be loaded" in warnings[0]


def test_a_voice_s_recorded_apparent_sex_is_the_classifier_s_decision():
    """The record keeps P(male) - 0.5 averaged over windows; the shipped classifier's
    threshold decides, as for a query."""
    sure = classifier().threshold
    assert record_apparent_sex({"pitch_hz": 120.0, "sex_score": sure - 0.5 + 0.01}) == "male"
    assert record_apparent_sex({"pitch_hz": 210.0, "sex_score": 0.5 - sure - 0.01}) == "female"
    assert record_apparent_sex({"pitch_hz": 160.0, "sex_score": sure - 0.5 - 0.01}) is None
    assert record_apparent_sex(None) is None  # enrolled before voice traits were kept


def result_with(traits: FaceTraits | None, voice_sexes: list) -> FaceToVoiceResult:
    return FaceToVoiceResult([], "mapper", torch.zeros(1).numpy(), {}, traits, voice_sexes)


@pytest.mark.parametrize("language", sorted(TEXT))
def test_every_answer_is_worded_in_every_language(language):
    text = TEXT[language]
    perceptual = {"en": "not a statement about anyone's identity",
                  "ja": "誰かのアイデンティティを述べるものではありません"}[language]
    for sex in (*SEXES, None):
        for age in (*AGE_BANDS, None):
            said = traits_text(result_with(FaceTraits(sex, 0.8, age, 0.55), [None] * 5), text)
            assert perceptual in said and "{" not in said, said
            assert ("80%" in said) == (sex is not None) and ("55%" in said) == (age is not None)
    assert traits_text(result_with(None, []), text) == ""  # no model: no line


def test_the_line_reads_as_a_sentence_with_the_voices_counted():
    young_woman = FaceTraits("female", 0.8, "young adult", 0.55)
    said = traits_text(result_with(young_woman, ["female", "female", None, "male", "female"]),
                       TEXT["en"])
    assert said.startswith("**Your photo:** the face looks female (80% sure); it looks about "
                           "13-35 years old (55% sure). The suggested voices by apparent sex: "
                           "3 female, 1 male, 1 unclear. The voices are those"), said
    ja = traits_text(result_with(young_woman, ["male"] * 5), TEXT["ja"])
    assert ja.startswith("**あなたの写真：** 女性の顔に見えます（確信度80%）。13〜35歳くらいに"
                         "見えます（確信度55%）。提案された声の見かけの性別：女性0、男性5、不明0。"), ja
    # no suggested voice's apparent sex is known: nothing to count
    assert "suggested voices by" not in traits_text(result_with(young_woman, [None] * 5),
                                                    TEXT["en"])


@pytest.fixture(scope="module")
def server(traits_bundle, tmp_path_factory):
    with serve_with_cache(traits_bundle, tmp_path_factory.mktemp("traits-app")) as app:
        yield app


@pytest.mark.slow
def test_face2voice_over_http_returns_the_face_s_traits_and_the_page_says_them(server):
    http = client(server["url"])
    photo = upload(http, PHOTO)
    kind, [summary] = call(http, "face2voice", [file_ref(photo)])
    assert kind == "complete", summary
    assert summary["face_traits"]["apparent_sex"] == "female"
    assert summary["face_traits"]["age_band"] == "young adult"
    assert summary["face_traits"]["sex_confidence"] == pytest.approx(SURE, abs=0.01)
    http.headers["Accept-Language"] = "ja"
    kind, (_, _, said) = call(http, "face2voice_ui", [file_ref(photo)])
    assert kind == "complete", said
    assert said.startswith("**あなたの写真：** 女性の顔に見えます（確信度85%）。13〜35歳"), said


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
def test_a_phone_shows_the_line_whole_under_the_voices(server, locale):
    english = locale == "en-US"
    with browser_page(server["url"], locale=locale) as page:
        ask_with_photo(page, english)
        line = page.locator("#f2v-traits")
        line.filter(has_text="85%").wait_for(timeout=120_000)
        said = line.inner_text()
        assert ("Your photo: the face looks female (85% sure)" if english
                else "あなたの写真： 女性の顔に見えます（確信度85%）") in " ".join(said.split())
        assert line.locator("*").evaluate_all(CLIPPED) == []
        voices = page.locator("#f2v-voices").bounding_box()
        assert line.bounding_box()["y"] > voices["y"] + voices["height"]  # under the voices

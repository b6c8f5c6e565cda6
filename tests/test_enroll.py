"""Live enrollment with consent, background latents and mapper, and complete deletion."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import DEV_PEOPLE, PHOTO, serve_app
from test_faces import png_header
from test_verify_app import focus_answer
from voiceface.admin import FIRST_DELAY
from voiceface.calibration import LIVE_METHOD, best_non_mated, threshold_at_far
from voiceface.devbundle import synthetic_voice, write_random_backbone
from voiceface import enroll as enroll_module
from voiceface.enroll import LiveGallery, speech_seconds
from voiceface.enrolled import Enrolled
from voiceface.gallery import GalleryError
from voiceface.invert import InversionConfig
from voiceface.pipeline import VoiceFace
from voiceface.trait_inputs import TRAITS_KEY, record_features

RATE = 16_000
WAIT = 600  # s; a safety net so a broken worker fails the test instead of hanging it


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inversion(tmp_path_factory):
    backbone = write_random_backbone(tmp_path_factory.mktemp("backbone") / "backbone")
    return InversionConfig(steps=3, n_init=2, resolution=32, backbone=str(backbone),
                           revision=None)


@pytest.fixture
def open_live(dev_bundle, inversion, tmp_path):
    """Callable: a fresh pipeline on the dev bundle with its gallery in `tmp_path/live`."""
    opened = []

    def make(min_people: int = DEV_PEOPLE + 2) -> LiveGallery:
        vf = VoiceFace.from_pretrained(dev_bundle, progress=False)
        opened.append(LiveGallery.open(vf, tmp_path / "live", inversion=inversion,
                                       min_people=min_people))
        return opened[-1]
    yield make
    for live in opened:
        live.close()


def voice(seed: int, seconds: float = 6.0, f0: float = 320.0, formant: float = 1300.0):
    """A synthetic voice as Gradio's (rate, samples) tuple."""
    return RATE, synthetic_voice(seconds, seed=seed, f0=f0, formant=formant)


def no_face(path):
    gradient = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    Image.fromarray(gradient).save(path)
    return path


def two_faces(path):
    photo = Image.open(PHOTO)
    pair = Image.new("RGB", (2 * photo.width, photo.height))
    pair.paste(photo, (0, 0))
    pair.paste(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (photo.width, 0))
    pair.save(path)
    return path


def mirrored(path):
    """Another photo of the (same) face: mirrored, so its bytes differ from PHOTO's."""
    Image.open(PHOTO).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
    return path


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_enroll_refuses_without_consent_or_with_bad_data_and_saves_nothing(open_live, tmp_path):
    live = open_live()
    before = files(live.root)
    with pytest.raises(ValueError, match="Consent is required"):
        live.enroll("Aiko", voice(1), PHOTO, consent=False)
    with pytest.raises(ValueError, match="No face found"):
        live.enroll("Aiko", voice(1), no_face(tmp_path / "wall.png"), consent=True)
    with pytest.raises(ValueError, match="at least 5 s"):
        live.enroll("Aiko", voice(1, seconds=2.0), PHOTO, consent=True)
    with pytest.raises(ValueError, match="not an image"):
        (tmp_path / "notes.jpg").write_text("not a photo")
        live.enroll("Aiko", voice(1), tmp_path / "notes.jpg", consent=True)
    with pytest.raises(ValueError, match="Found 2 faces"):
        live.enroll("Aiko", voice(1), two_faces(tmp_path / "two.jpg"), consent=True)
    with pytest.raises(ValueError, match="megapixels"):
        live.enroll("Aiko", voice(1), png_header(9000, 9000), consent=True)
    with pytest.raises(ValueError, match="limit is 120 s"):
        live.enroll("Aiko", voice(1, seconds=121.0), PHOTO, consent=True)
    with pytest.raises(ValueError, match="display name"):
        live.enroll("  ", voice(1), PHOTO, consent=True)
    assert files(live.root) == before
    assert len(live.vf.gallery) == DEV_PEOPLE


@pytest.mark.slow
def test_enrolled_person_is_found_at_once_then_gets_a_latent_and_a_mapper(open_live,
                                                                           tmp_path):
    live = open_live()
    bundle_mapper, bundle_people = live.vf.mapper, live.mapper_people
    sf.write(tmp_path / "aiko.wav", voice(1)[1], RATE)
    aiko = live.enroll("Aiko Sato", tmp_path / "aiko.wav", PHOTO, consent=True)
    assert aiko.startswith("aiko-sato-")
    assert live.status(aiko) in ("queued", "inverting", "ready")
    # Their enrollment recording finds them, before any latent. (The tests' tiny random
    # encoder puts every synthetic voice at ~0.99 similarity, so only the same recording is a
    # sure rank 1 here.)
    result = live.vf(voice(1))
    assert result.matches[0].id == aiko and result.matches[0].name == "Aiko Sato"
    person = live.vf.gallery.person(aiko)
    assert person.consent and person.faces[0].parent == live.photo_dir
    assert Image.open(person.faces[0]).size == (512, 512)

    assert live.wait(WAIT) and live.status(aiko) == "ready"
    assert live.vf.state.latents.get(aiko) is not None
    # Not retrained (7 latents: fewer than min_people, 8); each change reloads it from disk.
    assert live.mapper_people == bundle_people and aiko not in bundle_people
    # Aiko's latent moved the population centre; the mapper keeps the one it was trained on.
    assert np.array_equal(live.vf.mapper.centre.numpy(), bundle_mapper.centre.numpy())
    assert not np.array_equal(live.vf.mapper.centre.numpy(), live.vf.state.latents.centre)
    ken = live.enroll("Ken", voice(3, f0=110.0, formant=500.0), PHOTO, consent=True)
    assert live.wait(WAIT) and live.status(ken) == "ready"
    assert live.vf.mapper is not bundle_mapper and set(live.mapper_people) >= {aiko, ken}
    assert np.array_equal(live.vf.mapper.centre.numpy(), live.vf.state.latents.centre)  # retrained
    assert live.vf(voice(1)).method == "mapper"


@pytest.mark.slow
def test_delete_removes_every_trace_and_retrains(open_live, tmp_path):
    live = open_live(min_people=DEV_PEOPLE + 1)
    aiko = live.enroll("Aiko Sato", voice(1), PHOTO, consent=True)
    assert live.wait(WAIT) and live.status(aiko) == "ready"
    assert aiko in live.mapper_people
    photo = live.vf.gallery.person(aiko).faces[0].read_bytes()
    embedding = live.vf.gallery.embedding(aiko)
    ken = live.enroll("Ken", voice(3, f0=110.0, formant=500.0), mirrored(tmp_path / "ken.png"),
                      consent=True)
    assert live.wait(WAIT)

    live.delete(aiko)
    for enrolled in (live.vf.state.enrolled, Enrolled.load(live.root / "gallery")):
        gallery = enrolled.gallery
        assert aiko not in gallery and ken in gallery and len(gallery) == DEV_PEOPLE + 1
        assert not np.any(np.all(np.isclose(gallery.embeddings(), embedding), axis=1))
        # recalibrated on the people left: each one's embedding against everyone else's
        c, e = enrolled.calibrations.open_set, gallery.embeddings()
        ids = [p.id for p in gallery.people]
        assert (c.method, c.trials, c.far_target) == (LIVE_METHOD, DEV_PEOPLE + 1, 0.01)
        assert c.threshold == threshold_at_far(best_non_mated(e, ids, e, ids), 0.01)[0]
    assert aiko not in live.mapper_people and ken in live.mapper_people
    assert live.vf(voice(1)).matches[0].id != aiko
    left = files(live.root)
    assert photo not in left.values()  # no file holds their photo
    assert not any(b"Aiko" in data or aiko.encode() in data for data in left.values())
    assert live.statuses().get(aiko) is None
    with pytest.raises(GalleryError, match="No person"):
        live.delete(aiko)

    live.delete(ken)  # DEV_PEOPLE latents left: fewer than min_people, the mapper goes
    assert live.vf.mapper is None and not (live.root / "mapper").exists()
    assert live.vf(voice(1)).method == "knn-blend"
    live.delete("dev00")  # with no mapper saved at all
    assert "dev00" not in Enrolled.load(live.root / "gallery").gallery and live.vf.mapper is None


def test_an_enrolled_voices_traits_are_two_numbers_that_train_the_mapper_and_go_with_them(
        open_live, monkeypatch):
    """Enrollment keeps the recording's pitch and apparent-sex score (numbers, no audio) in
    the person's record; the retrained mapper takes everyone's, the population's mean for a
    person enrolled before traits were kept; deletion takes them with the person."""
    live = open_live(min_people=DEV_PEOPLE + 1)
    enrolled = Enrolled.load(live.root / "gallery")  # dev00 as an older gallery holds them
    gallery = enrolled.gallery
    gallery.update("dev00", extra={k: v for k, v in gallery.person("dev00").extra.items()
                                   if k != TRAITS_KEY})
    enrolled.save(live.root / "gallery")
    assert live.refresh()
    trained = []
    real = enroll_module.train_mapper

    def spy(embeddings, latents, ids, centre, **kwargs):
        trained.append((list(ids), kwargs["traits"]))
        return real(embeddings, latents, ids, centre, **kwargs)

    monkeypatch.setattr(enroll_module, "train_mapper", spy)
    aiko = live.enroll("Aiko Sato", voice(1, f0=320.0), PHOTO, consent=True)
    record = live.vf.gallery.person(aiko).extra[TRAITS_KEY]
    assert set(record) == {"pitch_hz", "sex_score"}
    assert all(type(v) is float for v in record.values())
    assert record["pitch_hz"] == pytest.approx(320.0, rel=0.05)
    assert -0.5 <= record["sex_score"] <= 0.5
    assert live.wait(WAIT) and live.status(aiko) == "ready"
    (ids, traits), = trained
    rows = dict(zip(ids, traits))
    assert np.isnan(rows["dev00"]).all()  # no record: the trained rows' mean
    np.testing.assert_array_equal(rows[aiko], record_features(record))
    np.testing.assert_array_equal(rows["dev01"], record_features(
        live.vf.gallery.person("dev01").extra[TRAITS_KEY]))
    assert live.vf.mapper.takes_traits and aiko in live.mapper_people

    pitch = json.dumps(record["pitch_hz"]).encode()
    assert [path for path, data in files(live.root).items() if pitch in data]  # saved
    live.delete(aiko)
    assert not [path for path, data in files(live.root).items() if pitch in data]


def test_speech_seconds_counts_the_sound_left_after_trimming():
    rate, samples = voice(1, seconds=6.0)
    padded = np.concatenate([np.zeros(2 * rate), samples, np.zeros(2 * rate)]).astype(np.float32)
    for audio in ((rate, samples), (rate, padded)):
        assert speech_seconds(audio) == pytest.approx(6.0, abs=0.3)


@pytest.mark.slow
def test_concurrent_enrollments_both_land(open_live):
    live = open_live()
    ids, errors = [], []

    def enroll(name, seed, f0):
        try:
            ids.append(live.enroll(name, voice(seed, f0=f0), PHOTO, consent=True))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=enroll, args=(f"Person {i}", 10 + i, 150.0 + 60 * i))
               for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(ids) == 2
    assert live.wait(WAIT)
    saved = Enrolled.load(live.root / "gallery")
    people = {p.id for p in saved.gallery.people}
    assert set(ids) <= people and len(people) == DEV_PEOPLE + 2
    assert all(saved.latents.get(i) is not None for i in ids)


@pytest.mark.slow
def test_the_gallery_directory_persists_across_restarts(open_live, dev_bundle, tmp_path):
    live = open_live(min_people=DEV_PEOPLE + 1)
    aiko = live.enroll("Aiko Sato", voice(1), PHOTO, consent=True)
    assert live.wait(WAIT)
    (live.root / "incoming" / "crashed.jpg").write_bytes(b"a photo a crash left behind")
    again = open_live(min_people=DEV_PEOPLE + 1)  # a new process, same directory
    assert not (live.root / "incoming").exists()
    assert aiko in again.vf.gallery and again.status(aiko) == "ready"
    assert again.vf(voice(1)).matches[0].id == aiko
    assert again.vf.mapper is not None and again.vf.mapper.config.in_dim == 24
    assert len(Enrolled.load(dev_bundle / "gallery").gallery) == DEV_PEOPLE  # bundle untouched

    manifest = live.root / "gallery" / "manifest.json"
    manifest.write_text(manifest.read_text().replace(
        again.vf.encoder.fingerprint, "another-encoder"))
    with pytest.raises(GalleryError, match="other models"):
        open_live()


@pytest.mark.slow
def test_app_enroll_and_delete_need_the_password(dev_bundle, inversion, tmp_path):
    from gradio_client import Client, handle_file

    sf.write(tmp_path / "aiko.wav", voice(1)[1], RATE)
    live_dir = tmp_path / "live"
    lifetime = 10  # s the uploads may stay in Gradio's cache
    args = ("--gallery-dir", str(live_dir), "--backbone", inversion.backbone,
            "--inversion-steps", "3", "--inversion-resolution", "32",
            "--file-lifetime", str(lifetime))
    gradio_cache = tmp_path / "gradio-cache"
    env = {"VOICEFACE_ADMIN_PASSWORD": "open sesame", "GRADIO_TEMP_DIR": str(gradio_cache)}

    def upload():
        return handle_file(str(tmp_path / "aiko.wav")), handle_file(str(PHOTO))

    with serve_app(dev_bundle, tmp_path / "app.log", env, args) as (url, _):
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="Wrong admin password"):
            client.predict("guess", *upload(), "Aiko", True, api_name="/enroll")
        time.sleep(FIRST_DELAY)  # the back-off a wrong password earns (tests/test_admin.py)
        with pytest.raises(Exception, match="Consent is required"):
            client.predict("open sesame", *upload(), "Aiko", False, api_name="/enroll")
        assert len(Enrolled.load(live_dir / "gallery").gallery) == DEV_PEOPLE
        status, people, *_ = client.predict("open sesame", *upload(), "Aiko", True,
                                            api_name="/enroll")
        assert "Enrolled **Aiko**" in status and len(people) == DEV_PEOPLE + 1
        update = focus_answer(url, "delete-person")  # the delete list, refreshed on focus,
        assert "value" not in update  # keeps a choice made while the answer was on its way
        assert any(label.startswith("Aiko") for label, _ in update["choices"])
        aiko = status.split("`")[1]
        _, _, summary = client.predict(upload()[0], api_name="/predict")
        assert summary["matches"][0]["id"] == aiko
        photo = Enrolled.load(live_dir / "gallery").gallery.person(aiko).faces[0].read_bytes()
        assert photo in files(gradio_cache).values()  # served, so copied into the cache

        with pytest.raises(Exception, match="Wrong admin password"):
            client.predict("", aiko, True, api_name="/delete")
        time.sleep(FIRST_DELAY)  # the right passwords since reset the back-off: 1 s again
        with pytest.raises(Exception, match="confirmation"):
            client.predict("open sesame", aiko, False, api_name="/delete")
        status, people, *_ = client.predict("open sesame", aiko, True, api_name="/delete")
        assert "Deleted **Aiko**" in status and len(people) == DEV_PEOPLE
        _, _, summary = client.predict(upload()[0], api_name="/predict")
        assert aiko not in {m["id"] for m in summary["matches"]}
        left = set(files(gradio_cache).values()) | set(files(live_dir).values())
        assert photo not in left  # the kept photo and its served copies: at once
        uploads = {(tmp_path / "aiko.wav").read_bytes(), PHOTO.read_bytes()}
        deadline = time.monotonic() + 3 * lifetime  # the uploads: within their lifetime
        while uploads & set(files(gradio_cache).values()) and time.monotonic() < deadline:
            time.sleep(1.0)
        assert not uploads & (set(files(gradio_cache).values()) | set(files(live_dir).values()))
    assert aiko not in Enrolled.load(live_dir / "gallery").gallery

    with serve_app(dev_bundle, tmp_path / "readonly.log") as (url, _):  # no password
        endpoints = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
        assert "/predict" in endpoints["named_endpoints"]
        assert not {"/enroll", "/delete"} & set(endpoints["named_endpoints"])
        config = json.loads(urllib.request.urlopen(url + "config", timeout=10).read())
        elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert "voice" in elem_ids and not {"password", "enroll-voice"} & elem_ids


@pytest.mark.slow
def test_a_failed_latent_is_reported_and_retried_on_the_next_start(dev_bundle, inversion,
                                                                   tmp_path):
    vf = VoiceFace.from_pretrained(dev_bundle, progress=False)
    broken = InversionConfig(steps=3, n_init=2, resolution=32,
                             backbone=str(tmp_path / "no-backbone"), revision=None)
    live = LiveGallery.open(vf, tmp_path / "live", inversion=broken)
    aiko = live.enroll("Aiko", voice(1), PHOTO, consent=True)
    assert live.wait(WAIT) and live.status(aiko).startswith("failed: ")
    assert aiko in live.vf.gallery and live.vf.state.latents.get(aiko) is None  # searchable
    live.close()

    vf = VoiceFace.from_pretrained(dev_bundle, progress=False)
    again = LiveGallery.open(vf, tmp_path / "live", inversion=inversion)
    assert again.wait(WAIT) and again.status(aiko) == "ready"
    assert Enrolled.load(tmp_path / "live" / "gallery").latents.get(aiko) is not None
    again.close()

"""A live gallery under concurrency and crashes: requests see one version, processes lose no
update, and a delete killed at any step never leaves the person served by the mapper."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import warnings

import numpy as np
import pytest

from conftest import DEV_PEOPLE, PHOTO
from crashes import KillAt
from voiceface import enroll as enroll_module
from voiceface.audio import load_audio
from voiceface.devbundle import synthetic_voice
from voiceface.enroll import LiveGallery
from voiceface.enrolled import Enrolled
from voiceface.derived import load_derived
from voiceface.pipeline import VoiceFace

RATE = 16_000
CLONES = 40  # people deleted one by one while requests run
REQUEST_THREADS = 2
CLONE_NOISE = 1e-3  # clones of the query's voice: nearer to it than anyone enrolled (the tiny
# encoder puts everyone within a cosine of about 0.999)
SWITCH_INTERVAL = 1e-5  # s; switch threads often so that deletes land inside requests
MAX_DELETE_STEPS = 40  # file-system commits and training steps of one delete (about 15)
CHILD_TIMEOUT = 120  # s for one child process; a safety net, not a pace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def vf(dev_bundle):
    return VoiceFace.from_pretrained(dev_bundle, progress=False)


def voice(seed: int) -> tuple[int, np.ndarray]:
    return RATE, synthetic_voice(6.0, seed=seed, f0=150.0 + 40 * seed, formant=900.0)


# -- one request, one version ------------------------------------------------------------------
@pytest.mark.slow
def test_requests_see_one_gallery_version_while_people_are_deleted(vf, dev_bundle, tmp_path):
    query = (RATE, load_audio(dev_bundle / "voices" / "dev02.flac"))
    embedding = vf.encoder.embed(query[1])
    rng = np.random.default_rng(0)
    enrolled = Enrolled.load(dev_bundle / "gallery")
    gallery = enrolled.gallery
    clones = [f"clone{i:02d}" for i in range(CLONES)]
    for clone in clones:  # the query's nearest people, deleted one by one below
        e = embedding + CLONE_NOISE * rng.standard_normal(embedding.shape).astype(np.float32)
        gallery.add(clone, e / np.linalg.norm(e))
        enrolled.latents.set(clone, rng.standard_normal(64))
    enrolled.save(tmp_path / "live" / "gallery")  # no mapper: requests blend their matches
    query_embedding = vf.encoder.embed(load_audio(query))  # as the pipeline embeds the query
    clones = [m.id for m in gallery.search(query_embedding, len(gallery))
              if m.id in clones]  # nearest first: every delete below changes the matches
    versions = {}  # matched ids -> the w that version gives
    for deleted in range(CLONES + 1):
        result = VoiceFace(vf.encoder, vf.generator, enrolled, None)(query, resolution=8)
        versions[tuple(m.id for m in result.matches)] = result.w
        if deleted < CLONES:
            gallery.remove(clones[deleted])
    assert len(versions) == CLONES + 1  # each delete changed the matches: versions are told apart
    live = LiveGallery.open(vf, tmp_path / "live", min_people=10 ** 6)  # never a mapper
    results, errors, done = [], [], threading.Event()

    def requests():
        while not done.is_set():
            try:
                results.append(live.vf(query, resolution=8))
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

    threads = [threading.Thread(target=requests) for _ in range(REQUEST_THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        for thread in threads:
            thread.start()
        for clone in clones:
            live.delete(clone)
    finally:
        done.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
    seen = {tuple(m.id for m in result.matches) for result in results}
    assert len(seen) > 1  # requests really ran during the deletes (not a count: load varies)
    for result in results:
        ids = tuple(m.id for m in result.matches)
        assert ids in versions, ids  # all matches from one version of the gallery
        np.testing.assert_allclose(result.w, versions[ids], atol=1e-5)  # its latents too


def test_a_delete_landing_inside_a_request_leaves_it_on_its_version(vf, dev_bundle, tmp_path):
    live = LiveGallery.open(vf, tmp_path / "live", min_people=10 ** 6)  # no retraining
    query = dev_bundle / "voices" / "dev02.flac"
    before = live.vf(query, resolution=8)
    assert before.matches[0].id == "dev02" and before.method == "mapper"
    gallery = live.vf.gallery
    search = gallery.search

    def search_then_delete(embedding, k):
        matches = search(embedding, k)
        live.delete(matches[0].id)  # lands between the request's search and its latent
        return matches

    gallery.search = search_then_delete
    during = live.vf(query, resolution=8)
    assert [m.id for m in during.matches] == [m.id for m in before.matches]
    assert during.method == "mapper" and during.confident == before.confident
    np.testing.assert_allclose(during.w, before.w, atol=1e-6)
    after = live.vf(query, resolution=8)  # the next request sees the delete
    assert "dev02" not in {m.id for m in after.matches} and after.method == "knn-blend"


# -- two processes, one directory ------------------------------------------------------------
def enroll_and_delete(vf, root, n, barrier, report) -> None:
    """Child `n`: in rounds started together with the other child, enroll three people,
    delete the first of them and one of the bundle's people; report whom it kept."""
    LiveGallery._queue = lambda self, person_id: None  # no inversion: enrolled without latent
    live = LiveGallery.open(vf, root)

    def together(action):
        barrier.wait(CHILD_TIMEOUT)
        return action()

    first = together(lambda: live.enroll(f"First {n}", voice(n), PHOTO, consent=True))
    second = together(lambda: live.enroll(f"Second {n}", voice(2 + n), PHOTO, consent=True))
    together(lambda: live.delete(first))
    together(lambda: live.delete(f"dev{n:02d}"))
    third = together(lambda: live.enroll(f"Third {n}", voice(4 + n), PHOTO, consent=True))
    report.put((second, third))


@pytest.mark.slow
def test_two_processes_enrolling_and_deleting_lose_nothing_and_resurrect_nothing(vf,
                                                                                  tmp_path):
    root = tmp_path / "live"
    LiveGallery.open(vf, root).close()
    fork = multiprocessing.get_context("fork")  # the children inherit the tiny models
    barrier, report = fork.Barrier(2), fork.Queue()
    children = [fork.Process(target=enroll_and_delete, args=(vf, root, n, barrier, report))
                for n in range(2)]
    for child in children:
        child.start()
    loads = 0
    while any(child.is_alive() for child in children):
        Enrolled.load(root / "gallery")  # never meets a data directory half-replaced
        loads += 1
    for child in children:
        child.join(CHILD_TIMEOUT)
        assert child.exitcode == 0
    kept = {person for _ in children for person in report.get(timeout=CHILD_TIMEOUT)}
    saved = Enrolled.load(root / "gallery").gallery
    bundle_people = {f"dev{i:02d}" for i in range(DEV_PEOPLE)}
    assert {p.id for p in saved.people} == bundle_people - {"dev00", "dev01"} | kept
    assert loads > 0
    state = load_derived(root, vf.encoder.fingerprint, vf.generator_fingerprint)
    assert state.mapper is not None  # retrained by the second delete, without either
    assert set(state.mapper.config.people) == bundle_people - {"dev00", "dev01"}


def test_a_replica_takes_the_others_changes_when_it_refreshes(vf, dev_bundle, tmp_path):
    one = LiveGallery.open(vf, tmp_path / "live", min_people=4)
    two = LiveGallery.open(VoiceFace.from_pretrained(dev_bundle, progress=False),
                           tmp_path / "live", min_people=4)
    assert not two.refresh()
    one.delete("dev03")  # drops and retrains the mapper
    assert "dev03" in two.vf.gallery and "dev03" in two.mapper_people  # until it refreshes
    assert two.refresh()
    assert "dev03" not in two.vf.gallery and "dev03" not in two.mapper_people
    assert not two.refresh() and not one.refresh()


# -- a mapper that may hold someone gone is not used ------------------------------------------
def test_a_mapper_trained_on_someone_gone_or_not_saying_whom_is_not_used(dev_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(dev_bundle, bundle)
    mapper_json = bundle / "mapper" / "mapper.json"
    config = json.loads(mapper_json.read_text())
    assert config["people"] == [f"dev{i:02d}" for i in range(DEV_PEOPLE)]  # train_mapper's
    assert VoiceFace.from_pretrained(bundle, progress=False)(
        bundle / "voices" / "dev01.flac").method == "mapper"

    enrolled = Enrolled.load(bundle / "gallery")
    enrolled.gallery.remove("dev03")  # deleted without retraining the mapper (by an old version)
    enrolled.save(bundle / "gallery")
    with pytest.warns(UserWarning, match="trained on 1 people who are no longer in the "
                                         "gallery.*rebuild the mapper"):
        vf = VoiceFace.from_pretrained(bundle, progress=False)
    assert vf.mapper is None and vf(bundle / "voices" / "dev01.flac").method == "knn-blend"

    del config["people"]  # a mapper saved before mappers recorded whom they learnt
    mapper_json.write_text(json.dumps(config))
    shutil.copytree(dev_bundle / "gallery", bundle / "gallery", dirs_exist_ok=True)
    shutil.copy(dev_bundle / "gallery" / "manifest.json", bundle / "gallery")
    with pytest.warns(UserWarning, match="does not record whom it was trained on"):
        assert VoiceFace.from_pretrained(bundle, progress=False).mapper is None


@pytest.mark.parametrize("people", ["missing", None, []])
def test_a_delete_drops_a_saved_mapper_that_does_not_say_whom_it_learnt(vf, tmp_path, people):
    """Such a mapper may hold anyone: a delete removes it from the gallery directory (too few
    latents are left to retrain one), and nothing serves it meanwhile."""
    root = tmp_path / "live"
    few = DEV_PEOPLE + 2  # more people with latents than the gallery has: never retrained
    LiveGallery.open(vf, root, min_people=few).close()
    mapper_json = root / "mapper" / "mapper.json"
    config = json.loads(mapper_json.read_text())
    if people == "missing":
        del config["people"]  # saved before mappers recorded whom they learnt
    else:
        config["people"] = people
    mapper_json.write_text(json.dumps(config))
    weights = (root / "mapper" / "mapper.safetensors").read_bytes()
    with pytest.warns(UserWarning, match="does not record whom it was trained on"):
        live = LiveGallery.open(vf, root, min_people=few)
    assert live.vf.mapper is None and mapper_json.is_file()  # not used, still saved
    live.delete("dev03")
    assert live.vf.mapper is None and not (root / "mapper").exists()
    assert not any(p.is_file() and p.read_bytes() == weights for p in root.rglob("*"))
    assert live.vf(voice(1)).method == "knn-blend"


# -- a delete killed at each step -------------------------------------------------------------
def delete_killed_at(vf, root, person_id: str, step: int) -> None:
    """Child: delete `person_id`, killing itself with SIGKILL just before the `step`-th
    commit of the delete (a rename, a directory removal) or its mapper training."""
    live = LiveGallery.open(vf, root, min_people=4)
    killer = KillAt(step)
    os.rename, os.replace = killer.wrap(os.rename), killer.wrap(os.replace)
    shutil.rmtree = killer.wrap(shutil.rmtree)
    enroll_module.train_mapper = killer.wrap(enroll_module.train_mapper)
    live.delete(person_id)


def traces(root, person_id: str) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and person_id.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_delete_killed_at_any_step_never_leaves_the_person_in_the_mapper(vf, tmp_path):
    template = tmp_path / "template"
    LiveGallery.open(vf, template, min_people=4).close()
    assert "dev02" in vf.mapper.config.people
    fingerprints = (vf.encoder.fingerprint, vf.generator_fingerprint)
    fork = multiprocessing.get_context("fork")
    outcomes = []
    for step in range(1, MAX_DELETE_STEPS + 1):
        root = tmp_path / f"killed-at-{step}"
        shutil.copytree(template, root)
        child = fork.Process(target=delete_killed_at, args=(vf, root, "dev02", step))
        child.start()
        child.join(CHILD_TIMEOUT)
        if child.exitcode == 0:
            break  # the delete finished before this step: every step before it was tried
        assert child.exitcode == -signal.SIGKILL
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing mapper is expected here
            state = load_derived(root, *fingerprints)  # loads after a kill at any step
        deleted = "dev02" not in state.gallery
        outcomes.append(deleted)
        if deleted:
            assert state.mapper is None or "dev02" not in state.mapper.config.people
        # The next start finishes the job: the delete (if it is needed) goes through.
        live = LiveGallery.open(vf, root, min_people=4)
        if not deleted:
            live.delete("dev02")
        assert "dev02" not in live.vf.gallery and "dev02" not in live.mapper_people
        assert len(live.mapper_people) == DEV_PEOPLE - 1  # retrained on all who are left
        assert not traces(root, "dev02")
        assert not list(root.glob(".mapper-*"))
    else:
        pytest.fail(f"the delete took more than {MAX_DELETE_STEPS} steps")
    assert False in outcomes and True in outcomes  # kills before and after the gallery commit

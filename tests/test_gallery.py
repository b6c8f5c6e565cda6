"""Gallery: FAISS search, open set, atomic saves that survive a crash, fingerprint refusal."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from PIL import Image

from voiceface import gallery_files
from voiceface import storage
from voiceface.enrolled import Enrolled
from voiceface.gallery import Gallery, GalleryError
from voiceface.latents import Latents
from voiceface.population import population_centre

DIM = 16


def unit(rng, n=1, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def faces(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"face{i}.png"
        Image.new("RGB", (8, 8), (40 * i, 10, 200 - 40 * i)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def enrolled(faces):
    rng = np.random.default_rng(0)
    e = Enrolled.new(DIM, "enc-A", threshold=0.6, generator_fingerprint="gen-A")
    for i, embedding in enumerate(unit(rng, 4)):
        e.gallery.add(f"p{i}", embedding, name=f"Person {i}", faces=[faces[i]], consent=True)
        e.latents.set(f"p{i}", rng.standard_normal(8).astype(np.float32))
    return e


@pytest.fixture
def gallery(enrolled):
    return enrolled.gallery


def test_search_ranks_by_cosine(gallery):
    matches = gallery.search(gallery.embedding("p2"), k=3)
    assert [m.rank for m in matches] == [1, 2, 3]
    assert matches[0].id == "p2" and matches[0].name == "Person 2"
    assert matches[0].score == pytest.approx(1.0, abs=1e-5)
    assert matches[0].score >= matches[1].score >= matches[2].score
    brute = gallery.embeddings() @ gallery.embedding("p2")
    assert [m.id for m in matches] == [f"p{i}" for i in np.argsort(-brute)[:3]]
    assert len(gallery.search(gallery.embedding("p0"), k=50)) == 4


def test_open_set_threshold(gallery):
    assert gallery.confident(gallery.search(gallery.embedding("p1")))
    far = -gallery.embeddings().sum(axis=0)  # points away from everyone
    far /= np.linalg.norm(far)
    matches = gallery.search(far)
    assert matches[0].score < 0.6 and not gallery.confident(matches)


def test_a_score_equal_to_the_threshold_is_confident(gallery):
    """The calibrated threshold is itself an observed score: reaching it is enough."""
    matches = gallery.search(gallery.embedding("p1"), k=1)
    gallery.threshold = matches[0].score
    assert gallery.confident(matches)
    gallery.threshold = float(np.nextafter(np.float32(matches[0].score), np.float32(np.inf)))
    assert not gallery.confident(matches)
    assert not gallery.confident([])


def test_a_search_after_an_update_uses_the_new_embedding(gallery):
    before = gallery.search(gallery.embedding("p3"), k=1)  # builds the index
    assert before[0].id == "p3"
    gallery.update("p0", embedding=gallery.embedding("p3"))  # p0 now speaks as p3 did
    moved = -gallery.embedding("p3")
    gallery.update("p3", embedding=moved)
    after = gallery.search(gallery.embedding("p0"), k=1)[0]
    assert after.id == "p0" and after.score == pytest.approx(1.0, abs=1e-5)
    assert gallery.search(moved, k=1)[0].id == "p3"


def test_add_update_remove(enrolled):
    gallery = enrolled.gallery
    gallery.update("p1", name="Renamed", consent=False)
    assert gallery.person("p1").name == "Renamed" and not gallery.person("p1").consent
    new = np.zeros(DIM, np.float32)
    new[0] = 1
    gallery.update("p1", embedding=new)
    assert gallery.search(new, k=1)[0].id == "p1"
    removed = gallery.remove("p1")
    assert removed.id == "p1" and "p1" not in gallery and len(gallery) == 3
    assert all(m.id != "p1" for m in gallery.search(new, k=10))
    assert enrolled.latents.rows()[0] == ["p0", "p2", "p3"]  # only the gallery's people
    gallery.add("p1", new)  # enrolled again: the latent of the one removed is not theirs
    assert enrolled.latents.get("p1") is None and len(enrolled.latents) == 3


def test_population_centre_is_the_mean_latent_and_follows_every_change(enrolled):
    gallery, latents = enrolled.gallery, enrolled.latents

    def mean(ids):
        return np.mean([latents.get(i).astype(np.float64) for i in ids], axis=0)

    assert latents.centre.dtype == np.float32
    assert np.array_equal(latents.centre, mean(["p0", "p1", "p2", "p3"]).astype(np.float32))
    gallery.remove("p1")  # the table follows the gallery's people, even before drop()
    assert np.array_equal(latents.centre, mean(["p0", "p2", "p3"]).astype(np.float32))
    latents.set("p2", np.full(8, 3.0, np.float32))
    assert np.array_equal(latents.centre, mean(["p0", "p2", "p3"]).astype(np.float32))
    gallery.add("p9", unit(np.random.default_rng(5))[0])
    latents.set("p9", np.ones(8, np.float32))
    assert np.array_equal(latents.centre, mean(["p0", "p2", "p3", "p9"]).astype(np.float32))
    latents.centre[:] = 0  # a copy: the cache cannot be changed from outside
    assert latents.centre.any()
    assert Latents(Gallery(DIM, "enc-A")).centre is None  # nobody with a latent
    with pytest.raises(ValueError, match=r"M >= 1"):
        population_centre(np.zeros((0, 8)))


def test_the_centre_is_saved_and_galleries_without_it_load(enrolled, tmp_path):
    root = enrolled.save(tmp_path / "g")
    saved = np.load(root / gallery_files.data_name(root) / "centre.npy")
    assert np.array_equal(saved, enrolled.latents.centre)
    (root / gallery_files.data_name(root) / "centre.npy").unlink()  # saved before it existed
    assert np.array_equal(Enrolled.load(root).latents.centre, enrolled.latents.centre)


def test_clear_errors(enrolled):
    gallery = enrolled.gallery
    rng = np.random.default_rng(1)
    with pytest.raises(GalleryError, match="already enrolled"):
        gallery.add("p0", unit(rng)[0])
    with pytest.raises(GalleryError, match="No person with id 'nobody'"):
        gallery.remove("nobody")
    with pytest.raises(GalleryError, match="16-d embeddings"):
        gallery.search(np.ones(DIM + 1, np.float32) / np.sqrt(DIM + 1))
    with pytest.raises(GalleryError, match="L2-normalised"):
        gallery.add("p9", 3 * unit(rng)[0])
    with pytest.raises(GalleryError, match="not valid"):
        gallery.add("../etc", unit(rng)[0])
    with pytest.raises(GalleryError, match="empty"):
        Gallery(DIM, "enc-A").search(unit(rng)[0])
    with pytest.raises(GalleryError, match="Embedding size must be positive, got 0"):
        Gallery(0, "enc-A")
    with pytest.raises(GalleryError, match="expected \\[8\\]"):
        enrolled.latents.set("p0", np.zeros(9, np.float32))
    with pytest.raises(GalleryError, match="No person with id 'nobody'"):
        enrolled.latents.set("nobody", np.zeros(8, np.float32))


def test_save_load_round_trip(enrolled, tmp_path):
    gallery = enrolled.gallery
    root = enrolled.save(tmp_path / "g")
    both = Enrolled.load(root, encoder_fingerprint="enc-A", generator_fingerprint="gen-A")
    loaded = both.gallery
    assert [p.id for p in loaded.people] == [p.id for p in gallery.people]
    assert np.array_equal(loaded.embeddings(), gallery.embeddings())
    assert np.array_equal(both.latents.get("p3"), enrolled.latents.get("p3"))
    assert both.latents.generator_fingerprint == "gen-A" and both.latents.dim == 8
    assert loaded.threshold == 0.6 and loaded.person("p2").name == "Person 2"
    match = loaded.search(gallery.embedding("p2"), k=1)[0]
    assert match.face.is_file() and match.face.parent == root / "faces"
    assert match.face.read_bytes() == gallery.person("p2").faces[0].read_bytes()


def test_resave_in_place_keeps_faces_and_drops_removed_data(enrolled, tmp_path):
    root = enrolled.save(tmp_path / "g")
    loaded = Enrolled.load(root)
    loaded.gallery.remove("p0")
    loaded.save(root)
    again = Enrolled.load(root).gallery
    assert len(again) == 3 and all(p.faces[0].is_file() for p in again.people)
    assert len(list((root / "faces").iterdir())) == 3  # p0's photo is gone from disk
    assert len([d for d in root.iterdir() if d.name.startswith("data-")]) == 1


def test_crash_mid_save_leaves_the_previous_gallery_loadable(enrolled, tmp_path, monkeypatch):
    root = enrolled.save(tmp_path / "g")
    changed = Enrolled.load(root)
    changed.gallery.remove("p3")
    calls = {"n": 0}
    real = storage.write_npy

    def crash_on_second_array(path, array):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(path, array)

    monkeypatch.setattr(storage, "write_npy", crash_on_second_array)
    with pytest.raises(OSError, match="simulated"):
        changed.save(root)
    monkeypatch.undo()
    survivor = Enrolled.load(root).gallery
    assert len(survivor) == 4 and "p3" in survivor
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_crash_before_the_manifest_is_replaced(enrolled, tmp_path, monkeypatch):
    root = enrolled.save(tmp_path / "g")
    changed = Enrolled.load(root)
    changed.gallery.remove("p1")
    real = storage.write_json

    def crash_on_manifest(path, obj):
        if path.name == gallery_files.MANIFEST:
            raise KeyboardInterrupt  # killed between the data and the manifest
        return real(path, obj)

    monkeypatch.setattr(storage, "write_json", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        changed.save(root)
    monkeypatch.undo()
    assert len(Enrolled.load(root).gallery) == 4


def test_fingerprint_mismatch_is_refused(enrolled, tmp_path):
    root = enrolled.save(tmp_path / "g")
    with pytest.raises(GalleryError, match="built with encoder 'enc-A'.*Rebuild"):
        Enrolled.load(root, encoder_fingerprint="enc-B")
    with pytest.raises(GalleryError, match="generator 'gen-A'"):
        Enrolled.load(root, generator_fingerprint="gen-B")
    with pytest.raises(GalleryError, match="built with encoder 'enc-A'"):  # sorts before
        Enrolled.load(root, encoder_fingerprint="enc-0")


def test_missing_or_foreign_directory(tmp_path):
    with pytest.raises(GalleryError, match="No gallery at"):
        Enrolled.load(tmp_path)
    storage.write_json(tmp_path / gallery_files.MANIFEST, {"format_version": 99})
    with pytest.raises(GalleryError, match="format version 99"):
        Enrolled.load(tmp_path)


def test_an_empty_gallery_saves_and_loads(tmp_path):
    """A live gallery whose last person was deleted is saved empty, and must load again."""
    root = Enrolled.new(DIM, "enc-A").save(tmp_path / "g")
    loaded = Enrolled.load(root).gallery
    assert len(loaded) == 0 and loaded.embeddings().shape == (0, DIM)


def test_latent_ids_that_do_not_match_the_latents_are_refused(enrolled, tmp_path):
    root = enrolled.save(tmp_path / "g")
    ids = root / gallery_files.data_name(root) / "latent_ids.json"
    storage.write_json(ids, json.loads(ids.read_text())[:-1])  # 3 ids for 4 latents
    with pytest.raises(GalleryError, match="inconsistent"):
        Enrolled.load(root)


def test_remove_leftovers_deletes_what_a_killed_save_left_and_keeps_the_gallery(enrolled,
                                                                                  tmp_path):
    root = enrolled.save(tmp_path / "g")
    current = gallery_files.data_name(root)
    (root / "data-0123456789ab").mkdir()  # an older version, that may hold deleted people
    (root / "data-0123456789ab" / "people.json").write_text("[]")
    (root / ".data-ba9876543210.tmp").mkdir()  # a save killed before its rename
    (root / ".manifest.json.tmp").write_text("{}")
    (root / "faces" / "0000.png").write_bytes(b"a face nobody references")
    before = sorted(p.name for p in (root / "faces").iterdir() if p.name != "0000.png")
    gallery_files.remove_leftovers(root)
    assert [p.name for p in root.iterdir()
            if p.name.startswith(("data-", ".data-")) or p.name.endswith(".tmp")] == [current]
    assert sorted(p.name for p in (root / "faces").iterdir()) == before
    assert [p.id for p in Enrolled.load(root).gallery.people] == ["p0", "p1", "p2", "p3"]
    gallery_files.remove_leftovers(tmp_path / "nothing-saved-here")  # no manifest: no-op


def test_corrupted_saved_embeddings_are_refused(enrolled, tmp_path):
    root = enrolled.save(tmp_path / "g")
    data = root / json.loads((root / gallery_files.MANIFEST).read_text())["data"]
    storage.write_npy(data / "embeddings.npy", 2 * enrolled.gallery.embeddings())
    with pytest.raises(GalleryError, match="unit vectors"):
        Enrolled.load(root)


# -- index choice (voiceface.ann) ------------------------------------------------------------
from voiceface import ann


def test_small_galleries_search_exactly_and_save_their_index_settings(enrolled, tmp_path):
    gallery = enrolled.gallery
    assert gallery.index_kind == "flat" and gallery.index_spec.kind == "auto"
    root = enrolled.save(tmp_path / "g")
    manifest = json.loads((root / gallery_files.MANIFEST).read_text())
    assert manifest["index"]["kind"] == "auto"
    del manifest["index"]  # a gallery saved before index settings existed
    storage.write_json(root / gallery_files.MANIFEST, manifest)
    old = Enrolled.load(root).gallery
    assert old.index_kind == "flat"
    query = gallery.embedding("p1")
    assert old.search(query, k=4) == [m for m in Enrolled.load(root).gallery.search(query, k=4)]
    assert [m.score for m in old.search(query, k=4)] == \
        [m.score for m in gallery.search(query, k=4)]


def big_gallery(n, index, seed=0):
    rng = np.random.default_rng(seed)
    g = Gallery(DIM, "enc-A", index=index)
    for i, e in enumerate(unit(rng, n)):
        g.add(f"p{i}", e)
    return g


def near(rng, vector, cosine=0.9):
    noisy = vector + np.sqrt(1 / cosine ** 2 - 1) / np.sqrt(DIM) * rng.standard_normal(DIM)
    return (noisy / np.linalg.norm(noisy)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_indexes_return_exact_scores_and_survive_save_load(kind, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(ann, "IVF_MIN", 100)
    spec = ann.IndexSpec(kind=kind, nlist=4, nprobe=2, pq_m=8, rerank=20)
    g = big_gallery(400, spec)
    assert g.index_kind == kind
    rng = np.random.default_rng(5)
    query = near(rng, g.embedding("p123"))
    matches = g.search(query, k=3)
    brute = g.embeddings() @ query
    assert matches[0].id == "p123"
    assert [m.score for m in matches] == pytest.approx(sorted(brute)[::-1][:3], abs=1e-6)
    loaded = Enrolled.load(Enrolled.of(g).save(tmp_path / "g")).gallery
    assert loaded.index_spec == spec and loaded.index_kind == kind
    assert loaded.search(query, k=3) == matches
    g.add("newcomer", unit(rng)[0])  # grows the built index in place
    assert g.search(g.embedding("newcomer"), k=1)[0].id == "newcomer"


def test_auto_switches_to_ivfpq_above_flat_max_and_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setattr(ann, "FLAT_MAX", 300)
    monkeypatch.setattr(ann, "IVF_MIN", 100)
    g = big_gallery(301, ann.IndexSpec(nlist=4, pq_m=8))
    assert g.index_kind == "ivfpq"
    g.remove("p0")
    assert g.index_kind == "flat"
    g.reindex("hnsw")
    assert g.index_kind == "hnsw" and g.search(g.embedding("p7"), k=1)[0].id == "p7"
    root = Enrolled.of(g).save(tmp_path / "g")
    assert Enrolled.load(root, index="flat").gallery.index_kind == "flat"


def test_only_ivfpq_needs_ivf_min_vectors_and_auto_is_exact_up_to_flat_max():
    """An inverted file cannot be trained on few vectors; a graph or a flat index can."""
    below, at = ann.IVF_MIN - 1, ann.IVF_MIN
    assert [ann.IndexSpec(kind=k).resolve(below) for k in ("flat", "hnsw", "ivfpq")] == \
        ["flat", "hnsw", "flat"]
    assert [ann.IndexSpec(kind=k).resolve(at) for k in ("flat", "hnsw", "ivfpq")] == \
        ["flat", "hnsw", "ivfpq"]
    auto = ann.IndexSpec()
    assert (auto.resolve(ann.FLAT_MAX), auto.resolve(ann.FLAT_MAX + 1)) == ("flat", "ivfpq")


@pytest.mark.parametrize("n, lists", [(400, 16), (4096, 64)])
def test_the_default_inverted_file_has_about_sqrt_n_lists_all_probed_when_few(n, lists,
                                                                               monkeypatch):
    """nlist=0: sqrt(n) rounded to a power of two, at least 16 (sqrt(4096) = 64, sqrt(400) =
    20 -> 16); nprobe=0: nlist / 8 but at least 64, so every list of a small index."""
    monkeypatch.setattr(ann, "IVF_MIN", 100)
    index = ann.build(unit(np.random.default_rng(0), n), ann.IndexSpec(kind="ivfpq", pq_m=8))
    assert (index.nlist, index.nprobe) == (lists, lists)
    with pytest.raises(ValueError, match="pq_m=5 must divide the embedding size 16"):
        ann.build(unit(np.random.default_rng(0), 400), ann.IndexSpec(kind="ivfpq", pq_m=5))
    large = faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 1024, faiss.METRIC_INNER_PRODUCT)
    ann.configure(large, ann.IndexSpec(kind="ivfpq"))  # a gallery of about a million
    assert large.nprobe == 1024 // 8


def test_an_index_that_finds_fewer_than_k_candidates_returns_only_those(monkeypatch):
    """An inverted file probing one of 16 lists proposes only that list's vectors: the rest
    of the k rows are -1 (score -inf), and the gallery returns the real candidates alone."""
    monkeypatch.setattr(ann, "IVF_MIN", 100)
    spec = ann.IndexSpec(kind="ivfpq", nlist=16, nprobe=1, pq_m=8, rerank=20)
    g = big_gallery(400, spec)
    query = g.embedding("p0")  # row 0: a real row, not a missing one
    scores, rows = ann.search(ann.build(g.embeddings(), spec), g.embeddings(), query[None], 50,
                              spec)
    found = rows[0] >= 0
    assert 0 < found.sum() < 50 and not found[found.sum():].any()  # missing ones last
    assert np.all(scores[0][~found] == -np.inf)
    matches = g.search(query, k=50)
    assert matches[0].id == "p0" and matches[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(matches) == found.sum() and len({m.id for m in matches}) == len(matches)
    brute = g.embeddings() @ query
    assert [m.score for m in matches] == pytest.approx(
        [float(brute[int(m.id[1:])]) for m in matches], abs=1e-6)


def test_unknown_index_kind_is_refused():
    with pytest.raises(ValueError, match="'annoy' is not one of auto, flat, hnsw, ivfpq"):
        Gallery(DIM, "enc-A", index="annoy")
    with pytest.raises(ValueError, match="nprobe=-1 must be at least 0"):
        ann.IndexSpec(nprobe=-1)
    with pytest.raises(ValueError, match="rerank=0 must be at least 1"):
        ann.IndexSpec(rerank=0)
    ann.IndexSpec(hnsw_m=1, ef_construction=1, ef_search=1, pq_m=1, rerank=1)  # the least

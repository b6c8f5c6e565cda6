"""Gallery: FAISS search, open set, atomic saves that survive a crash, fingerprint refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from voiceface import gallery as gallery_module
from voiceface import storage
from voiceface.gallery import Gallery, GalleryError

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
def gallery(faces):
    rng = np.random.default_rng(0)
    g = Gallery(DIM, "enc-A", threshold=0.6, generator_fingerprint="gen-A")
    for i, e in enumerate(unit(rng, 4)):
        g.add(f"p{i}", e, name=f"Person {i}", faces=[faces[i]], consent=True,
              latent=rng.standard_normal(8).astype(np.float32))
    return g


def test_search_ranks_by_cosine(gallery):
    matches = gallery.search(gallery.embedding("p2"), k=3)
    assert [m.rank for m in matches] == [1, 2, 3]
    assert matches[0].id == "p2" and matches[0].name == "Person 2"
    assert matches[0].score == pytest.approx(1.0, abs=1e-5)
    assert matches[0].score >= matches[1].score >= matches[2].score
    brute = gallery.embeddings @ gallery.embedding("p2")
    assert [m.id for m in matches] == [f"p{i}" for i in np.argsort(-brute)[:3]]
    assert len(gallery.search(gallery.embedding("p0"), k=50)) == 4


def test_open_set_threshold(gallery):
    assert gallery.confident(gallery.search(gallery.embedding("p1")))
    far = -gallery.embeddings.sum(axis=0)  # points away from everyone
    far /= np.linalg.norm(far)
    matches = gallery.search(far)
    assert matches[0].score < 0.6 and not gallery.confident(matches)


def test_add_update_remove(gallery):
    gallery.update("p1", name="Renamed", consent=False)
    assert gallery.person("p1").name == "Renamed" and not gallery.person("p1").consent
    new = np.zeros(DIM, np.float32)
    new[0] = 1
    gallery.update("p1", embedding=new)
    assert gallery.search(new, k=1)[0].id == "p1"
    removed = gallery.remove("p1")
    assert removed.id == "p1" and "p1" not in gallery and len(gallery) == 3
    assert all(m.id != "p1" for m in gallery.search(new, k=10))
    assert gallery.latents()[0] == ["p0", "p2", "p3"]


def test_clear_errors(gallery):
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
    with pytest.raises(GalleryError, match="expected \\[8\\]"):
        gallery.update("p0", latent=np.zeros(9, np.float32))


def test_save_load_round_trip(gallery, tmp_path):
    root = gallery.save(tmp_path / "g")
    loaded = Gallery.load(root, encoder_fingerprint="enc-A", generator_fingerprint="gen-A")
    assert [p.id for p in loaded.people] == [p.id for p in gallery.people]
    assert np.array_equal(loaded.embeddings, gallery.embeddings)
    assert np.array_equal(loaded.latent("p3"), gallery.latent("p3"))
    assert loaded.threshold == 0.6 and loaded.person("p2").name == "Person 2"
    match = loaded.search(gallery.embedding("p2"), k=1)[0]
    assert match.face.is_file() and match.face.parent == root / "faces"
    assert match.face.read_bytes() == gallery.person("p2").faces[0].read_bytes()


def test_resave_in_place_keeps_faces_and_drops_removed_data(gallery, tmp_path):
    root = gallery.save(tmp_path / "g")
    loaded = Gallery.load(root)
    loaded.remove("p0")
    loaded.save(root)
    again = Gallery.load(root)
    assert len(again) == 3 and all(p.faces[0].is_file() for p in again.people)
    assert len(list((root / "faces").iterdir())) == 3  # p0's photo is gone from disk
    assert len([d for d in root.iterdir() if d.name.startswith("data-")]) == 1


def test_crash_mid_save_leaves_the_previous_gallery_loadable(gallery, tmp_path, monkeypatch):
    root = gallery.save(tmp_path / "g")
    changed = Gallery.load(root)
    changed.remove("p3")
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
    survivor = Gallery.load(root)
    assert len(survivor) == 4 and "p3" in survivor
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_crash_before_the_manifest_is_replaced(gallery, tmp_path, monkeypatch):
    root = gallery.save(tmp_path / "g")
    changed = Gallery.load(root)
    changed.remove("p1")
    real = storage.write_json

    def crash_on_manifest(path, obj):
        if path.name == gallery_module.MANIFEST:
            raise KeyboardInterrupt  # killed between the data and the manifest
        return real(path, obj)

    monkeypatch.setattr(storage, "write_json", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        changed.save(root)
    monkeypatch.undo()
    assert len(Gallery.load(root)) == 4


def test_fingerprint_mismatch_is_refused(gallery, tmp_path):
    root = gallery.save(tmp_path / "g")
    with pytest.raises(GalleryError, match="built with encoder 'enc-A'.*Rebuild"):
        Gallery.load(root, encoder_fingerprint="enc-B")
    with pytest.raises(GalleryError, match="generator 'gen-A'"):
        Gallery.load(root, generator_fingerprint="gen-B")


def test_missing_or_foreign_directory(tmp_path):
    with pytest.raises(GalleryError, match="No gallery at"):
        Gallery.load(tmp_path)
    storage.write_json(tmp_path / gallery_module.MANIFEST, {"format_version": 99})
    with pytest.raises(GalleryError, match="format version 99"):
        Gallery.load(tmp_path)


def test_corrupted_saved_embeddings_are_refused(gallery, tmp_path):
    root = gallery.save(tmp_path / "g")
    data = root / json.loads((root / gallery_module.MANIFEST).read_text())["data"]
    storage.write_npy(data / "embeddings.npy", 2 * gallery.embeddings)
    with pytest.raises(GalleryError, match="unit vectors"):
        Gallery.load(root)

"""Loading a gallery: no native parser meets its files, and a concurrent save is survived."""

from __future__ import annotations

import json
from types import SimpleNamespace
from uuid import UUID

import numpy as np
import pytest

from voiceface import gallery_files
from voiceface.enrolled import Enrolled
from voiceface.gallery import GalleryError
from voiceface.gallery_files import MANIFEST

DIM = 16
PEOPLE = 30


def make_gallery(seed: int = 0, people: int = PEOPLE) -> Enrolled:
    rng = np.random.default_rng(seed)
    enrolled = Enrolled.new(DIM, "enc", generator_fingerprint="gen")
    for i in range(people):
        e = rng.standard_normal(DIM).astype(np.float32)
        enrolled.gallery.add(f"p{i:02d}", e / np.linalg.norm(e))
        enrolled.latents.set(f"p{i:02d}", rng.standard_normal(8).astype(np.float32))
    return enrolled


def data_dir(root):
    return next(root.glob("data-*"))


def test_a_garbage_index_file_is_not_parsed_and_the_index_is_rebuilt(tmp_path):
    enrolled = make_gallery()
    gallery = enrolled.gallery
    root = enrolled.save(tmp_path / "gallery")
    assert not (data_dir(root) / "index.faiss").exists()  # nothing writes one any more
    # An older gallery has one; a hostile one may hold anything.
    (data_dir(root) / "index.faiss").write_bytes(b"IxFI" + bytes(range(256)) * 8)
    loaded = Enrolled.load(root).gallery
    for person in gallery.people:
        best = loaded.search(gallery.embedding(person.id), k=1)[0]
        assert best.id == person.id and best.score == pytest.approx(1.0, abs=1e-5)


def test_arrays_are_read_without_pickles(tmp_path, monkeypatch):
    root = make_gallery().save(tmp_path / "gallery")
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    Enrolled.load(root)
    assert calls and all(allow is False for allow in calls)  # said explicitly, every time

    hostile = np.empty(PEOPLE, dtype=object)  # an object array is stored as a pickle
    hostile[:] = [{"run": "code"}] * PEOPLE
    with open(data_dir(root) / "embeddings.npy", "wb") as f:
        np.save(f, hostile, allow_pickle=True)
    with pytest.raises(GalleryError, match="embeddings.npy .* not a plain numeric array.*"
                                           "rebuild it"):
        Enrolled.load(root)


@pytest.mark.parametrize("first, second", [("0" * 32, "f" * 32), ("f" * 32, "0" * 32)])
def test_a_save_replacing_the_data_while_it_is_read_makes_the_load_start_again(
        tmp_path, monkeypatch, first, second):
    """Another process's save lands between reading the manifest and reading the arrays;
    whichever way the two saves' random data names sort."""
    names = iter([first, second])
    monkeypatch.setattr(gallery_files, "uuid", SimpleNamespace(uuid4=lambda: UUID(next(names))))
    root = make_gallery(seed=0).save(tmp_path / "gallery")
    newer = make_gallery(seed=1, people=PEOPLE - 1)
    real_load = np.load
    saves = []

    def load_after_a_concurrent_save(*args, **kwargs):
        if not saves:
            saves.append(newer.save(root))  # removes the data directory being read
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", load_after_a_concurrent_save)
    loaded = Enrolled.load(root).gallery
    assert saves and len(loaded) == PEOPLE - 1
    np.testing.assert_array_equal(loaded.embeddings(), newer.gallery.embeddings())


def test_a_really_missing_file_is_a_clear_error(tmp_path):
    root = make_gallery().save(tmp_path / "gallery")
    (data_dir(root) / "latents.npy").unlink()
    assert (root / MANIFEST).is_file()
    with pytest.raises(GalleryError, match="incomplete .*latents.npy is missing.*rebuild"):
        Enrolled.load(root)


@pytest.mark.parametrize("face", ["/etc/hostname", "faces/../../etc/hostname",
                                  "../faces/0123abcd.png", "faces/sub/0123abcd.png"])
def test_a_face_named_outside_the_gallery_s_faces_folder_is_refused(tmp_path, face):
    """A saved gallery (e.g. downloaded) whose people.json names a face elsewhere on the
    server would have that file served or copied as a photo: refused when read."""
    make_gallery().save(tmp_path)
    people_file = data_dir(tmp_path) / "people.json"
    people = json.loads(people_file.read_text())
    people[0]["faces"] = [face]
    people_file.write_text(json.dumps(people))
    with pytest.raises(GalleryError, match="outside its faces/ folder"):
        Enrolled.load(tmp_path)


@pytest.mark.parametrize("data", ["../elsewhere", "/tmp", "data-12/../../x"])
def test_a_data_folder_named_outside_the_gallery_is_refused(tmp_path, data):
    make_gallery().save(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["data"] = data
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(GalleryError, match="not a folder beside its manifest"):
        Enrolled.load(tmp_path)


def test_saved_faces_load_by_their_content_names(tmp_path):
    photo = tmp_path / "Photo One.JPG"
    photo.write_bytes(b"\xff\xd8\xff not decoded here")
    enrolled = make_gallery()
    enrolled.gallery.update(enrolled.gallery.people[0].id, faces=[photo])
    enrolled.save(tmp_path / "g")
    (face,) = Enrolled.load(tmp_path / "g").gallery.people[0].faces
    assert face.parent == tmp_path / "g" / "faces" and face.suffix == ".jpg"
    assert face.read_bytes() == photo.read_bytes()

"""Loading a gallery: no native parser meets its files, and a concurrent save is survived."""

from __future__ import annotations

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

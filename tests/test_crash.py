"""Crash safety: a gallery save killed with SIGKILL at random points leaves the old or the new
gallery, never a mix, and the next save cleans up whatever the killed one left behind; a
directory replaced by `storage.replace_dir` is the old tree or the new one. (A build killed at
each of its steps: tests/test_build.py.)"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from voiceface import storage
from voiceface.enrolled import Enrolled
from voiceface.gallery_files import MANIFEST

TRIALS = 40
PEOPLE = 300  # enough that one save takes a few milliseconds to kill into
DIM = 64
LATENT_DIM = 32


def make_state(tmp_path, seed: int, drop: int) -> Enrolled:
    """A gallery of PEOPLE people minus person `drop`, each value depending on `seed`."""
    rng = np.random.default_rng(seed)
    enrolled = Enrolled.new(DIM, "enc", generator_fingerprint="gen", latent_dim=LATENT_DIM)
    for i in range(PEOPLE):
        e = rng.standard_normal(DIM).astype(np.float32)
        latent = rng.standard_normal(LATENT_DIM).astype(np.float32)
        if i == drop:
            continue
        faces = []
        if i % 50 == 0:  # a few photos, so faces are written and removed too
            faces = [tmp_path / f"face-{seed}-{i}.png"]
            Image.new("RGB", (8, 8), (seed * 40 % 256, i % 256, 7)).save(faces[0])
        enrolled.gallery.add(f"p{i:03d}", e / np.linalg.norm(e), faces=faces)
        enrolled.latents.set(f"p{i:03d}", latent)
    return enrolled


def fingerprint(enrolled: Enrolled) -> tuple:
    gallery = enrolled.gallery
    ids, latents = enrolled.latents.rows()
    faces = [f.read_bytes() for p in gallery.people for f in p.faces]
    return (tuple(p.id for p in gallery.people), gallery.embeddings().tobytes(), tuple(ids),
            latents.tobytes(), tuple(faces))


def save_forever(states: list[Enrolled], root) -> None:
    """The child: save the states in turn until killed."""
    while True:
        for state in states:
            state.save(root)


def clean_listing(root) -> bool:
    """Only what one finished save leaves: manifest, lock, faces/ and one data directory."""
    rest = {p.name for p in root.iterdir()} - {".lock", "faces", MANIFEST}
    return len(rest) == 1 and rest.pop().startswith("data-") and \
        not any(p.name.startswith(".") for p in (root / "faces").iterdir())


@pytest.mark.slow
def test_sigkill_during_save_leaves_old_or_new_gallery(tmp_path):
    states = [make_state(tmp_path, seed=1, drop=0), make_state(tmp_path, seed=2, drop=1)]
    expected = [fingerprint(s) for s in states]
    root = tmp_path / "gallery"
    start = time.perf_counter()
    states[0].save(root)
    save_seconds = time.perf_counter() - start
    fork = multiprocessing.get_context("fork")  # the child inherits the states, no imports
    rng = np.random.default_rng(0)
    survived, mid_save = 0, 0
    for trial in range(TRIALS):
        child = fork.Process(target=save_forever, args=(states[trial % 2:] + states[:trial % 2],
                                                        root), daemon=True)
        child.start()
        time.sleep(rng.uniform(0, 3 * save_seconds))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        mid_save += not clean_listing(root)
        loaded = Enrolled.load(root)  # must always succeed
        assert fingerprint(loaded) in expected, f"trial {trial}: a mix of old and new"
        loaded.save(root)  # the next save cleans what the killed one left
        assert clean_listing(root), sorted(p.name for p in root.iterdir())
        survived += 1
    assert survived == TRIALS
    assert mid_save > 0  # some kills landed inside a save, not only between saves


def write_tree(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def read_tree(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


OLD_TREE = {"bundle.json": "old", "mapper/mapper.json": "old mapper"}
NEW_TREE = {"bundle.json": "new", "gallery/manifest.json": "new gallery"}


def test_replace_dir_swaps_a_whole_tree_and_deletes_the_old_one(tmp_path):
    target = tmp_path / "bundle"
    storage.replace_dir(write_tree(tmp_path / ".first", OLD_TREE), target)  # nothing there yet
    assert read_tree(target) == OLD_TREE
    storage.replace_dir(write_tree(tmp_path / ".second", NEW_TREE), target)
    assert read_tree(target) == NEW_TREE  # no old file survives beside the new ones
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_replace_dir_without_exchange_renames_twice_and_recovers_from_a_kill_between(
        tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_exchange", lambda a, b: False)  # e.g. macOS
    target = write_tree(tmp_path / "bundle", OLD_TREE)
    storage.replace_dir(write_tree(tmp_path / ".new", NEW_TREE), target)
    assert read_tree(target) == NEW_TREE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    # killed after the first rename: the old tree waits aside and is put back
    os.rename(target, storage.aside_path(target))
    storage.restore_aside(target)
    assert read_tree(target) == NEW_TREE and not storage.aside_path(target).exists()
    # killed after the second: the new tree is in place, the old one aside is deleted
    write_tree(storage.aside_path(target), OLD_TREE)
    storage.restore_aside(target)
    assert read_tree(target) == NEW_TREE and not storage.aside_path(target).exists()

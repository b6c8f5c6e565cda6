"""A saved gallery's directory: its format, written atomically and read back safely.

    manifest.json          format version, encoder/generator fingerprints, threshold and
                           how it was calibrated, the verification threshold's record
                           (`voiceface.verification`), data dir, index settings
    data-<id>/             people.json, embeddings.npy, latents.npy, latent_ids.json,
                           centre.npy (the population centre, when there are latents)
    faces/<sha>.<ext>      face images, content-addressed (shared by every data version)

`write` stores a new `data-<id>` as a temporary directory, fsyncs and renames it, then
replaces `manifest.json` atomically, under the directory's lock: a crash at any point leaves
the previous version loadable. `read` that meets a data directory a concurrent save has just
replaced starts again. Galleries come from the Hub too, so reading parses nothing native: the
arrays are read with `np.load(allow_pickle=False)`. What the records mean is
`voiceface.enrolled.Enrolled`'s business; this module only knows files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import storage

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOAD_ATTEMPTS = 5  # reads of a gallery that concurrent saves keep replacing
FACES_DIR = "faces"
DATA_NAME = re.compile(r"data-[0-9a-f]{1,32}")  # the manifest's data folder: a plain name
FACE_NAME = re.compile(rf"{FACES_DIR}/[0-9a-f]{{1,64}}(\.[a-z0-9_-]{{1,16}})?")  # faces/<sha>.<ext>
ARRAYS = ("embeddings.npy", "latents.npy")  # the numeric arrays of a data version


class GalleryError(ValueError):
    """The gallery cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class SavedGallery:
    """One saved version as read: the manifest, the people's records (face paths relative to
    the gallery directory), the arrays by file name, and whose each latent row is."""

    manifest: dict
    people: list[dict]
    arrays: dict[str, np.ndarray]
    latent_ids: list[str]


def write(root: Path, people: list[dict], arrays: dict[str, np.ndarray],
          latent_ids: list[str], centre: np.ndarray | None, manifest: dict) -> Path:
    """Save a new version into `root` (see the module docstring): `people` are records whose
    "faces" name image files anywhere (copied into `faces/` by content), `arrays` the
    `ARRAYS` by file name, `centre` recorded when given; `manifest` gets the format version
    and the data directory's name added."""
    with storage.locked(root):
        faces_dir = root / FACES_DIR
        faces_dir.mkdir(exist_ok=True)
        people = [{**person, "faces": [f"{FACES_DIR}/{_store_face(face, faces_dir)}"
                                       for face in person["faces"]]} for person in people]
        data = f"data-{uuid.uuid4().hex[:12]}"
        tmp = root / f".{data}.tmp"
        tmp.mkdir()
        try:
            storage.write_json(tmp / "people.json", people)
            for name in ARRAYS:
                storage.write_npy(tmp / name, arrays[name])
            storage.write_json(tmp / "latent_ids.json", latent_ids)
            if centre is not None:
                storage.write_npy(tmp / "centre.npy", centre)
            storage.fsync_path(tmp)
            os.rename(tmp, root / data)
            storage.fsync_path(root)
            storage.write_json(root / MANIFEST, {"format_version": FORMAT_VERSION, "data": data,
                                                 **manifest})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(root / data, ignore_errors=True)
            raise
        _remove_unreferenced(root, data, {f for p in people for f in p["faces"]})
    return root


def read(root: Path) -> SavedGallery:
    """The version saved in `root` now; `GalleryError` when there is none, it is of another
    format, incomplete, or holds something other than plain numeric arrays."""
    for _ in range(LOAD_ATTEMPTS):
        data = data_name(root)
        try:
            return _read(root)
        except FileNotFoundError as err:
            if data_name(root) == data:  # not replaced meanwhile: really missing
                raise GalleryError(f"The gallery at {root} is incomplete ({err.filename} "
                                   "is missing); rebuild it.") from None
    raise GalleryError(f"The gallery at {root} was replaced {LOAD_ATTEMPTS} times while it "
                       "was being read; try again.")


def _read(root: Path) -> SavedGallery:
    """One attempt of `read`; FileNotFoundError when a save removed what it reads."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise GalleryError(f"No gallery at {root} (missing {MANIFEST}). Build one with "
                           "`python -m voiceface build PEOPLE_DIR --out DIR`.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise GalleryError(f"The gallery at {root} has format version "
                           f"{manifest.get('format_version')}; this voiceface reads version "
                           f"{FORMAT_VERSION}. Rebuild it with `python -m voiceface build`.")
    if not DATA_NAME.fullmatch(str(manifest.get("data"))):
        raise GalleryError(f"The gallery at {root} names its data {manifest.get('data')!r}, "
                           "not a folder beside its manifest; it is corrupt or hostile: "
                           "rebuild it or get it from a source you trust.")
    data = root / manifest["data"]
    arrays = {name: _load_array(data / name, root) for name in ARRAYS}
    people = json.loads((data / "people.json").read_text())
    for person in people:
        for face in person.get("faces", ()):
            if not FACE_NAME.fullmatch(str(face)):
                raise GalleryError(
                    f"The gallery at {root} names a face {face!r} outside its {FACES_DIR}/ "
                    "folder; it is corrupt or hostile: rebuild it or get it from a source "
                    "you trust.")
    return SavedGallery(manifest, people, arrays,
                        json.loads((data / "latent_ids.json").read_text()))


def data_name(root: str | os.PathLike) -> str | None:
    """The data directory the manifest in `root` names now (None if there is no readable
    manifest): every save names a new one, so it identifies a saved version."""
    root = Path(root)
    try:
        return json.loads((root / MANIFEST).read_text()).get("data")
    except (OSError, ValueError):
        return None


def _load_array(path: Path, root: Path) -> np.ndarray:
    """A saved numeric array. Pickles are refused: unpickling a hostile file runs its code."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise GalleryError(f"{path.name} in the gallery at {root} is not a plain numeric array "
                           f"({err}). Galleries never hold pickles: this one is corrupt or "
                           "hostile; rebuild it or get it from a source you trust.") from None


def _store_face(face: str | os.PathLike, faces_dir: Path) -> str:
    """Copy a face image into `faces_dir` under its content hash; return the file name."""
    face = Path(face)
    if not face.is_file():
        raise GalleryError(f"Face image {face} does not exist.")
    data = face.read_bytes()
    name = hashlib.sha256(data).hexdigest()[:20] + face.suffix.lower()
    target = faces_dir / name
    if not target.exists():
        storage.write_bytes(target, data)
    return name


def remove_leftovers(directory: str | os.PathLike) -> None:
    """Delete what a killed save left in a saved gallery's directory (older data versions that
    may hold deleted people, temporary files, unreferenced face files); the saved version
    stays as it is."""
    root = Path(directory)
    with storage.locked(root):
        current = data_name(root)
        if current is None:
            return
        people = json.loads((root / current / "people.json").read_text())
        _remove_unreferenced(root, current, {f for p in people for f in p["faces"]})


def _remove_unreferenced(root: Path, data: str, faces: set[str]) -> None:
    """Delete older data versions, face files the new manifest does not reference, and
    temporary files that a killed save left behind (the caller holds the lock)."""
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.startswith(("data-", ".data-")) and entry.name != data:
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file() and entry.name.startswith(".") and entry.name.endswith(".tmp"):
            entry.unlink(missing_ok=True)
    for face in (root / FACES_DIR).iterdir():
        if f"{FACES_DIR}/{face.name}" not in faces:
            face.unlink(missing_ok=True)

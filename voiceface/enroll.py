"""Live enrollment: add consenting people to a running pipeline's gallery, and delete them.

    live = LiveGallery.open(vf, "/data/voiceface")      # the gallery directory (persistent)
    person_id = live.enroll("Aiko", "voice.wav", "face.jpg", consent=True)
    live.status(person_id)                              # "queued" -> "inverting" -> "ready"
    live.delete(person_id)                              # every trace, mapper retrained

The gallery directory holds `gallery/` (a saved `Gallery`: index, people, content-addressed
face photos, latents) and `mapper/`. On the first start it is a copy of the bundle's; later
starts load it, if it was made for the same encoder and generator.

An enrolled person is searchable by voice at once. Their face latent is computed by one
background worker (`Inverter` on the aligned photo kept for display); once at least
`min_people` people have latents, the mapper is retrained on everyone's (embedding, latent)
and swapped into the pipeline. Nothing of the recording is kept, only the voice embedding.

Every change is a read-modify-write of the saved gallery under one lock: load, change, save
(atomic), then swap a freshly loaded copy into the pipeline, so searches running meanwhile
never see a half-changed gallery.
"""

from __future__ import annotations

import io
import queue
import re
import shutil
import threading
import time
import unicodedata
import uuid
from pathlib import Path

import numpy as np

from . import faces, storage
from .audio import SAMPLE_RATE, AudioSource, load_audio
from .calibration import recalibrate
from .gallery import MANIFEST, Gallery, GalleryError
from .invert import InversionConfig, Inverter
from .mapper import SMALL_MAPPER, train_mapper
from .pipeline import GALLERY_DIR, MAPPER_DIR, VoiceFace, load_derived
from .voice import pool

MIN_ENROLL_SECONDS = 5.0  # s of speech; fewer give an unreliable voice embedding
MAX_ENROLL_SECONDS = 120.0  # s of speech; 20-90 s is plenty
MAX_NAME_CHARS = 80  # characters, after normalisation
# Letters that draw nothing and are not format characters: with them two names could look alike.
INVISIBLE_LETTERS = frozenset("\u034f\u115f\u1160\u3164\uffa0")  # CGJ, Hangul fillers
# Categories refused in names: control, format (bidi overrides and isolates, marks, zero-width
# spaces and joiners, BOM), surrogate, private use, unassigned, line and paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
MIN_MAPPER_PEOPLE = 4  # people with latents needed to (re)train the mapper
INCOMING = "incoming"  # photos between alignment and the gallery's save
READY = "ready"


class LiveGallery:
    """Enroll and delete people in `vf`'s gallery, saved in a directory; see the module doc."""

    def __init__(self, vf: VoiceFace, directory: str | Path, *,
                 inversion: InversionConfig | None = None,
                 min_people: int = MIN_MAPPER_PEOPLE, seed: int = 0):
        self.vf = vf
        self.root = Path(directory)
        self.inversion = inversion or InversionConfig()  # the photo -> latent settings
        self.min_people = min_people
        self.seed = seed
        self.mapper_people: list[str] | None = None  # whom the last retrained mapper saw
        self._lock = threading.RLock()
        self._status: dict[str, str] = {}
        self._jobs: queue.Queue[str | None] = queue.Queue()  # None stops the worker
        self._inverter: Inverter | None = None
        self._worker: threading.Thread | None = None

    @classmethod
    def open(cls, vf: VoiceFace, directory: str | Path, **kwargs) -> LiveGallery:
        """Use `directory` as `vf`'s gallery: load the one saved there, or copy the bundle's
        there first. Raises `GalleryError` when the saved one was made for other models.
        Live-enrolled people still missing a latent are queued again; photos a crash left
        between alignment and save are deleted."""
        live = cls(vf, directory, **kwargs)
        gallery_dir = live.root / GALLERY_DIR
        fingerprints = {"encoder_fingerprint": vf.encoder.fingerprint,
                        "generator_fingerprint": vf.generator_fingerprint}
        with live._lock, storage.locked(live.root):
            shutil.rmtree(live.root / INCOMING, ignore_errors=True)  # left by a crash
            if not (gallery_dir / MANIFEST).is_file():
                vf.gallery.save(gallery_dir)
                if vf.mapper is not None:
                    vf.mapper.save_pretrained(live.root / MAPPER_DIR)
        try:
            vf.gallery, vf.mapper = load_derived(live.root, **fingerprints)
        except GalleryError as err:
            raise GalleryError(f"{err} The gallery directory {live.root} holds people enrolled "
                               "with other models: start with those models, or choose another "
                               "gallery directory.") from None
        for person in vf.gallery.people:
            if vf.gallery.latent(person.id) is not None:
                live._status[person.id] = READY
            elif person.extra.get("live_enrolled") and person.faces:
                live._queue(person.id)
        return live

    @property
    def photo_dir(self) -> Path:
        """Where the gallery's face photos live (to serve them)."""
        return self.root / GALLERY_DIR / "faces"

    # -- enroll -----------------------------------------------------------------------------
    def enroll(self, name: str, voice_audio: AudioSource, face_photo: faces.ImageSource,
               consent: bool) -> str:
        """Validate, embed and add a person; return their id. Searchable by voice at once;
        the face latent follows in the background (`status`). Raises `ValueError` (nothing
        saved) without consent, or for an unusable name, recording or photo."""
        require_consent(consent)
        name = clean_name(name)
        wav = load_audio(voice_audio, max_seconds=MAX_ENROLL_SECONDS,
                         min_seconds=MIN_ENROLL_SECONDS)
        aligned = faces.align(face_photo, faces.DISPLAY_SIZE, name="the face photo").image
        embedding = pool(self.vf.encoder.embed_windows(wav))
        del wav  # nothing of the recording is kept
        person_id = new_id(name)
        incoming = self.root / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        photo = incoming / f"{uuid.uuid4().hex}.jpg"
        buffer = io.BytesIO()
        aligned.save(buffer, "JPEG", quality=faces.DISPLAY_QUALITY)
        storage.write_bytes(photo, buffer.getvalue())
        try:
            with self._lock:
                self._change(lambda g: g.add(
                    person_id, embedding, name=name, faces=[photo], consent=True, n_clips=1,
                    extra={"live_enrolled": True, "enrolled_at": _now()}))
                self._queue(person_id)
        finally:
            photo.unlink(missing_ok=True)  # the gallery keeps its own copy
        return person_id

    def status(self, person_id: str) -> str:
        """"queued", "inverting", "ready" or "failed: reason" for the person's face latent."""
        return self._status.get(person_id, "no latent")

    def statuses(self) -> dict[str, str]:
        """The latent status of everyone in the gallery, by id."""
        return {p.id: self.status(p.id) for p in self.vf.gallery.people}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background queue is empty; False if `timeout` s passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._jobs.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        """Stop the background worker after the queued work is done."""
        if self._worker is not None and self._worker.is_alive():
            self._jobs.put(None)
            self._worker.join()
        self._worker = None

    # -- delete -----------------------------------------------------------------------------
    def delete(self, person_id: str) -> None:
        """Remove a person completely: embedding, index entry, metadata, latent and photo
        (the save removes photos no one references; no recording was kept); then retrain
        the mapper without them, or drop it when fewer than `min_people` latents remain."""
        with self._lock:
            if person_id not in self.vf.gallery:
                raise GalleryError(f"No person with id {person_id!r} in the gallery.")
            had_latent = self.vf.gallery.latent(person_id) is not None
            self._change(lambda g: g.remove(person_id))
            self._status.pop(person_id, None)
            if had_latent:  # else the mapper never saw them
                self._retrain()

    # -- internals --------------------------------------------------------------------------
    def _change(self, change) -> None:
        """Load the saved gallery, apply `change(gallery)`, save it, swap a fresh copy in
        (the caller holds the lock)."""
        gallery_dir = self.root / GALLERY_DIR
        gallery = Gallery.load(gallery_dir)
        change(gallery)
        recalibrate(gallery)  # the threshold follows the people: see its docstring
        gallery.save(gallery_dir)
        self.vf.gallery = Gallery.load(gallery_dir)

    def _queue(self, person_id: str) -> None:
        self._status[person_id] = "queued"
        self._jobs.put(person_id)
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="voiceface-invert",
                                            daemon=True)
            self._worker.start()

    def _work(self) -> None:
        """The background worker: invert queued people's photos, one at a time."""
        while True:
            person_id = self._jobs.get()
            if person_id is None:
                self._jobs.task_done()
                return
            try:
                self._invert(person_id)
            except Exception as err:  # noqa: BLE001 - reported per person; the worker goes on
                if person_id in self._status:
                    self._status[person_id] = f"failed: {err}"
            finally:
                self._jobs.task_done()

    def _invert(self, person_id: str) -> None:
        if person_id not in self.vf.gallery:  # deleted while queued
            self._status.pop(person_id, None)
            return
        self._status[person_id] = "inverting"
        photo = faces.load_image(self.vf.gallery.person(person_id).faces[0])
        if self._inverter is None:
            self._inverter = Inverter.from_pretrained(self.inversion)
        w = self._inverter.invert(self.vf.generator, photo, seed=self.seed).w
        with self._lock:
            if person_id not in self.vf.gallery:  # deleted while inverting
                self._status.pop(person_id, None)
                return
            self._change(lambda g: g.update(person_id, latent=w))
            self._status[person_id] = READY
            if len(self.vf.gallery.latents()[0]) >= self.min_people:
                self._retrain()  # else the current mapper stays (it never saw this person)

    def _retrain(self) -> None:
        """Retrain the mapper on every person with a latent, or drop it when fewer than
        `min_people` have one (the caller holds the lock)."""
        gallery = self.vf.gallery
        ids, latents = gallery.latents()
        mapper_dir = self.root / MAPPER_DIR
        if len(ids) < max(2, self.min_people):
            shutil.rmtree(mapper_dir, ignore_errors=True)
            self.vf.mapper, self.mapper_people = None, None
            return
        embeddings = np.stack([gallery.embedding(i) for i in ids])
        mapper, _ = train_mapper(embeddings, latents, ids,
                                 self.vf.generator.w_avg.cpu().numpy(), **SMALL_MAPPER,
                                 encoder_fingerprint=self.vf.encoder.fingerprint,
                                 generator_fingerprint=self.vf.generator_fingerprint,
                                 seed=self.seed, progress=False)
        mapper.save_pretrained(mapper_dir)
        self.vf.mapper, self.mapper_people = mapper, ids


def require_consent(consent: object) -> None:
    """Raise `ValueError` unless `consent` is exactly `True` (a ticked box), so that no
    string ("false", "0"), number or list passed through an API counts as consent."""
    if consent is True:
        return
    given = "" if consent is False or consent is None else (
        f" Consent must be the boolean true, not a {type(consent).__name__}.")
    raise ValueError("Consent is required: the person must agree to their voice and face being "
                     f"stored and searched. Tick the consent box.{given}")


def clean_name(name: object) -> str:
    """A display name as it is stored and shown: NFKC-normalised (full-width "Ａｉｋｏ" is
    "Aiko"), spaces collapsed, at most `MAX_NAME_CHARS`. Raises `ValueError` saying what to
    change for an empty name, one that is not text, or one holding control, format
    (bidirectional overrides, zero-width) or other invisible characters, with which two
    people's names could look the same. Plain text: the caller escapes it where it renders."""
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise ValueError(f"The name must be text, not a {type(name).__name__}; give the "
                         "person's display name.")
    name = unicodedata.normalize("NFKC", name).strip()
    for ch in name:
        if unicodedata.category(ch) in REFUSED_CATEGORIES or ch in INVISIBLE_LETTERS:
            what = unicodedata.name(ch, "a control character")
            raise ValueError(f"The name contains an invisible or control character (U+"
                             f"{ord(ch):04X} {what}); type the name again on one line, without "
                             "copying it from formatted text.")
    name = " ".join(name.split())
    if not name:
        raise ValueError("Give the person's display name.")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"The name is {len(name)} characters long; use at most "
                         f"{MAX_NAME_CHARS}.")
    return name


def new_id(name: str) -> str:
    """A fresh person id from a display name: its ASCII letters and digits plus a random
    suffix ("Aiko Sato" -> "aiko-sato-3f9a1c"; "佐藤" -> "person-3f9a1c")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'person'}-{uuid.uuid4().hex[:6]}"


def speech_seconds(voice_audio: AudioSource) -> float:
    """Seconds of sound in a recording after trimming silence (for a live display);
    raises `AudioError` for unusable audio."""
    return len(load_audio(voice_audio, max_seconds=None, min_seconds=0.0)) / SAMPLE_RATE


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

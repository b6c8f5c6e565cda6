"""Live enrollment: add consenting people to a running pipeline's gallery, and delete them.

    live = LiveGallery.open(vf, "/data/voiceface")      # the gallery directory (persistent)
    person_id = live.enroll("Aiko", "voice.wav", "face.jpg", consent=True)
    live.status(person_id)                              # "queued" -> "inverting" -> "ready"
    live.delete(person_id)                              # every trace, mapper retrained
    live.refresh()                                      # take other processes' changes

The gallery directory holds `gallery/` (a saved `Enrolled`: people, embeddings,
content-addressed face photos, latents, threshold records) and `mapper/`. On the first start
it is a copy of the bundle's; later starts load it, if it was made for the same encoder and
generator.

An enrolled person is searchable by voice at once. Their face latent is computed by one
background worker (`Inverter` on the aligned photo kept for display); once at least
`min_people` people have latents, the mapper is retrained on everyone's (embedding, voice
traits, latent) and swapped into the pipeline. Nothing of the recording is kept, only the
voice embedding and two numbers of its traits measured on the whole recording
(`extra["voice_traits"]`: pitch in Hz and apparent-sex score), deleted with the person; people
enrolled before traits were kept count as the population's mean traits.

Every change is a read-modify-write of the saved gallery under the directory's file lock
(so other processes on the same directory, e.g. an overlapping restart or a second replica,
lose no update): load, change, save (atomic), then swap a freshly loaded gallery and mapper
into the pipeline as one `GalleryState`, so requests running meanwhile finish on the version
they started with. A process takes another's changes at its own next change, or `refresh`.

The mapper records whom it was trained on. Deleting someone it holds drops it (from the
pipeline, then from the disk) before the gallery without them is committed, then retrains it:
a crash at any step leaves either the person in the gallery or a mapper that never saw them.
A gallery directory left without a mapper gets one again when it is next opened.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import faces, storage
from . import verification
from .audio import SAMPLE_RATE, AudioError, AudioSource, load_audio
from .calibration import recalibrate_open_set
from .enrolled import Enrolled
from .gallery import Gallery, GalleryError
from .gallery_files import FACES_DIR, MANIFEST, data_name, remove_leftovers
from .invert import InversionConfig, Inverter
from .mapper import CONFIG_FILE as MAPPER_CONFIG
from .mapper import WEIGHTS_FILE as MAPPER_WEIGHTS
from .mapper import SMALL_MAPPER, VoiceToLatent, train_mapper
from .names import check_distinct, clean_name
from .bundle import GALLERY_DIR, MAPPER_DIR
from .derived import GalleryState, load_derived
from .pipeline import VoiceFace
from .trait_inputs import TRAITS_KEY, person_traits, record_features, trait_features
from .traits import measure
from .voice import pool

MIN_ENROLL_SECONDS = 5.0  # s of speech; fewer give an unreliable voice embedding
MAX_ENROLL_SECONDS = 120.0  # s of speech; 20-90 s is plenty
MIN_MAPPER_PEOPLE = 4  # people with latents needed to (re)train the mapper
INCOMING = "incoming"  # photos between alignment and the gallery's save
READY = "ready"
log = logging.getLogger(__name__)


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
        self._lock = threading.Lock()
        self._loaded: tuple | None = None  # `_version()` of what the pipeline serves
        self._status: dict[str, str] = {}
        self._jobs: queue.Queue[str | None] = queue.Queue()  # None stops the worker
        self._inverter: Inverter | None = None
        self._worker: threading.Thread | None = None

    @classmethod
    def open(cls, vf: VoiceFace, directory: str | Path, *, bundle: GalleryState | None = None,
             **kwargs) -> LiveGallery:
        """Use `directory` as `vf`'s gallery: load the one saved there, or copy the bundle's
        (`bundle`, default what `vf` serves: a pipeline prepared without serving gives it
        here, so nobody is answered from it first) there first. Raises `GalleryError` when the saved one was made for other models.
        Live-enrolled people still missing a latent are queued again; photos, gallery data
        and mapper directories a crash left behind are deleted, and a missing mapper is
        retrained."""
        live = cls(vf, directory, **kwargs)
        gallery_dir = live.root / GALLERY_DIR
        with live._exclusive():
            shutil.rmtree(live.root / INCOMING, ignore_errors=True)  # left by a crash
            storage.restore_aside(live.root / MAPPER_DIR)  # a swap killed where it cannot exchange
            for leftover in live.root.glob(f".{MAPPER_DIR}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            if not (gallery_dir / MANIFEST).is_file():
                start = vf.state if bundle is None else bundle
                start.enrolled.save(gallery_dir)
                if start.mapper is not None:
                    _install_mapper(live.root, start.mapper)
            try:
                live._reload()
            except GalleryError as err:
                raise GalleryError(f"{err} The gallery directory {live.root} holds people "
                                   "enrolled with other models: start with those models, or "
                                   "choose another gallery directory.") from None
            remove_leftovers(gallery_dir)  # a killed save's older data may hold the deleted
            if vf.mapper is None and len(vf.state.latents) >= max(2, live.min_people):
                live._retrain()  # dropped by an unfinished delete, or not saying whom it knew
        state = vf.state
        for person in state.gallery.people:
            if state.latents.get(person.id) is not None:
                live._status[person.id] = READY
            elif person.extra.get("live_enrolled") and person.faces:
                live._queue(person.id)
        return live

    @property
    def mapper_people(self) -> list[str] | None:
        """Whom the pipeline's mapper was trained on (None without a mapper)."""
        mapper = self.vf.mapper
        return None if mapper is None else list(mapper.config.people or ())

    @property
    def photo_dir(self) -> Path:
        """Where the gallery's face photos live (to serve them)."""
        return self.root / GALLERY_DIR / FACES_DIR

    # -- enroll -----------------------------------------------------------------------------
    def enroll(self, name: str, voice_audio: AudioSource, face_photo: faces.ImageSource,
               consent: bool) -> str:
        """Validate, embed and add a person; return their id. Searchable by voice at once;
        the face latent follows in the background (`status`). Raises `ValueError` (nothing
        saved) without consent, or for an unusable recording or photo, or a name that is
        unusable or looks like an enrolled person's (`voiceface.names`)."""
        require_consent(consent)
        name = clean_name(name)
        check_distinct(name, _names(self.vf.gallery))  # before the work; again when adding
        wav = load_audio(voice_audio, max_seconds=MAX_ENROLL_SECONDS,
                         min_seconds=MIN_ENROLL_SECONDS)
        aligned = faces.align(face_photo, faces.DISPLAY_SIZE, name="the face photo").image
        embedding = pool(self.vf.encoder.embed_windows(wav))
        traits = _recording_traits(wav)
        del wav  # nothing of the recording is kept
        person_id = new_id(name)
        buffer = io.BytesIO()
        aligned.save(buffer, "JPEG", quality=faces.DISPLAY_QUALITY)
        with self._exclusive():  # (another process's `open` deletes incoming photos)
            incoming = self.root / INCOMING
            incoming.mkdir(parents=True, exist_ok=True)
            photo = storage.write_bytes(incoming / f"{uuid.uuid4().hex}.jpg", buffer.getvalue())
            try:
                enrolled = self._load()
                gallery = enrolled.gallery
                check_distinct(name, _names(gallery))  # another process may have added them
                gallery.add(person_id, embedding, name=name, faces=[photo], consent=True,
                            n_clips=1, extra={"live_enrolled": True, "enrolled_at": _now(),
                                              **({TRAITS_KEY: traits} if traits else {})})
                self._commit(enrolled)
                self._queue(person_id)
            finally:
                photo.unlink(missing_ok=True)  # the gallery keeps its own copy
        return person_id

    def status(self, person_id: str) -> str:
        """"queued", "inverting", "ready" or "failed: reason" for the person's face latent."""
        return self._status.get(person_id, "no latent")

    def refresh(self) -> bool:
        """Swap in what other processes on the directory (a replica, an overlapping restart)
        saved since this one last loaded; True if there was anything. Cheap when there was
        not (a manifest read and a stat), so it can run before every request."""
        if self._version() == self._loaded:
            return False
        with self._exclusive():
            if self._version() == self._loaded:
                return False
            self._reload()
            return True

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
        (the save removes photos no one references; no recording was kept). A mapper that
        may hold them is dropped before the gallery without them is saved, then retrained
        without them (or left out when fewer than `min_people` latents remain)."""
        with self._exclusive():
            enrolled = self._load()  # as saved: another process may have changed it
            if person_id not in enrolled.gallery:
                raise GalleryError(f"No person with id {person_id!r} in the gallery.")
            enrolled.gallery.remove(person_id)
            enrolled.latents.drop(person_id)
            saved = self.root / MAPPER_DIR / MAPPER_CONFIG
            dropped = saved.is_file() and _may_hold(json.loads(saved.read_text()).get("people"),
                                                    person_id)
            if self.vf.mapper is not None and _may_hold(self.vf.mapper.config.people,
                                                        person_id):
                self.vf.swap(GalleryState(self.vf.state.enrolled, None))
            if dropped:
                _drop_mapper(self.root)
            self._commit(enrolled)
            self._status.pop(person_id, None)
            if dropped:
                self._retrain()

    # -- internals --------------------------------------------------------------------------
    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the gallery directory for a read-modify-write: the thread lock against this
        process's other threads and the directory's file lock against other processes. It does
        not nest (a second `flock` on the same file from this process would wait forever):
        what runs inside calls `_commit`, `_reload` and `_retrain`, never `_exclusive`."""
        with self._lock, storage.locked(self.root):
            yield

    def _load(self) -> Enrolled:
        """The saved gallery, as any process left it (the caller holds `_exclusive`)."""
        return Enrolled.load(self.root / GALLERY_DIR)

    def _commit(self, enrolled: Enrolled, people_changed: bool = True) -> None:
        """Save `enrolled`, then swap the saved gallery and mapper into the pipeline as one
        state (the caller holds `_exclusive`). When people were added or removed, the threshold
        follows them first (see `recalibrate_open_set`; it scores everyone against everyone),
        and so does the verification threshold
        (`voiceface.verification.recalibrate_verification`)."""
        if people_changed:
            recalibrate_open_set(enrolled.calibrations)
            verification.recalibrate_verification(enrolled.calibrations)
        enrolled.save(self.root / GALLERY_DIR)
        self._reload()

    def _reload(self) -> None:
        """Swap the saved gallery and mapper into the pipeline as one state (the caller holds
        `_exclusive`)."""
        self._loaded = self._version()
        self.vf.swap(load_derived(self.root, self.vf.encoder.fingerprint,
                                  self.vf.generator_fingerprint))

    def _version(self) -> tuple:
        """What identifies the saved gallery and mapper: every save names a new data
        directory, every mapper is a new file."""
        data = data_name(self.root / GALLERY_DIR)
        try:
            weights = os.stat(self.root / MAPPER_DIR / MAPPER_WEIGHTS)
            mapper = (weights.st_ino, weights.st_mtime_ns)
        except FileNotFoundError:
            mapper = None
        return data, mapper

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
                log.error("the face latent of %s failed: %s", person_id, err)  # for the admin
                if person_id in self._status:
                    self._status[person_id] = f"failed: {err}"
            finally:
                self._jobs.task_done()

    def _invert(self, person_id: str) -> None:
        gallery = self.vf.gallery
        if person_id not in gallery:  # deleted while queued
            self._status.pop(person_id, None)
            return
        self._status[person_id] = "inverting"
        photo = faces.load_image(gallery.person(person_id).faces[0])
        if self._inverter is None:
            self._inverter = Inverter.from_pretrained(self.inversion)
        w = self._inverter.invert(self.vf.generator, photo, seed=self.seed).w
        with self._exclusive():
            enrolled = self._load()
            if person_id not in enrolled.gallery:  # deleted while inverting
                self._status.pop(person_id, None)
                return
            enrolled.latents.set(person_id, w)
            self._commit(enrolled, people_changed=False)  # a latent: the voices are the same
            self._status[person_id] = READY
            if len(self.vf.state.latents) >= self.min_people:
                self._retrain()  # else the current mapper stays (it never saw this person)

    def _retrain(self) -> None:
        """Retrain the mapper on every person with a latent, or drop it when fewer than
        `min_people` have one (the caller holds `_exclusive`, and has just committed)."""
        state = self.vf.state
        gallery = state.gallery
        ids, latents = state.latents.rows()
        mapper = None
        if len(ids) < max(2, self.min_people):
            _drop_mapper(self.root)
        else:
            embeddings = np.stack([gallery.embedding(i) for i in ids])
            traits = np.stack([record_features(gallery.person(i).extra.get(TRAITS_KEY))
                               for i in ids])  # NaN (the mean) for people without a record
            mapper, _ = train_mapper(embeddings, latents, ids, state.latents.centre,
                                     traits=None if np.isnan(traits).all() else traits,
                                     **SMALL_MAPPER,
                                     encoder_fingerprint=self.vf.encoder.fingerprint,
                                     generator_fingerprint=self.vf.generator_fingerprint,
                                     seed=self.seed, progress=False)
            _install_mapper(self.root, mapper)
        self._loaded = self._version()
        self.vf.swap(GalleryState(state.enrolled, mapper))


def _recording_traits(wav: np.ndarray) -> dict | None:
    """The two numbers a live-enrolled person keeps of their voice's traits (`person_traits`),
    measured once on the whole recording (a quarter of the time of measuring every encoder
    window: 1.1 s against 4.5 s for 60 s of speech); None without voiced speech."""
    try:
        return person_traits(trait_features(measure(wav))[None])
    except AudioError:
        return None


def _names(gallery: Gallery) -> Iterator[tuple[str, str]]:
    """The gallery's people as (id, name)."""
    return ((p.id, p.name) for p in gallery.people)


def _may_hold(people: Sequence[str] | None, person_id: str) -> bool:
    """Whether a mapper trained on `people` (None or empty: it does not say whom; a mapper
    learns from 2 people at least) may hold the person."""
    return not people or person_id in people


def _drop_mapper(root: Path) -> None:
    """Remove the mapper saved in `root`: renamed away first (atomic: no process loads it
    after that), then deleted (a crash meanwhile leaves a hidden directory `open` deletes)."""
    mapper_dir = root / MAPPER_DIR
    if not mapper_dir.exists():
        return
    stale = root / f".{MAPPER_DIR}-{uuid.uuid4().hex[:8]}.old"
    os.rename(mapper_dir, stale)
    storage.fsync_path(root)
    shutil.rmtree(stale)


def _install_mapper(root: Path, mapper: VoiceToLatent) -> None:
    """Save `mapper` as the one in `root`, whole: written beside it, then swapped in for the
    previous one (`storage.replace_dir`: a crash leaves the old mapper or the new one)."""
    tmp = root / f".{MAPPER_DIR}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        mapper.save_pretrained(tmp)
        storage.fsync_path(tmp)
        storage.replace_dir(tmp, root / MAPPER_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def require_consent(consent: object) -> None:
    """Raise `ValueError` unless `consent` is exactly `True` (a ticked box), so that no
    string ("false", "0"), number or list passed through an API counts as consent."""
    if consent is True:
        return
    given = "" if consent is False or consent is None else (
        f" Consent must be the boolean true, not a {type(consent).__name__}.")
    raise ValueError("Consent is required: the person must agree to their voice and face being "
                     f"stored and searched. Tick the consent box.{given}")


def new_id(name: str) -> str:
    """A fresh person id from a display name: its ASCII letters and digits plus a random
    suffix ("Aiko Sato" -> "aiko-sato-3f9a1c"; "佐藤" -> "person-3f9a1c")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'person'}-{uuid.uuid4().hex[:6]}"


def speech_seconds(voice_audio: AudioSource) -> float:
    """Seconds of sound in a recording after trimming silence (for a live display);
    raises `AudioError` for unusable audio, or audio too long to enroll (so it is refused
    from its header, like `enroll` would, instead of decoded)."""
    return len(load_audio(voice_audio, max_seconds=MAX_ENROLL_SECONDS,
                          min_seconds=0.0)) / SAMPLE_RATE


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

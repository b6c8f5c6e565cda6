"""The enrolled people: a FAISS inner-product index over their voice embeddings, plus metadata.

Embeddings are L2-normalised, so inner product = cosine similarity. Small galleries are
searched exactly; large ones through an approximate index whose candidates are re-scored
exactly (`voiceface.ann`; `Gallery(..., index="auto"|"flat"|"hnsw"|"ivfpq")`). A gallery is
saved as a directory (`voiceface.gallery_files`: its format, written atomically, read back
without unpickling anything); the FAISS index is rebuilt from the embeddings (at the first
search, or `prepare_index`), never read from a file.

The gallery's population centre (`Gallery.centre`, see `population_centre`) is derived from
its latents, so no enrollment or deletion can leave it stale; `centre.npy` records it for
provenance and for tools outside voiceface (loading derives it again, so a gallery without
`centre.npy` loads the same way).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from . import ann, gallery_files
from .ann import IndexSpec
from .gallery_files import GalleryError
from .population import population_centre
from .thresholds import Calibration, VerificationCalibration

DEFAULT_THRESHOLD = 0.70  # cosine; an unmeasured placeholder until a gallery is calibrated
NORM_TOLERANCE = 1e-3  # an embedding's norm may differ from 1 by this much
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # safe as a file name


@dataclass
class Person:
    """One enrolled person. `faces` are image paths (absolute in memory, relative on disk)."""

    id: str
    name: str
    faces: list[Path] = field(default_factory=list)
    consent: bool = False
    n_clips: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """One search hit: the person, the cosine similarity and the rank (1 = best)."""

    id: str
    name: str
    score: float
    rank: int
    face: Path | None

    def summary(self) -> dict:
        """For programs (the JSON of the CLI and the app): id, name, score to 6 digits."""
        return {"id": self.id, "name": self.name, "score": round(self.score, 6)}


class Gallery:
    """Enrolled people, searchable by voice: `gallery.search(embedding, k)`."""

    def __init__(self, dim: int, encoder_fingerprint: str, *,
                 threshold: float = DEFAULT_THRESHOLD, generator_fingerprint: str | None = None,
                 latent_dim: int | None = None, index: str | IndexSpec = "auto"):
        """`index`: "auto" (exact search up to `ann.FLAT_MAX` people, IVF-PQ above), "flat",
        "hnsw", "ivfpq", or an `ann.IndexSpec` with tuned settings; saved with the gallery."""
        if dim <= 0:
            raise GalleryError(f"Embedding size must be positive, got {dim}.")
        self.dim = dim
        self.encoder_fingerprint = encoder_fingerprint
        self.generator_fingerprint = generator_fingerprint
        self.latent_dim = latent_dim
        self.threshold = float(threshold)
        self._calibration: Calibration | None = None
        # the 1:1 threshold's record, set by `voiceface.verification`; None when unmeasured or stale
        self.verification: VerificationCalibration | None = None
        self._people: list[Person] = []
        self._rows: dict[str, int] = {}
        self._embeddings = np.zeros((0, dim), np.float32)
        self._latents: dict[str, np.ndarray] = {}
        self._centre: np.ndarray | None = None  # cache of `centre`; None: not computed
        self._index: faiss.Index | None = None
        self.index_spec = ann.as_spec(index)

    # -- contents ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._people)

    def __contains__(self, person_id: str) -> bool:
        return person_id in self._rows

    @property
    def people(self) -> list[Person]:
        """The enrolled people, in enrollment order."""
        return list(self._people)

    def embeddings(self) -> np.ndarray:
        """A copy of the embeddings [N, D] float32, row i belongs to `people[i]`."""
        return self._embeddings.copy()

    def person(self, person_id: str) -> Person:
        return self._people[self._row(person_id)]

    def embedding(self, person_id: str) -> np.ndarray:
        return self._embeddings[self._row(person_id)].copy()

    def latent(self, person_id: str) -> np.ndarray | None:
        """The person's StyleGAN2 latent w [latent_dim], if one was computed."""
        self._row(person_id)
        w = self._latents.get(person_id)
        return None if w is None else w.copy()

    def latents(self) -> tuple[list[str], np.ndarray]:
        """Ids of the people with a latent and their latents [M, latent_dim]."""
        ids = [p.id for p in self._people if p.id in self._latents]
        dim = self.latent_dim or 0
        return ids, (np.stack([self._latents[i] for i in ids]) if ids
                     else np.zeros((0, dim), np.float32))

    @property
    def centre(self) -> np.ndarray | None:
        """The population centre [latent_dim] of the people's latents (`population_centre`),
        None when nobody has one. Cached; every change of a latent or of who is enrolled
        clears the cache."""
        if self._centre is None and self._latents:
            self._centre = population_centre(self.latents()[1])
        return None if self._centre is None else self._centre.copy()

    @property
    def index_kind(self) -> str:
        """The index searched at the current size: "flat", "hnsw" or "ivfpq"."""
        return self.index_spec.resolve(len(self))

    def reindex(self, index: str | IndexSpec = "auto") -> None:
        """Use other index settings; the index is rebuilt at the next search or save."""
        self.index_spec = ann.as_spec(index)
        self._index = None

    # -- changes ----------------------------------------------------------------------------
    def add(self, person_id: str, embedding: np.ndarray, *, name: str | None = None,
            faces: Sequence[str | os.PathLike] = (), consent: bool = False, n_clips: int = 1,
            latent: np.ndarray | None = None, extra: dict | None = None) -> Person:
        """Enroll a person with their voice embedding [D] (unit length)."""
        if not isinstance(person_id, str) or not ID_PATTERN.match(person_id):
            raise GalleryError(f"Person id {person_id!r} is not valid: use 1-64 letters, digits, "
                               "'_', '-' or '.', starting with a letter or digit.")
        if person_id in self._rows:
            raise GalleryError(f"Person id {person_id!r} is already enrolled; choose another id "
                               "or use update().")
        vector = self._check_embedding(embedding)
        person = Person(person_id, name or person_id, [Path(f) for f in faces], bool(consent),
                        int(n_clips), dict(extra or {}))
        if latent is not None:
            self._latents[person_id] = self._check_latent(latent)
            self._centre = None
        self._rows[person_id] = len(self._people)
        self._people.append(person)
        self.verification = None  # measured on other people: recalibrate
        self._embeddings = np.vstack([self._embeddings, vector[None]])
        if self._index is not None and ann.kind_of(self._index) == self.index_kind:
            self._index.add(vector[None])  # grow in place: no rebuild of a large index
        else:
            self._index = None
        return person

    def update(self, person_id: str, *, embedding: np.ndarray | None = None,
               name: str | None = None, faces: Sequence[str | os.PathLike] | None = None,
               consent: bool | None = None, n_clips: int | None = None,
               latent: np.ndarray | None = None, extra: dict | None = None) -> Person:
        """Change some of a person's fields; the others stay."""
        row = self._row(person_id)
        person = self._people[row]
        if embedding is not None:
            self._embeddings[row] = self._check_embedding(embedding)
            self._index = None
            self.verification = None
        if latent is not None:
            self._latents[person_id] = self._check_latent(latent)
            self._centre = None
        if name is not None:
            person.name = name
        if faces is not None:
            person.faces = [Path(f) for f in faces]
        if consent is not None:
            person.consent = bool(consent)
        if n_clips is not None:
            person.n_clips = int(n_clips)
        if extra is not None:
            person.extra = dict(extra)
        return person

    def remove(self, person_id: str) -> Person:
        """Remove a person: embedding, metadata and latent. Returns what was removed."""
        row = self._row(person_id)
        person = self._people.pop(row)
        self._embeddings = np.delete(self._embeddings, row, axis=0)
        self._latents.pop(person_id, None)
        self._centre = None
        self._rows = {p.id: i for i, p in enumerate(self._people)}
        self._index = None
        self.verification = None
        return person

    # -- search -----------------------------------------------------------------------------
    def search(self, embedding: np.ndarray, k: int = 5) -> list[Match]:
        """The k most similar people to a voice embedding [D], best first."""
        if not self._people:
            raise GalleryError("The gallery is empty: enroll people first "
                               "(`python -m voiceface build PEOPLE_DIR`).")
        if k < 1:
            raise GalleryError(f"k must be at least 1, got {k}.")
        query = self._check_embedding(embedding)[None]
        scores, rows = ann.search(self._built_index(), self._embeddings, query,
                                  min(k, len(self._people)), self.index_spec)
        matches = []
        for rank, (score, row) in enumerate(zip(scores[0], rows[0][rows[0] >= 0]), start=1):
            person = self._people[int(row)]
            face = person.faces[0] if person.faces else None
            matches.append(Match(person.id, person.name, float(score), rank, face))
        return matches

    def confident(self, matches: Sequence[Match]) -> bool:
        """True when the best match reaches the threshold (open-set decision)."""
        return bool(matches) and matches[0].score >= self.threshold

    @property
    def calibration(self) -> Calibration | None:
        """How the threshold was measured (`voiceface.calibration`); None when it was not:
        the default, or set by hand since."""
        c = self._calibration
        return c if c is not None and c.threshold == self.threshold else None

    def calibrate(self, calibration: Calibration | None) -> None:
        """Use a measured threshold, recording how it was measured; None forgets the record
        (the threshold stays)."""
        self._calibration = calibration
        if calibration is not None:
            self.threshold = calibration.threshold

    def prepare_index(self) -> None:
        """Build the search index now, so that the first search does not wait for it."""
        self._built_index()

    def _built_index(self) -> faiss.Index:
        if self._index is None:
            self._index = ann.build(self._embeddings, self.index_spec)
        return self._index

    # -- persistence (the directory's format: `voiceface.gallery_files`) --------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the gallery to `directory` atomically (see `voiceface.gallery_files`)."""
        ids, latents = self.latents()
        return gallery_files.write(
            Path(directory), [asdict(person) for person in self._people],
            {"embeddings.npy": self._embeddings, "latents.npy": latents},
            ids, self.centre if ids else None, {
                "count": len(self), "dim": self.dim,
                "encoder_fingerprint": self.encoder_fingerprint,
                "generator_fingerprint": self.generator_fingerprint,
                "latent_dim": self.latent_dim, "threshold": self.threshold,
                "calibration": self.calibration and self.calibration.to_dict(),
                "verification": self.verification and self.verification.to_dict(),
                "index": self.index_spec.to_dict()})

    @classmethod
    def load(cls, directory: str | os.PathLike, *, encoder_fingerprint: str | None = None,
             generator_fingerprint: str | None = None,
             index: str | IndexSpec | None = None) -> "Gallery":
        """Read a saved gallery. With fingerprints given, refuse one built for other models.
        `index` overrides the saved index settings. The index is built from the embeddings
        at the first search (see the module docstring)."""
        root = Path(directory)
        saved = gallery_files.read(root)
        manifest = saved.manifest
        for what, wanted in (("encoder", encoder_fingerprint),
                             ("generator", generator_fingerprint)):
            stored = manifest.get(f"{what}_fingerprint")
            if wanted is not None and stored is not None and stored != wanted:
                raise GalleryError(
                    f"The gallery at {root} was built with {what} {stored!r}, but the "
                    f"configured {what} is {wanted!r}; their spaces do not mix. Rebuild the "
                    f"gallery with this {what} (`python -m voiceface build`) or configure the "
                    f"{what} it was built with.")
        gallery = cls(manifest["dim"], manifest["encoder_fingerprint"],
                      threshold=manifest["threshold"],
                      generator_fingerprint=manifest.get("generator_fingerprint"),
                      latent_dim=manifest.get("latent_dim"),
                      index=manifest.get("index") if index is None else index)
        if manifest.get("calibration"):  # optional: format-1 manifests may lack it
            gallery.calibrate(Calibration.from_dict(manifest["calibration"]))
            gallery.threshold = float(manifest["threshold"])  # a hand-set one stays uncalibrated
        if manifest.get("verification"):  # optional: format-1 manifests may lack it
            gallery.verification = VerificationCalibration.from_dict(manifest["verification"])
        embeddings, people = saved.arrays["embeddings.npy"], saved.people
        latents, latent_ids = saved.arrays["latents.npy"], saved.latent_ids
        if len(people) != len(embeddings) or len(latent_ids) != len(latents):
            raise GalleryError(f"The gallery at {root} is inconsistent ({len(people)} people, "
                               f"{len(embeddings)} embeddings); rebuild it.")
        # One vectorised pass instead of add() per person (add copies the matrix each time).
        norms = np.linalg.norm(embeddings, axis=1) if len(embeddings) else np.ones(0)
        if embeddings.shape[1:] != (gallery.dim,) or \
                np.any(~np.isfinite(norms) | (np.abs(norms - 1.0) > NORM_TOLERANCE)):
            raise GalleryError(f"The embeddings at {root} are not {gallery.dim}-d unit vectors; "
                               "rebuild the gallery.")
        gallery._people = [Person(r["id"], r["name"], [root / f for f in r["faces"]],
                                  r["consent"], r["n_clips"], dict(r.get("extra") or {}))
                           for r in people]
        gallery._rows = {p.id: i for i, p in enumerate(gallery._people)}
        if len(gallery._rows) != len(people) or not all(ID_PATTERN.match(i) for i in gallery._rows):
            raise GalleryError(f"The gallery at {root} has duplicate or invalid ids; rebuild it.")
        gallery._embeddings = embeddings.astype(np.float32)
        gallery._latents = {i: gallery._check_latent(w) for i, w in zip(latent_ids, latents)}
        return gallery

    # -- checks -----------------------------------------------------------------------------
    def _row(self, person_id: str) -> int:
        try:
            return self._rows[person_id]
        except KeyError:
            raise GalleryError(f"No person with id {person_id!r} in the gallery.") from None

    def _check_embedding(self, embedding: np.ndarray) -> np.ndarray:
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise GalleryError(f"Embedding has shape {vector.shape}; this gallery holds "
                               f"{self.dim}-d embeddings. Was it made with another encoder?")
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or abs(norm - 1.0) > NORM_TOLERANCE:
            raise GalleryError(f"Embedding has norm {norm:.4f}; expected an L2-normalised "
                               "vector from VoiceEncoder.embed.")
        return vector

    def _check_latent(self, latent: np.ndarray) -> np.ndarray:
        w = np.asarray(latent, dtype=np.float32)
        if w.ndim != 1 or (self.latent_dim is not None and w.shape[0] != self.latent_dim):
            raise GalleryError(f"Latent has shape {w.shape}; expected [{self.latent_dim}] "
                               "(one StyleGAN2 w).")
        if not np.all(np.isfinite(w)):
            raise GalleryError("Latent contains NaN or infinity.")
        self.latent_dim = w.shape[0]
        return w

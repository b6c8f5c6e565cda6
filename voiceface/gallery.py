"""The enrolled people, searchable by voice: a FAISS inner-product index over their voice
embeddings, plus who they are, and the open-set threshold that decides a confident match.

Embeddings are L2-normalised, so inner product = cosine similarity. Small galleries are
searched exactly; large ones through an approximate index whose candidates are re-scored
exactly (`voiceface.ann`; `Gallery(..., index="auto"|"flat"|"hnsw"|"ivfpq")`). The FAISS
index is rebuilt from the embeddings (at the first search, or `prepare_index`), never read
from a file.

Search and people only. What else a gallery directory holds lives beside the gallery, each
with its own idea: the people's StyleGAN2 latents and their population centre
(`voiceface.latents.Latents`), the records of how the thresholds were measured
(`voiceface.thresholds.Calibrations`), and the three saved and loaded as one
(`voiceface.enrolled.Enrolled`, in the format of `voiceface.gallery_files`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from . import ann
from .ann import IndexSpec
from .gallery_files import GalleryError

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
                 threshold: float = DEFAULT_THRESHOLD, index: str | IndexSpec = "auto"):
        """`index`: "auto" (exact search up to `ann.FLAT_MAX` people, IVF-PQ above), "flat",
        "hnsw", "ivfpq", or an `ann.IndexSpec` with tuned settings; saved with the gallery."""
        if dim <= 0:
            raise GalleryError(f"Embedding size must be positive, got {dim}.")
        self.dim = dim
        self.encoder_fingerprint = encoder_fingerprint
        self.threshold = float(threshold)
        # counts changes of who is searched (what a verification calibration measured)
        self.revision = 0
        self._people: list[Person] = []
        self._rows: dict[str, int] = {}
        self._embeddings = np.zeros((0, dim), np.float32)
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
            extra: dict | None = None) -> Person:
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
        self._rows[person_id] = len(self._people)
        self._people.append(person)
        self.revision += 1
        self._embeddings = np.vstack([self._embeddings, vector[None]])
        if self._index is not None and ann.kind_of(self._index) == self.index_kind:
            self._index.add(vector[None])  # grow in place: no rebuild of a large index
        else:
            self._index = None
        return person

    def update(self, person_id: str, *, embedding: np.ndarray | None = None,
               name: str | None = None, faces: Sequence[str | os.PathLike] | None = None,
               consent: bool | None = None, n_clips: int | None = None,
               extra: dict | None = None) -> Person:
        """Change some of a person's fields; the others stay."""
        row = self._row(person_id)
        person = self._people[row]
        if embedding is not None:
            self._embeddings[row] = self._check_embedding(embedding)
            self._index = None
            self.revision += 1
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
        """Remove a person: embedding and metadata. Returns what was removed."""
        row = self._row(person_id)
        person = self._people.pop(row)
        self._embeddings = np.delete(self._embeddings, row, axis=0)
        self._rows = {p.id: i for i, p in enumerate(self._people)}
        self._index = None
        self.revision += 1
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

    def prepare_index(self) -> None:
        """Build the search index now, so that the first search does not wait for it."""
        self._built_index()

    def _built_index(self) -> faiss.Index:
        if self._index is None:
            self._index = ann.build(self._embeddings, self.index_spec)
        return self._index

    # -- from a saved version (`voiceface.enrolled.Enrolled.load` reads it) ------------------
    @classmethod
    def restore(cls, root: Path, manifest: dict, people: list[dict], embeddings: np.ndarray,
                index: str | IndexSpec | None = None) -> Gallery:
        """The gallery saved in `root`, from its manifest, people's records (face paths
        relative to `root`) and embeddings [N, D], checked; `index` overrides the saved index
        settings. The index is built from the embeddings at the first search."""
        gallery = cls(manifest["dim"], manifest["encoder_fingerprint"],
                      threshold=manifest["threshold"],
                      index=manifest.get("index") if index is None else index)
        if len(people) != len(embeddings):
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

"""The people's StyleGAN2 latents: a table person id -> w [latent_dim] beside a gallery, with
their population centre.

A person's latent is their face in the generator's W space (a seed's or an inverted photo's);
the mapper is trained on them and generated faces are predicted from and truncated toward
their centre. The table belongs to one `voiceface.gallery.Gallery` and follows its people:
it lists them in the gallery's order and answers only for people enrolled there; a latent
belongs to the person enrolled when it was set, so someone removed and enrolled again under
the same id has none until one is set again. The
population centre (`Latents.centre`, see `voiceface.population.population_centre`) is
derived from the latents, so no enrollment or deletion can leave it stale; a saved gallery's
`centre.npy` records it for provenance and for tools outside voiceface (loading derives it
again, so a gallery without `centre.npy` loads the same way). Saved and loaded with the
gallery by `voiceface.enrolled.Enrolled`.
"""

from __future__ import annotations

import numpy as np

from .gallery import Gallery, Person
from .gallery_files import GalleryError
from .population import population_centre


class Latents:
    """The latents of `gallery`'s people made with the generator of `generator_fingerprint`:
    `latents.get(person_id)`, `latents.set(person_id, w)`, `latents.centre`."""

    def __init__(self, gallery: Gallery, *, dim: int | None = None,
                 generator_fingerprint: str | None = None):
        """`dim`: the latent size; None takes that of the first latent set."""
        self.gallery = gallery
        self.dim = dim
        self.generator_fingerprint = generator_fingerprint
        self._latents: dict[str, tuple[Person, np.ndarray]] = {}  # id -> (whose, w)
        # the centre and the gallery's revision it was computed at; None: not computed
        self._centre: tuple[int, np.ndarray | None] | None = None

    def __len__(self) -> int:
        """How many of the gallery's people have a latent."""
        return len(self.ids())

    def ids(self) -> list[str]:
        """The gallery's people with a latent, in the gallery's order."""
        return [p.id for p in self.gallery.people if self._of(p) is not None]

    def get(self, person_id: str) -> np.ndarray | None:
        """The person's latent w [dim], None if none was computed; GalleryError for someone
        not in the gallery."""
        w = self._of(self.gallery.person(person_id))
        return None if w is None else w.copy()

    def set(self, person_id: str, latent: np.ndarray) -> None:
        """Record the latent w [dim] of a person of the gallery."""
        self._latents[person_id] = (self.gallery.person(person_id), self._check(latent))
        self._centre = None

    def drop(self, person_id: str) -> None:
        """Forget a person's latent (when they leave the gallery); nothing if they had none."""
        self._latents.pop(person_id, None)
        self._centre = None

    def rows(self) -> tuple[list[str], np.ndarray]:
        """Ids of the people with a latent (`ids`) and their latents [M, dim]."""
        ids = self.ids()
        return ids, (np.stack([self._latents[i][1] for i in ids]) if ids
                     else np.zeros((0, self.dim or 0), np.float32))

    @property
    def centre(self) -> np.ndarray | None:
        """The population centre [dim] of the people's latents, None when nobody has one.
        Cached; a change of a latent or of who is enrolled clears the cache."""
        if self._centre is None or self._centre[0] != self.gallery.revision:
            ids, latents = self.rows()
            self._centre = (self.gallery.revision, population_centre(latents) if ids else None)
        centre = self._centre[1]
        return None if centre is None else centre.copy()

    def _of(self, person: Person) -> np.ndarray | None:
        """The latent set for this enrollment of `person`, if any."""
        entry = self._latents.get(person.id)
        return entry[1] if entry is not None and entry[0] is person else None

    def _check(self, latent: np.ndarray) -> np.ndarray:
        w = np.asarray(latent, dtype=np.float32)
        if w.ndim != 1 or (self.dim is not None and w.shape[0] != self.dim):
            raise GalleryError(f"Latent has shape {w.shape}; expected [{self.dim}] "
                               "(one StyleGAN2 w).")
        if not np.all(np.isfinite(w)):
            raise GalleryError("Latent contains NaN or infinity.")
        self.dim = w.shape[0]
        return w

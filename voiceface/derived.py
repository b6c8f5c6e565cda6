"""A bundle's derived artifacts read back as one version that requests read: the gallery with
its people's latents and threshold records (`voiceface.enrolled.Enrolled`) and the mapper
trained on its people (`GalleryState`, from `load_derived`). Below both the loading layer
(`voiceface.loading`, which builds or finds the artifacts) and the persona caches' builder
(`voiceface.persona_cache`, which reads installed caches back to check them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from .bundle import GALLERY_DIR, MAPPER_DIR
from .enrolled import Enrolled
from .gallery import Gallery
from .latents import Latents
from .mapper import VoiceToLatent


@dataclass(frozen=True)
class GalleryState:
    """One consistent version of what requests read: the gallery (with its threshold), its
    people's latents and its thresholds' records (`enrolled`), and the mapper trained on its
    people (None: blend the matches' latents instead)."""

    enrolled: Enrolled
    mapper: VoiceToLatent | None = None

    @property
    def gallery(self) -> Gallery:
        """The people and their search (`Enrolled.gallery`)."""
        return self.enrolled.gallery

    @property
    def latents(self) -> Latents:
        """The people's latents and their population centre (`Enrolled.latents`)."""
        return self.enrolled.latents


def load_derived(directory: Path, encoder_fingerprint: str, generator_fingerprint: str
                 ) -> GalleryState:
    """The gallery in `directory/GALLERY_DIR` (its index built) and the mapper in
    `directory/MAPPER_DIR`, each refused when made with models of other fingerprints.

    The mapper is left out (None: faces blend the nearest people's latents; a warning says
    so) when it may hold someone the gallery no longer does: its recorded training ids name
    someone not in the gallery, or it records none (rebuild it). A live gallery retrains it
    when opened (`voiceface.enroll.LiveGallery`).
    """
    fingerprints = {"encoder_fingerprint": encoder_fingerprint,
                    "generator_fingerprint": generator_fingerprint}
    enrolled = Enrolled.load(directory / GALLERY_DIR, **fingerprints)
    gallery = enrolled.gallery
    gallery.prepare_index()
    mapper_dir = directory / MAPPER_DIR
    mapper = VoiceToLatent.from_pretrained(mapper_dir, **fingerprints) if mapper_dir.is_dir() \
        else None
    if mapper is not None:
        trained = mapper.config.people
        gone = [i for i in trained or () if i not in gallery]
        if not trained or gone:  # a mapper learns from 2 people at least: [] says nobody
            why = ("it does not record whom it was trained on (saved by an older voiceface, "
                   "or edited)" if not trained else
                   f"it was trained on {len(gone)} people who are no longer in the gallery")
            warnings.warn(f"Not using the mapper in {mapper_dir}: {why}. Generated faces blend "
                          "the nearest people's latents instead; rebuild the mapper "
                          "(`python -m voiceface build`) to use one again.", stacklevel=2)
            mapper = None
    return GalleryState(enrolled, mapper)

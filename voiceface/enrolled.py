"""What a saved gallery directory holds, kept together: the gallery (search and people,
`voiceface.gallery.Gallery`), its people's latents with their population centre
(`voiceface.latents.Latents`) and the records of how its thresholds were measured
(`voiceface.thresholds.Calibrations`). Each part is its own idea; this module only saves and
loads the three as one version (the files' format: `voiceface.gallery_files`), so a reader
never meets latents or records of another version than the people. Serving reads them
together from `voiceface.derived.GalleryState`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import gallery_files
from .ann import IndexSpec
from .gallery import DEFAULT_THRESHOLD, Gallery
from .gallery_files import GalleryError
from .latents import Latents
from .thresholds import Calibration, Calibrations, VerificationCalibration


@dataclass(frozen=True)
class Enrolled:
    """A gallery with its people's latents and its thresholds' records."""

    gallery: Gallery
    latents: Latents
    calibrations: Calibrations[Gallery]

    @classmethod
    def new(cls, dim: int, encoder_fingerprint: str, *, threshold: float = DEFAULT_THRESHOLD,
            generator_fingerprint: str | None = None, latent_dim: int | None = None,
            index: str | IndexSpec = "auto") -> Enrolled:
        """An empty gallery of `dim`-d voice embeddings, for latents of `latent_dim` made
        with the generator of `generator_fingerprint` (see `Gallery` for `index`)."""
        return cls.of(Gallery(dim, encoder_fingerprint, threshold=threshold, index=index),
                      latent_dim=latent_dim, generator_fingerprint=generator_fingerprint)

    @classmethod
    def of(cls, gallery: Gallery, *, latent_dim: int | None = None,
           generator_fingerprint: str | None = None) -> Enrolled:
        """`gallery` with no latents and no calibration records yet."""
        return cls(gallery, Latents(gallery, dim=latent_dim,
                                    generator_fingerprint=generator_fingerprint),
                   Calibrations(gallery))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the three to `directory` atomically (see `voiceface.gallery_files`)."""
        gallery, latents, records = self.gallery, self.latents, self.calibrations
        ids, matrix = latents.rows()
        return gallery_files.write(
            Path(directory), [asdict(person) for person in gallery.people],
            {"embeddings.npy": gallery.embeddings(), "latents.npy": matrix},
            ids, latents.centre if ids else None, {
                "count": len(gallery), "dim": gallery.dim,
                "encoder_fingerprint": gallery.encoder_fingerprint,
                "generator_fingerprint": latents.generator_fingerprint,
                "latent_dim": latents.dim, "threshold": gallery.threshold,
                "calibration": records.open_set and records.open_set.to_dict(),
                "verification": records.verification and records.verification.to_dict(),
                "index": gallery.index_spec.to_dict()})

    @classmethod
    def load(cls, directory: str | os.PathLike, *, encoder_fingerprint: str | None = None,
             generator_fingerprint: str | None = None,
             index: str | IndexSpec | None = None) -> Enrolled:
        """Read a saved gallery. With fingerprints given, refuse one built for other models.
        `index` overrides the saved index settings."""
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
        gallery = Gallery.restore(root, manifest, saved.people, saved.arrays["embeddings.npy"],
                                  index)
        enrolled = cls.of(gallery, latent_dim=manifest.get("latent_dim"),
                          generator_fingerprint=manifest.get("generator_fingerprint"))
        if manifest.get("calibration"):  # optional: format-1 manifests may lack it
            enrolled.calibrations.calibrate(Calibration.from_dict(manifest["calibration"]))
            gallery.threshold = float(manifest["threshold"])  # a hand-set one stays uncalibrated
        if manifest.get("verification"):  # optional: format-1 manifests may lack it
            enrolled.calibrations.verification = VerificationCalibration.from_dict(
                manifest["verification"])
        latents, latent_ids = saved.arrays["latents.npy"], saved.latent_ids
        if len(latent_ids) != len(latents):
            raise GalleryError(f"The gallery at {root} is inconsistent ({len(latent_ids)} "
                               f"latent ids, {len(latents)} latents); rebuild it.")
        for person_id, w in zip(latent_ids, latents):
            enrolled.latents.set(person_id, w)
        return enrolled

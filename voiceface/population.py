"""The population centre: the mean latent of a gallery's people, which generated faces are
predicted from and truncated toward (`TRUNCATION_CENTRES`: the population's, or the
generator's own w_avg). A generation concept, used by the gallery (its people's centre), the
mapper's training, the personas' renders and the pipeline.
"""

from __future__ import annotations

import numpy as np

# what generated faces are truncated toward: `Latents.centre`, or the generator's w_avg
POPULATION, GENERATOR = "population", "generator"
TRUNCATION_CENTRES = (POPULATION, GENERATOR)  # bundle.json "truncation_centre" values


def population_centre(latents: np.ndarray) -> np.ndarray:
    """The population centre of latents [M, W] (M >= 1): their arithmetic mean [W], float32.

    Generated faces are predicted as offsets from it and truncated toward it, so they stay
    among the people enrolled instead of drifting to the generator's average face. The mean,
    not a coordinate-wise or geometric median: the mapper is fitted by squared error, whose
    best constant prediction is the mean, so the centre is exactly what a mapper that learnt
    nothing about a voice predicts, and the "population mean" baseline of `voiceface.evaluate`
    is the guess to beat. A median would resist an outlying latent, but every latent here is a
    generator's w (a seed's or an inverted photo's), not a measurement that can go wild.
    Accumulated in float64, in row order, so equal inputs give bit-equal centres.
    """
    latents = np.asarray(latents)
    if latents.ndim != 2 or not len(latents):
        raise ValueError(f"Need latents [M, W] with M >= 1; got {latents.shape}.")
    return latents.astype(np.float64).mean(axis=0).astype(np.float32)

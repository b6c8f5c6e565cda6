"""Face to voice: which enrolled people's voices suit a face photo?

    f2v = FaceToVoice.from_pretrained("index/face2voice", "index/", enc_fp, gen_fp)
    result = f2v("photo.jpg", gallery, k=5)    # result.matches, result.method, result.timings

1. Align the photo's one face as `build` does (`voiceface.faces.align`, 1024 px).
2. Describe it with the perceptual backbone (`voiceface.invert.Backbone`, the one `build`
   inverts with): the L2-normalised concatenation of its CLS token and its mean patch token.
3. Predict a voice embedding: the reverse mapper (features -> voice embedding, the
   `voiceface.mapper` MLP trained with the same people-held-out validation), or without one
   the kNN blend (the voices of the people whose faces are most similar, weighted by
   softmax(similarity / T)); renormalised to unit length.
4. Search the gallery's voices with it, as a voice query is searched.
5. With a face-trait model (`voiceface.face_traits`; the pipeline's, when its bundle names
   one), read the aligned face's apparent sex and age band, and look up the apparent sex
   of each suggested voice as the gallery recorded it (`extra["voice_traits"]`).

Why backbone features and not the inverted W latent (or both): the target is an answer in
3 s on 2 CPU cores. A query's latent costs an inversion, minutes on a CPU; the features cost
one backbone pass, about a second (benchmarks/README.md: `python -m benchmarks.invert`,
`python -m benchmarks.face2voice`). The inversion is steered by these same features (its
loss is their distance), so its latent adds the generator's prior, not more of the photo.
Which representation says more about a voice cannot be measured with random weights; `eval`
says, on a real gallery, whether these features do.

The mapper reuses `voiceface.mapper.train_mapper`: mean squared error to the unit voice
embeddings, offsets from their mean (the mean voice: an untrained mapper answers it). With
unit predictions that loss is 2 - 2 cos, a cosine loss. `build` writes `face2voice/` beside
`mapper/`: `face2voice.json` (the backbone, its fingerprint, the encoder and generator
fingerprints, the ids), `features.npy` [N, F] (the people's face features, row i = ids[i]) and,
with 2 or more people, the reverse mapper (`mapper.json` + `mapper.safetensors`).

Evaluation (`evaluate_bundle`, called by `voiceface.evaluate`): K folds over identities; the
mapper never sees the people it is scored on. Each held-out face's predicted voice retrieves
the true voice among all N (R@1/5/10 against chance) and 1:2 matching (nearer its own voice
than another person's?) with a 95 % bootstrap interval over people, next to the mean voice
and the kNN blend; the folds and the retrieval scores are the forward direction's
(`voiceface.metrics.identity_folds`, `voiceface.metrics.retrieval`). The predictions it
scores (`HeldOutVoices`) go on to `voiceface.trait_agreement`: the apparent sex of the voices
they suggest.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import faces, storage
from .gallery import Gallery, Match
from .invert import Backbone, image_tensor
from .mapper import CONFIG_FILE as MAPPER_CONFIG
from .mapper import SMALL_MAPPER, VoiceToLatent, knn_blend, train_mapper
from .metrics import identity_folds, retrieval
from .trait_inputs import TRAITS_KEY, record_apparent_sex

if TYPE_CHECKING:  # the face-trait model is the caller's, loaded only when configured
    from .face_traits import FaceTraitModel, FaceTraits

FACE2VOICE_DIR = "face2voice"  # inside a bundle, beside mapper/
CONFIG_FILE = "face2voice.json"
FEATURES_FILE = "features.npy"
FEATURE_KIND = "cls+mean-patch"  # what a feature row is (recorded with the features)
KNN_K = 5  # people blended by the kNN fallback
MIN_EVAL_PEOPLE = 4  # K-fold evaluation needs this many people with face features
MAPPER, KNN, MEAN_VOICE = "mapper", "knn-blend", "mean-voice"


@dataclass
class FaceToVoiceResult:
    """What one face query returns: `matches` best first (voice similarity to the
    predicted voice), how the voice was predicted, and seconds per stage; with a face-trait
    model, the face's apparent sex and age band, and each match's voice's apparent sex as
    the gallery recorded it."""

    matches: list[Match]
    method: str  # "mapper" or "knn-blend"
    embedding: np.ndarray  # [D] the predicted voice embedding, unit length
    timings: dict[str, float] = field(default_factory=dict)
    face_traits: FaceTraits | None = None  # None: no face-trait model was given
    # per match: "female", "male", or None (unsure, or no voice traits recorded)
    voice_sexes: list[str | None] = field(default_factory=list)

    def summary(self, test_weights: bool) -> dict:
        """The result for programs: the keys of `python -m voiceface face2voice --json` and
        of the app's `/face2voice`."""
        return {"matches": [m.summary() for m in self.matches],
                "method": self.method, "timings": {k: round(v, 4) for k, v in
                                                   self.timings.items()},
                "test_weights": test_weights,
                "face_traits": self.face_traits.summary() if self.face_traits else None}


@torch.inference_mode()
def face_features(backbone: Backbone, images: Sequence[Image.Image]) -> np.ndarray:
    """Aligned face images -> [N, 2C] float32 unit rows: the backbone's CLS token and its mean
    patch token (each normalised), concatenated and normalised."""
    batch = torch.cat([image_tensor(image, backbone.side) for image in images])
    cls, patches = backbone(batch.to(backbone.mean.device))
    features = F.normalize(torch.cat([cls, patches.mean(1)], dim=1), dim=1)
    return features.cpu().numpy().astype(np.float32)


def train_face2voice(features: np.ndarray, voices: np.ndarray, groups: Sequence[str], *,
                     seed: int = 0, progress: bool = False, **fingerprints: str):
    """The reverse mapper (features [M, F] -> voice embedding [M, D]; `groups[i]` is row i's
    person) and its `TrainReport`: `train_mapper` with the small-gallery settings, centred on
    the mean voice. `fingerprints`: encoder_fingerprint, generator_fingerprint."""
    voices = np.asarray(voices, np.float32)
    return train_mapper(features, voices, groups, voices.mean(axis=0), seed=seed,
                        progress=progress, **SMALL_MAPPER, **fingerprints)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def blend_voices(query: np.ndarray, features: np.ndarray, voices: np.ndarray,
                 k: int = KNN_K) -> np.ndarray:
    """The kNN blend: the voices [P, D] of the k people whose face features [P, F] are most
    similar to `query` [F], weighted by `knn_blend`; a unit vector [D]."""
    scores = features @ query
    top = np.argsort(-scores)[:k]
    return _unit(knn_blend(scores[top], voices[top]))


class FaceToVoice:
    """Photo -> the enrolled voices that suit it (see the module docstring)."""

    def __init__(self, backbone: Backbone, backbone_source: dict, ids: Sequence[str],
                 features: np.ndarray, mapper: VoiceToLatent | None = None, *,
                 encoder_fingerprint: str = "", generator_fingerprint: str = ""):
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or len(features) != len(ids):
            raise ValueError(f"Need one feature row per id; got {features.shape} for "
                             f"{len(ids)} ids.")
        self.backbone = backbone
        # how the bundle names the backbone, like bundle.json its encoder: {"name_or_path":
        # a Hub id, or a path (relative ones are looked up in the bundle first), "revision"}
        self.backbone_source = dict(backbone_source)
        self.ids = list(ids)
        self.features = features
        self.mapper = mapper
        self.encoder_fingerprint = encoder_fingerprint
        self.generator_fingerprint = generator_fingerprint

    @classmethod
    def fit(cls, backbone: Backbone, backbone_source: dict, ids: Sequence[str],
            images: Sequence[Image.Image], voices: np.ndarray, *, encoder_fingerprint: str,
            generator_fingerprint: str, seed: int = 0, progress: bool = False
            ) -> tuple["FaceToVoice", dict | None]:
        """Features of each person's aligned face `images[i]` and, with 2 or more people, the
        reverse mapper onto their voices [N, D]; with the mapper's training summary."""
        features = face_features(backbone, images)
        fingerprints = dict(encoder_fingerprint=encoder_fingerprint,
                            generator_fingerprint=generator_fingerprint)
        mapper, summary = None, None
        if len(ids) >= 2:
            mapper, report = train_face2voice(features, _unit(voices), list(ids), seed=seed,
                                              progress=progress, **fingerprints)
            summary = {"best_epoch": report.best_epoch, "val_loss": report.val_loss,
                       "baseline_val_loss": report.baseline_val_loss}
        return cls(backbone, backbone_source, ids, features, mapper, **fingerprints), summary

    def save(self, directory: str | os.PathLike) -> Path:
        """Write features.npy, the mapper (if any) and then face2voice.json into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        storage.write_npy(directory / FEATURES_FILE, self.features)
        if self.mapper is not None:
            self.mapper.save_pretrained(directory)
        storage.write_json(directory / CONFIG_FILE, {
            "backbone": self.backbone_source, "backbone_fingerprint": self.backbone.fingerprint,
            "feature": FEATURE_KIND, "encoder_fingerprint": self.encoder_fingerprint,
            "generator_fingerprint": self.generator_fingerprint, "ids": self.ids})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, bundle_root: str | os.PathLike, *,
                        encoder_fingerprint: str, generator_fingerprint: str) -> "FaceToVoice":
        """Load `directory` (a bundle's face2voice/); the backbone it names is resolved
        inside `bundle_root` when relative. Refused when made for another encoder, generator
        or backbone."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"This bundle has no face-to-voice model ({directory.name}/"
                                    f"{CONFIG_FILE}); rebuild it with `python -m voiceface "
                                    "build`.")
        spec = json.loads((directory / CONFIG_FILE).read_text())
        for what, wanted in (("encoder", encoder_fingerprint),
                             ("generator", generator_fingerprint)):
            if spec[f"{what}_fingerprint"] != wanted:
                raise ValueError(f"The face-to-voice model in {directory} was made for {what} "
                                 f"{spec[what + '_fingerprint']!r}, not the configured "
                                 f"{wanted!r}. Rebuild it (`python -m voiceface build`).")
        source = spec["backbone"]
        name = Path(bundle_root) / source["name_or_path"]
        backbone = Backbone.from_pretrained(name if name.exists() else source["name_or_path"],
                                            source.get("revision"))
        if backbone.fingerprint != spec["backbone_fingerprint"]:
            raise ValueError(f"The face-to-voice features in {directory} were made with backbone "
                             f"{spec['backbone_fingerprint']!r}, but {source['name_or_path']} "
                             f"is {backbone.fingerprint!r}. Rebuild the bundle.")
        mapper = VoiceToLatent.from_pretrained(directory, encoder_fingerprint=encoder_fingerprint,
                                               generator_fingerprint=generator_fingerprint) \
            if (directory / MAPPER_CONFIG).is_file() else None
        features = np.load(directory / FEATURES_FILE, allow_pickle=False)
        return cls(backbone, source, spec["ids"], features, mapper,
                   encoder_fingerprint=encoder_fingerprint,
                   generator_fingerprint=generator_fingerprint)

    def predict(self, features: np.ndarray, gallery: Gallery) -> tuple[np.ndarray, str]:
        """A unit voice embedding [D] for face features [F], and the method: the mapper when
        everyone it was trained on is still in `gallery`, else the kNN blend of the people
        in `gallery` with features."""
        trained = self.mapper.config.people if self.mapper is not None else None
        if trained and all(i in gallery for i in trained):  # [] would say nobody: not used
            return _unit(self.mapper.predict(features)), MAPPER
        rows = [j for j, i in enumerate(self.ids) if i in gallery]
        if not rows:
            raise ValueError("Nobody in the gallery has face features; rebuild the bundle "
                             "(`python -m voiceface build`).")
        voices = np.stack([gallery.embedding(self.ids[j]) for j in rows])
        return blend_voices(features, self.features[rows], voices), KNN

    def __call__(self, photo: faces.ImageSource, gallery: Gallery, k: int = 5,
                 face_traits: FaceTraitModel | None = None) -> FaceToVoiceResult:
        """A photo of one person (path, bytes, PIL image or RGB array) -> the `k` people of
        `gallery` whose voices are nearest the voice predicted for it; with `face_traits`,
        also what that model reads in the aligned face and the matches' voices' apparent
        sex. Raises `FaceError` (a ValueError) for a photo without exactly one face, or that
        is not an image."""
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        # 1. align the one face
        aligned = faces.align(photo, faces.DEFAULT_SIZE).image
        lap("align")
        # 2. describe it
        features = face_features(self.backbone, [aligned])[0]
        lap("features")
        # 3. predict a voice
        embedding, method = self.predict(features, gallery)
        lap("map")
        # 4. search the gallery's voices
        matches = gallery.search(embedding, k)
        lap("search")
        # 5. what the face and the suggested voices show (apparent sex, age band)
        traits, sexes = None, []
        if face_traits is not None:
            traits = face_traits([aligned])[0]
            sexes = [record_apparent_sex(gallery.person(m.id).extra.get(TRAITS_KEY))
                     for m in matches]
            lap("traits")
        timings["total"] = sum(timings.values())
        return FaceToVoiceResult(matches, method, embedding, timings, traits, sexes)


# ---------------------------------------------------------------------------- evaluation


def reverse_predictions(ids: Sequence[str], features: np.ndarray, voices: np.ndarray, *,
                        folds: int = 5, seed: int = 0, progress: bool = False
                        ) -> dict[str, np.ndarray]:
    """{"mapper"|"knn-blend"|"mean-voice": [N, D] unit voices predicted for each person's face
    by a method that never saw them}: K folds over identities. `features` [N, F] and `voices`
    [N, D] are row-aligned with `ids`."""
    features, truth = np.asarray(features, np.float32), _unit(voices)
    predictions = {name: np.zeros_like(truth) for name in (MAPPER, KNN, MEAN_VOICE)}
    for train, test in identity_folds(list(range(len(ids))), folds, seed):
        train, test = np.array(train), np.array(test)
        mapper, _ = train_face2voice(features[train], truth[train],
                                     [str(ids[i]) for i in train], seed=seed,
                                     progress=progress)
        predictions[MAPPER][test] = _unit(mapper.predict(features[test]))
        for i in test:
            predictions[KNN][i] = blend_voices(features[i], features[train], truth[train])
        predictions[MEAN_VOICE][test] = _unit(truth[train].mean(axis=0))
    return predictions


def evaluate_reverse(ids: Sequence[str], features: np.ndarray, voices: np.ndarray, *,
                     folds: int = 5, seed: int = 0, progress: bool = False) -> dict:
    """Face -> voice on people unseen by the mapper: K folds over identities (see the module
    docstring). `features` [N, F] and `voices` [N, D] are row-aligned with `ids`.

    Returns {"mapper"|"knn-blend"|"mean-voice": retrieval scores, "people": N,
    "better_than_chance": the mapper's 1:2 interval lies above both 0.5 and the mean
    voice's score}, or {"note": ...} with too few people."""
    return _scores_or_note(ids, features, voices, folds, seed, progress)[0]


def _scores_or_note(ids: Sequence[str], features: np.ndarray, voices: np.ndarray, folds: int,
                    seed: int, progress: bool) -> tuple[dict, dict[str, np.ndarray] | None]:
    """`evaluate_reverse`'s answer and the predictions it scored (None with too few people)."""
    n = len(ids)
    if n < MIN_EVAL_PEOPLE:
        return {"note": f"{n} people with face features; K-fold face-to-voice evaluation "
                        f"needs {MIN_EVAL_PEOPLE} or more"}, None
    predictions = reverse_predictions(ids, features, voices, folds=folds, seed=seed,
                                      progress=progress)
    # unit predictions and unit truths: Euclidean ranking is cosine ranking
    scores = {name: retrieval(pred, _unit(voices), seed) for name, pred in predictions.items()}
    low = scores[MAPPER]["matching_1to2_ci95"][0]
    return {**scores, "people": n, "better_than_chance": bool(
        low > max(0.5, scores[MEAN_VOICE]["matching_1to2"]))}, predictions


@dataclass(frozen=True)
class HeldOutVoices:
    """What `evaluate_bundle` predicted: the people (`ids`), their unit voices [N, D] and each
    method's voices [N, D] predicted for their faces by a mapper that never saw them."""

    ids: list[str]
    voices: np.ndarray
    predictions: dict[str, np.ndarray]


def evaluate_bundle(index: str | os.PathLike, gallery: Gallery, *, folds: int = 5,
                    seed: int = 0, progress: bool = False) -> tuple[dict, HeldOutVoices | None]:
    """`evaluate_reverse` on a built bundle: the face features in its face2voice/ and the
    gallery's voice embeddings of the same people; with the predictions it scored (None
    when it could not evaluate)."""
    directory = Path(index) / FACE2VOICE_DIR
    if not (directory / CONFIG_FILE).is_file():
        return {"note": f"no {FACE2VOICE_DIR}/ in the bundle (built before face to voice); "
                        "rebuild it to evaluate the reverse direction"}, None
    ids = json.loads((directory / CONFIG_FILE).read_text())["ids"]
    rows = [j for j, i in enumerate(ids) if i in gallery]
    features = np.load(directory / FEATURES_FILE, allow_pickle=False)[rows]
    ids = [ids[j] for j in rows]
    voices = np.stack([gallery.embedding(i) for i in ids]) if ids else np.zeros((0, gallery.dim))
    result, predictions = _scores_or_note(ids, features, voices, folds, seed, progress)
    return result, predictions and HeldOutVoices(ids, _unit(voices), predictions)


def markdown(result: dict) -> list[str]:
    """The report's face-to-voice section, as Markdown lines."""
    lines = ["## Face to voice (people unseen by the reverse mapper)", ""]
    if "note" in result:
        return lines + [result["note"]]
    keys = [k for k in result[MAPPER] if k.startswith("R@")]
    lines += [f"Each held-out face's predicted voice among the {result['people']} people's "
              "voices.", "",
              "| method | " + " | ".join(keys) + " | 1:2 matching (95 % CI) |",
              "| --- " * (len(keys) + 2) + "|",
              "| chance | " + " | ".join(f"{result[MAPPER]['chance_' + k]:.3f}" for k in keys) +
              " | 0.500 |"]
    for name in (MAPPER, KNN, MEAN_VOICE):
        r = result[name]
        low, high = r["matching_1to2_ci95"]
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) +
                     f" | {r['matching_1to2']:.3f} ({low:.3f}-{high:.3f}) |")
    low = result[MAPPER]["matching_1to2_ci95"][0]
    mean = result[MEAN_VOICE]["matching_1to2"]
    lines.append("")
    if result["better_than_chance"]:
        lines.append(f"**Better than chance**: the reverse mapper's 1:2 matching (95 % CI from "
                     f"{low:.3f}) lies above 0.5 and the mean voice's {mean:.3f}.")
    else:
        lines.append(f"**No better than chance**: the reverse mapper's 1:2 matching (95 % CI "
                     f"from {low:.3f}) does not lie above 0.5 and the mean voice's {mean:.3f}; "
                     "the voices it suggests for a face say nothing about that face.")
    return lines

"""Face traits read zero-shot from a face image: apparent sex and a coarse age band.

    model = FaceTraitModel.from_pretrained()        # CLIP ViT-B/16 at a pinned revision
    traits = model([image])[0]                      # PIL images, RGB, any size
    traits.apparent_sex, traits.sex_confidence, traits.age_band, traits.age_confidence

An image-text model (CLIP, through `transformers`) compares the image with sentences that
describe each answer ("a photo of a woman's face", "a portrait of a man", ...): each class is
the mean of its sentences' normalised text embeddings (prompt ensembling, as in the CLIP
paper), and a softmax over the scaled cosine similarities gives each class's probability.
An answer is None (unsure) when the likeliest class leads the next one by less than a margin
(`SEX_MARGIN`, `AGE_MARGIN`). The sentences are embedded once, when the model is loaded; each
image then costs one pass of the vision tower. Weights come through `voiceface.hub` (a Hub id
at a revision, or a local directory; configs, tokenizer.json and safetensors only).

Apparent sex is how a face tends to be seen (a perceptual trait of the face, as the model
learnt it from captioned web images), never a statement about a person's sex or gender
identity. Neither answer is measured here against labelled faces: the margins are choices,
not calibrations.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, AutoTokenizer

from . import hub
from .bundle import DEFAULT_FACE_TRAITS, DEFAULT_FACE_TRAITS_REVISION

PROCESSOR_FILE = "preprocessor_config.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's RGB mean, when the processor gives none
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEMPLATES = ("a photo of {}'s face.", "a close-up portrait photo of {}.",
             "a face of {}.", "a cropped photo of the face of {}.")
SEXES = {"female": ("a woman", "a girl"), "male": ("a man", "a boy")}
# coarse on purpose: a face's age is read within a decade or two at best
AGE_BANDS = {"child": ("a child", "a young kid"),  # under about 13
             "young adult": ("a young adult", "a person in their twenties"),  # about 13-35
             "adult": ("a middle-aged adult", "a person in their forties"),  # about 35-60
             "older": ("an elderly person", "a senior citizen")}  # over about 60
SEX_MARGIN = 0.2  # probability lead below which apparent sex is None (p >= 0.6 answers)
AGE_MARGIN = 0.1  # probability lead of the likeliest age band over the next, else None
BATCH = 16  # images per vision pass


@dataclass(frozen=True)
class FaceTraits:
    """What a face image shows, as the model reads it. Each answer is None when unsure; each
    confidence is the probability of the likeliest class."""

    apparent_sex: str | None  # "female", "male" or None
    sex_confidence: float
    age_band: str | None  # one of AGE_BANDS or None
    age_confidence: float

    def summary(self) -> dict:
        """JSON-ready, confidences rounded (the keys a persona's gallery extra records)."""
        return {**asdict(self), "sex_confidence": round(self.sex_confidence, 3),
                "age_confidence": round(self.age_confidence, 3)}


class FaceTraitModel:
    """A frozen CLIP model with its class embeddings: `model(images) -> [FaceTraits]`."""

    def __init__(self, model: torch.nn.Module, tokenizer, side: int,
                 mean: Sequence[float], std: Sequence[float], source_fingerprint: str):
        self.model = model.eval().requires_grad_(False)
        self.side = side
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.fingerprint = traits_fingerprint(source_fingerprint)
        with torch.inference_mode():
            self.sexes = self._class_embeddings(tokenizer, SEXES)  # [2, D]
            self.ages = self._class_embeddings(tokenizer, AGE_BANDS)  # [4, D]
            self.scale = float(self.model.logit_scale.exp())

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_FACE_TRAITS,
                        revision: str | None = DEFAULT_FACE_TRAITS_REVISION) -> FaceTraitModel:
        """Load a CLIP checkpoint (a local directory or a Hub repo at `revision`): its config,
        tokenizer.json, preprocessor_config.json and safetensors weights."""
        local = hub.resolve_safetensors_dir(name_or_path, revision, "face-trait model")
        model = AutoModel.from_pretrained(local.path, use_safetensors=True)
        if not hasattr(model, "get_image_features") or not hasattr(model, "logit_scale"):
            raise ValueError(f"The face-trait model {name_or_path} is a {type(model).__name__}; "
                             "it must be an image-text model with a logit scale, such as "
                             "CLIP (e.g. openai/clip-vit-base-patch16).")
        tokenizer = AutoTokenizer.from_pretrained(local.path)
        processor_path = local.path / PROCESSOR_FILE
        processor = json.loads(processor_path.read_text()) if processor_path.is_file() else {}
        crop = processor.get("crop_size")
        side = int(crop["height"] if isinstance(crop, dict) else crop or
                   model.config.vision_config.image_size)
        return cls(model, tokenizer, side, processor.get("image_mean") or CLIP_MEAN,
                   processor.get("image_std") or CLIP_STD, local.fingerprint)

    def _class_embeddings(self, tokenizer, classes: dict[str, tuple[str, ...]]) -> torch.Tensor:
        """[len(classes), D]: per class, the normalised mean of its sentences' normalised
        text embeddings."""
        rows = []
        for phrases in classes.values():
            sentences = [t.format(p) for p in phrases for t in TEMPLATES]
            tokens = tokenizer(sentences, padding=True, return_tensors="pt")
            features = self.model.get_text_features(**tokens)
            features = getattr(features, "pooler_output", features)  # transformers 5: an output
            rows.append(F.normalize(F.normalize(features, dim=-1).mean(0), dim=-1))
        return torch.stack(rows)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images (any size) -> [N, 3, side, side] normalised: each centre-cropped to a
        square and resized (bicubic), as CLIP's processor does for a square crop."""
        batch = []
        for image in images:
            image = image.convert("RGB")
            edge = min(image.size)
            left, top = (image.width - edge) // 2, (image.height - edge) // 2
            square = image.crop((left, top, left + edge, top + edge)).resize(
                (self.side, self.side), Image.Resampling.BICUBIC)
            batch.append(torch.from_numpy(np.asarray(square, np.float32) / 255).permute(2, 0, 1))
        return (torch.stack(batch) - self.mean) / self.std

    def probabilities(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(p over SEXES [N, 2], p over AGE_BANDS [N, 4]) for `images`."""
        sexes, ages = [], []
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                features = self.model.get_image_features(
                    pixel_values=self.pixels(images[start:start + BATCH]))
                features = F.normalize(getattr(features, "pooler_output", features), dim=-1)
                sexes.append((self.scale * features @ self.sexes.T).softmax(-1))
                ages.append((self.scale * features @ self.ages.T).softmax(-1))
        return torch.cat(sexes).numpy(), torch.cat(ages).numpy()

    def __call__(self, images: Sequence[Image.Image]) -> list[FaceTraits]:
        """The traits of each image (a face, ideally aligned and cropped as FFHQ's are)."""
        if not images:
            return []
        p_sex, p_age = self.probabilities(images)
        return [FaceTraits(*_decide(list(SEXES), s, SEX_MARGIN),
                           *_decide(list(AGE_BANDS), a, AGE_MARGIN))
                for s, a in zip(p_sex, p_age)]


def traits_fingerprint(source_fingerprint: str) -> str:
    """The fingerprint of a face-trait model: its weights' (repo + commit, or content hash)
    with the sentences and margins that turn it into answers."""
    recipe = json.dumps([TEMPLATES, SEXES, AGE_BANDS, SEX_MARGIN, AGE_MARGIN]).encode()
    return f"{source_fingerprint}|prompts{hashlib.sha256(recipe).hexdigest()[:12]}"


def _decide(labels: list[str], p: np.ndarray, margin: float) -> tuple[str | None, float]:
    order = np.argsort(p)[::-1]
    lead = float(p[order[0]] - p[order[1]])
    return (labels[order[0]] if lead >= margin else None), float(p[order[0]])

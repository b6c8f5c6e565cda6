"""Invert an aligned face photo into StyleGAN2's W space: the latent w whose image looks most
like the photo.

    inverter = Inverter.from_pretrained()                    # DINOv2-small features
    result = inverter.invert(generator, align_face(photo))   # result.w: float32 [512]

1. Start: the perceptually closest of `n_init` random latents (z -> mapping -> truncation)
   and w_avg.
2. Optimise one w (shared by every layer) with Adam on a perceptual loss (cosine distance
   of the backbone's normalised CLS and patch tokens) + a pixel loss (MSE) + a pull toward
   w_avg, the generator rendering at a reduced `resolution` with its stored ("const") noise.
3. Return the best w seen. Deterministic for a given seed on a given machine.

The perceptual backbone is any `transformers` vision model with a CLS token (default
DINOv2-small), loaded from a Hub id or a local directory through `voiceface.hub` (configs
and safetensors only); its input size and normalisation come from its image processor
config. `cache_key` makes the w of a photo cacheable by content.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from transformers import AutoConfig, AutoModel

from . import hub
from .bundle import DEFAULT_BACKBONE, DEFAULT_BACKBONE_REVISION
from .stylegan2 import Generator

PROCESSOR_FILE = "preprocessor_config.json"
FALLBACK_MEAN = (0.485, 0.456, 0.406)  # ImageNet RGB mean, when the processor gives none
FALLBACK_STD = (0.229, 0.224, 0.225)
INIT_PSI = 0.7  # truncation of the random starting candidates
LR_RAMPDOWN = 0.25  # fraction of the steps over which the learning rate decays to 0 (cosine)
KEY_HEX = 32  # hex digits of a cache key

Progress = Callable[[int, int, float], None]  # (step, steps, loss)


@dataclass(frozen=True)
class InversionConfig:
    """How a photo is inverted; every field is part of the cache key.

    steps: Adam steps; resolution: px the generator renders at while optimising; n_init:
    random starting candidates (plus w_avg); lr: Adam learning rate on w; w_avg_weight:
    weight of mean((w - w_avg)^2); pixel_weight: weight of the pixel MSE (images in
    [-1, 1]); backbone / revision: the perceptual feature model.
    """

    # An inversion takes minutes on a CPU (benchmarks/README.md); `build` caches w per photo, so
    # that cost is paid once per photo.
    steps: int = 30
    resolution: int = 256
    n_init: int = 8
    lr: float = 0.05
    w_avg_weight: float = 0.01
    pixel_weight: float = 0.5
    backbone: str = DEFAULT_BACKBONE
    revision: str | None = DEFAULT_BACKBONE_REVISION

    def __post_init__(self) -> None:
        if self.steps < 0 or self.n_init < 0 or self.lr <= 0 or self.resolution < 4:
            raise ValueError(f"Invalid inversion config: {self}")


@dataclass(frozen=True)
class InversionResult:
    """w: float32 [style_dim]; loss: total loss at w; distance: perceptual distance at w;
    init_distance: perceptual distance of the starting point; steps run; seconds taken."""

    w: np.ndarray
    loss: float
    distance: float
    init_distance: float
    steps: int
    seconds: float


class Backbone(torch.nn.Module):
    """A frozen vision transformer giving normalised CLS and patch features of images."""

    def __init__(self, model: torch.nn.Module, side: int, mean: tuple[float, ...],
                 std: tuple[float, ...], source_fingerprint: str):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.side = side
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self._source = source_fingerprint

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_BACKBONE,
                        revision: str | None = DEFAULT_BACKBONE_REVISION) -> Backbone:
        """Load a local directory or Hub repo: model config + safetensors weights, with the
        input side and mean/std read from its `preprocessor_config.json` when present."""
        local = hub.resolve_safetensors_dir(name_or_path, revision, "perceptual backbone")
        model_config = AutoConfig.from_pretrained(local.path)
        model = AutoModel.from_pretrained(local.path, config=model_config, use_safetensors=True)
        processor_path = local.path / PROCESSOR_FILE
        processor = json.loads(processor_path.read_text()) if processor_path.is_file() else {}
        side = _input_side(processor, model_config)
        mean = tuple(processor.get("image_mean") or FALLBACK_MEAN)
        std = tuple(processor.get("image_std") or FALLBACK_STD)
        return cls(model, side, mean, std, local.fingerprint)

    @property
    def fingerprint(self) -> str:
        """Model id + revision (or content hash) + input side and normalisation."""
        mean = ",".join(f"{v:g}" for v in self.mean.flatten().tolist())
        std = ",".join(f"{v:g}" for v in self.std.flatten().tolist())
        return f"{self._source}|side{self.side}|mean{mean}|std{std}|cls+patch"

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [N, 3, H, W] in [-1, 1] -> (CLS [N, C], patch tokens [N, P, C]), each
        feature vector L2-normalised. Differentiable w.r.t. the images."""
        assert images.dim() == 4 and images.shape[1] == 3, images.shape
        x = F.interpolate(images, size=(self.side, self.side), mode="bilinear",
                          align_corners=False, antialias=True)
        x = ((x + 1) / 2 - self.mean) / self.std
        tokens = self.model(pixel_values=x).last_hidden_state  # [N, 1 + P, C]
        tokens = F.normalize(tokens, dim=-1)
        return tokens[:, 0], tokens[:, 1:]

    @staticmethod
    def distance(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
        """Perceptual distance [N] between features `a` and `b` (broadcast over N): cosine
        distance of the CLS tokens + mean cosine distance of the patch tokens, in [0, 4]."""
        cls_a, patches_a = a
        cls_b, patches_b = b
        return (1 - (cls_a * cls_b).sum(-1)) + (1 - (patches_a * patches_b).sum(-1)).mean(-1)


def _input_side(processor: dict, model_config) -> int:
    """Square input side: the processor's crop, else its resize size, else the model's
    image_size; rounded to a whole number of patches."""
    crop, size = processor.get("crop_size") or {}, processor.get("size") or {}
    side = next((int(v) for v in (
        crop.get("height") if isinstance(crop, dict) else crop,
        (size.get("height") or size.get("shortest_edge")) if isinstance(size, dict) else size,
        getattr(model_config, "image_size", None)) if v), 224)
    patch = int(getattr(model_config, "patch_size", 1) or 1)
    return max(patch, round(side / patch) * patch)


class Inverter:
    """Photo -> w by optimisation: `Inverter.from_pretrained(config).invert(generator, face)`."""

    def __init__(self, backbone: Backbone, config: InversionConfig = InversionConfig()):
        self.backbone = backbone
        self.config = config

    @classmethod
    def from_pretrained(cls, config: InversionConfig = InversionConfig()) -> Inverter:
        """Load `config.backbone` at `config.revision` (a Hub id or a local directory)."""
        return cls(Backbone.from_pretrained(config.backbone, config.revision), config)

    @property
    def fingerprint(self) -> str:
        """Backbone fingerprint; with the config and the generator it fixes every result."""
        return self.backbone.fingerprint

    def cache_key(self, image_sha256: str, generator_fingerprint: str, seed: int = 0) -> str:
        """`cache_key` for this inverter's backbone and config."""
        return cache_key(image_sha256, generator_fingerprint, self.fingerprint, self.config, seed)

    def invert(self, generator: Generator, aligned_image: Image.Image | np.ndarray,
               seed: int = 0, progress: Progress | None = None) -> InversionResult:
        """Find w [style_dim] whose image resembles `aligned_image` (an aligned face, RGB PIL
        or uint8 [H, W, 3], any size; see `voiceface.faces.align_face`).

        `seed` draws the starting candidates; `progress(step, steps, loss)` is called after
        every step. The generator is not modified (no gradients are stored in it).
        """
        start = time.perf_counter()
        cfg, d = self.config, generator.style_dim
        res = min(cfg.resolution, generator.resolution)
        device = generator.w_avg.device
        target = image_tensor(aligned_image, res).to(device)
        w_avg = generator.w_avg.detach()[None]
        # 1. start from the perceptually closest candidate
        with torch.no_grad():
            target_features = self.backbone(target)
            z = torch.randn(cfg.n_init, d, generator=torch.Generator().manual_seed(seed))
            candidates = torch.cat([w_avg, generator.truncate(generator.mapping(z.to(device)),
                                                              INIT_PSI)])
            distances = torch.cat([
                self.backbone.distance(self.backbone(self._render(generator, w, res)),
                                       target_features) for w in candidates.split(1)])
        best = int(distances.argmin())
        init_distance = float(distances[best])
        # 2. optimise one w with Adam; keep the lowest loss seen
        def objective(w: Tensor) -> tuple[Tensor, Tensor]:
            image = self._render(generator, w, res)
            distance = self.backbone.distance(self.backbone(image), target_features).sum()
            return distance + cfg.pixel_weight * F.mse_loss(image, target) + \
                cfg.w_avg_weight * (w - w_avg).pow(2).mean(), distance

        w = candidates[best : best + 1].clone().requires_grad_(True)
        optimiser = torch.optim.Adam([w], lr=cfg.lr, betas=(0.9, 0.999))
        best_w, best_loss, best_distance = w.detach().clone(), float("inf"), init_distance
        for step in range(cfg.steps + 1):
            last = step == cfg.steps  # the last pass only scores the final update
            with torch.set_grad_enabled(not last):
                loss, distance = objective(w)
            value = float(loss.detach())
            if value < best_loss:
                best_w, best_loss = w.detach().clone(), value
                best_distance = float(distance.detach())
            if last:
                break
            for group in optimiser.param_groups:
                group["lr"] = cfg.lr * _rampdown(step / cfg.steps)
            optimiser.zero_grad(set_to_none=True)
            loss.backward(inputs=[w])
            optimiser.step()
            if progress is not None:
                progress(step + 1, cfg.steps, value)
        # 3. the best w as numpy
        w_out = best_w[0].cpu().numpy().astype(np.float32)
        assert w_out.shape == (d,), w_out.shape
        return InversionResult(w_out, best_loss, best_distance, init_distance, cfg.steps,
                               time.perf_counter() - start)

    @staticmethod
    def _render(generator: Generator, w: Tensor, res: int) -> Tensor:
        """w [1, D] -> image [1, 3, res, res] in [-1, 1], const noise."""
        return generator.synthesis(w, noise="const", resolution=res)


def _rampdown(t: float) -> float:
    """Learning-rate factor at progress t in [0, 1): 1, then a cosine to 0 over the last
    `LR_RAMPDOWN` of the steps."""
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    return 0.5 - 0.5 * float(np.cos(ramp * np.pi))


def image_tensor(image: Image.Image | np.ndarray, side: int) -> Tensor:
    """RGB PIL image or uint8 [H, W, 3] -> [1, 3, side, side] float in [-1, 1] (Lanczos)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return (pixels.permute(2, 0, 1)[None] / 127.5 - 1).contiguous()


def content_sha256(source: str | os.PathLike | bytes | Image.Image) -> str:
    """sha256 hex of a file's bytes (path or bytes: a photo, a recording), or of a PIL
    image's PNG encoding."""
    if isinstance(source, Image.Image):
        buf = io.BytesIO()
        source.save(buf, "PNG")
        source = buf.getvalue()
    elif not isinstance(source, (bytes, bytearray)):
        source = Path(source).read_bytes()
    return hashlib.sha256(source).hexdigest()


def cache_key(image_sha256: str, generator_fingerprint: str, backbone_fingerprint: str,
              config: InversionConfig, seed: int = 0) -> str:
    """Content key of one inversion: the same photo bytes, generator, backbone, config and
    seed give the same key (and the same w), anything else a different one."""
    payload = json.dumps({"image": image_sha256, "generator": generator_fingerprint,
                          "backbone": backbone_fingerprint, "config": asdict(config),
                          "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:KEY_HEX]

"""voiceface.invert: photo -> w with tiny random models (a DINOv2 backbone and a StyleGAN2
generator built here), never the network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from voiceface.devbundle import TINY_GENERATOR, write_random_backbone
from voiceface.hub import WeightsNotFound
from voiceface.invert import (
    Backbone,
    InversionConfig,
    Inverter,
    cache_key,
    content_sha256,
    image_tensor,
)
from voiceface.stylegan2 import Generator, to_pil, z_from_seed

TARGET_SEED = 123  # z seed of the face the tests invert


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    """A tiny random DINOv2 saved like a Hub checkpoint, with its image processor config."""
    return write_random_backbone(tmp_path_factory.mktemp("dinov2-tiny"))


@pytest.fixture(scope="module")
def generator():
    return Generator(TINY_GENERATOR, seed=0)


@pytest.fixture(scope="module")
def target(generator):
    """(w [D], image) of a face the tiny generator renders: its latent is known exactly."""
    with torch.no_grad():
        w = generator.truncate(generator.mapping(z_from_seed(TARGET_SEED, 64)[None]), 0.7)
        return w[0].numpy(), to_pil(generator.synthesis(w))[0]


def config(backbone_dir, **overrides) -> InversionConfig:
    settings = dict(steps=40, resolution=64, n_init=8, lr=0.05, backbone=str(backbone_dir),
                    revision=None)
    return InversionConfig(**{**settings, **overrides})


def pixel_mse(generator, w: np.ndarray, image: Image.Image) -> float:
    with torch.no_grad():
        rendered = generator.synthesis(torch.from_numpy(w)[None])
    return float(((rendered - image_tensor(image, rendered.shape[-1])) ** 2).mean())


def test_backbone_reads_its_processor_config(backbone_dir):
    backbone = Backbone.from_pretrained(backbone_dir, None)
    assert backbone.side == 56  # the crop size, a whole number of 8 px patches
    assert torch.allclose(backbone.mean.flatten(), torch.tensor([0.5, 0.4, 0.3]))
    assert backbone.fingerprint.startswith("local:") and "side56" in backbone.fingerprint
    cls, patches = backbone(torch.zeros(2, 3, 64, 64))
    assert cls.shape == (2, 32) and patches.shape == (2, 49, 32)
    assert torch.allclose(cls.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_loss_goes_down_and_result_has_the_right_shape(backbone_dir, generator, target):
    losses = []
    result = Inverter.from_pretrained(config(backbone_dir)).invert(
        generator, target[1], progress=lambda step, steps, loss: losses.append(loss))
    assert len(losses) == 40
    assert result.loss < 0.8 * losses[0]
    assert result.distance < result.init_distance
    assert result.w.shape == (64,) and result.w.dtype == np.float32
    assert result.steps == 40 and result.seconds > 0


@pytest.mark.slow
def test_recovers_a_face_the_generator_made(backbone_dir, generator, target):
    w_true, image = target
    inverter = Inverter.from_pretrained(config(backbone_dir, steps=80))
    init = Inverter(inverter.backbone, dataclasses.replace(inverter.config, steps=0)) \
        .invert(generator, image)
    result = inverter.invert(generator, image)
    before, after = pixel_mse(generator, init.w, image), pixel_mse(generator, result.w, image)
    assert after < 0.3 * before, (before, after)
    assert np.linalg.norm(result.w - w_true) < np.linalg.norm(init.w - w_true)


def test_deterministic_for_a_seed(backbone_dir, generator, target):
    inverter = Inverter.from_pretrained(config(backbone_dir, steps=5))
    first = inverter.invert(generator, target[1], seed=3)
    again = inverter.invert(generator, np.asarray(target[1]), seed=3)
    assert np.array_equal(first.w, again.w) and first.loss == again.loss
    assert not any(p.grad is not None for p in generator.parameters())


def test_steps_zero_returns_the_best_starting_point(backbone_dir, generator, target):
    result = Inverter.from_pretrained(config(backbone_dir, steps=0)).invert(generator, target[1])
    assert result.distance == pytest.approx(result.init_distance, abs=1e-4)


def test_missing_backbone_says_what_to_do(tmp_path):
    with pytest.raises(WeightsNotFound, match="perceptual backbone"):
        Backbone.from_pretrained(tmp_path / "no" / "such" / "dir", None)
    with pytest.raises(WeightsNotFound, match="HF_HUB_OFFLINE.*local directory"):
        Backbone.from_pretrained("someone/not-in-the-cache", "main")


def test_backbone_without_safetensors_is_refused(tmp_path, backbone_dir):
    (tmp_path / "config.json").write_text((backbone_dir / "config.json").read_text())
    with pytest.raises(WeightsNotFound, match="no .safetensors weights"):
        Backbone.from_pretrained(tmp_path, None)


def test_cache_key_changes_with_every_input(backbone_dir, target):
    image = target[1]
    digest = content_sha256(image)
    cfg = config(backbone_dir)
    key = cache_key(digest, "gen@1", "bb@1", cfg)
    assert key == cache_key(digest, "gen@1", "bb@1", cfg) and len(key) == 32
    others = {cache_key(content_sha256(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                        "gen@1", "bb@1", cfg),
              cache_key(digest, "gen@2", "bb@1", cfg), cache_key(digest, "gen@1", "bb@2", cfg),
              cache_key(digest, "gen@1", "bb@1", dataclasses.replace(cfg, steps=41)),
              cache_key(digest, "gen@1", "bb@1", cfg, seed=1)}
    assert key not in others and len(others) == 5


def test_content_sha256_of_a_file_is_of_its_bytes(tmp_path, target):
    path = tmp_path / "face.png"
    target[1].save(path)
    assert content_sha256(path) == content_sha256(path.read_bytes())

"""Shared fixtures: tiny random models saved locally, and speech-like test signals.

Nothing here touches the network: models are built from configs and saved with
`save_pretrained`, then loaded through the same `from_pretrained` path a Hub id takes.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: tests never download

import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForXVector,
    Wav2Vec2Model,
)

from voiceface.audio import SAMPLE_RATE

TINY_W2V2 = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
    conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2, tdnn_dim=(32, 32, 32, 32, 64), xvector_output_dim=24,
)


def _save_tiny(model_cls, path, seed: int):
    torch.manual_seed(seed)
    model = model_cls(Wav2Vec2Config(**TINY_W2V2))
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True,
                             return_attention_mask=True).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_xvector_dir(tmp_path_factory):
    """A tiny random `Wav2Vec2ForXVector` checkpoint directory (24-d embeddings)."""
    return _save_tiny(Wav2Vec2ForXVector, tmp_path_factory.mktemp("xvector"), seed=0)


@pytest.fixture(scope="session")
def tiny_w2v2_dir(tmp_path_factory):
    """A tiny random plain `Wav2Vec2Model` checkpoint directory (32-d hidden states)."""
    return _save_tiny(Wav2Vec2Model, tmp_path_factory.mktemp("w2v2"), seed=1)


def speech_like(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0, f0: float = 140.0):
    """A voiced, syllable-modulated harmonic signal [T] float32 in about [-0.5, 0.5].

    Harmonics of a wobbling f0 shaped by a few formant-like peaks, switched on and off at a
    syllable rate: enough structure to exercise trimming, resampling and the encoder.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / rate
    wav = sum((1 / k) * np.sin(k * phase) * np.exp(-((k * f0 - 700) / 900) ** 2)
              for k in range(1, 25))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, np.pi))
    wav = wav * syllables + 0.01 * rng.standard_normal(len(t))
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


def put_in_hub_cache(cache: Path, repo_id: str, files_dir: Path, commit: str) -> None:
    """Lay out `files_dir` as the Hub cache's snapshot of `repo_id` at `commit` (refs/main)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(files_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache that huggingface_hub uses for this test (offline)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def speech():
    """Callable fixture: `speech(seconds, rate=16000, seed=0, f0=140.0)`."""
    return speech_like

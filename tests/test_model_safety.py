"""Model files that run code when unpickled are refused before any of their code runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from voiceface.loading import load_generator
from voiceface.stylegan2 import Generator, GeneratorConfig, convert_checkpoint
from voiceface.voice import VoiceEncoder

TINY = GeneratorConfig(size=8, style_dim=8, n_mlp=1, channels={4: 8, 8: 8})


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "unpickling ran the payload"


@pytest.fixture
def evil_checkpoint(tmp_path, marker):
    """A real rosinality-layout generator checkpoint with a code payload beside the weights."""
    generator = Generator(TINY, seed=0)
    path = tmp_path / "stylegan2-evil.pt"
    torch.save({"g_ema": generator.state_dict(), "latent_avg": generator.w_avg.clone(),
                "args": Payload(marker)}, path)
    return path


@pytest.mark.slow
def test_the_payload_is_live(evil_checkpoint, marker):
    # Without the safeguard the payload runs: shows the refusals below are real (in a child).
    unsafe = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    subprocess.run([sys.executable, "-c", unsafe, str(evil_checkpoint)], check=True)
    assert marker.exists()
    marker.unlink()


def test_generator_refuses_a_checkpoint_that_would_run_code(evil_checkpoint):
    with pytest.raises(ValueError, match=r"not a tensors-only PyTorch checkpoint: it holds "
                       r"Python objects \(posix\.system\) that could run code.*refused"):
        Generator.from_pretrained(evil_checkpoint)
    with pytest.raises(ValueError, match="tensors-only"):
        convert_checkpoint(evil_checkpoint, evil_checkpoint.parent / "converted")
    assert not (evil_checkpoint.parent / "converted").exists()


def test_pipeline_loader_refuses_it_too(evil_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("VOICEFACE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="tensors-only"):
        load_generator(evil_checkpoint.parent, evil_checkpoint.name)


@pytest.mark.slow
def test_cli_convert_refuses_it_with_one_line(evil_checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "voiceface", "convert-generator",
                           str(evil_checkpoint), str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "tensors-only" in proc.stderr and "Traceback" not in proc.stderr


def test_pkl_is_refused_by_name_without_opening_it(tmp_path, marker):
    pkl = tmp_path / "network-snapshot.pkl"
    torch.save(Payload(marker), pkl)
    with pytest.raises(ValueError, match="NVIDIA pickle.*runs code"):
        Generator.from_pretrained(pkl)
    with pytest.raises(ValueError, match="NVIDIA pickle"):
        load_generator(tmp_path, pkl.name)


def test_encoder_refuses_pickled_weights(tiny_xvector_dir, tmp_path, marker):
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_xvector_dir, encoder)
    state = load_file(encoder / "model.safetensors")
    (encoder / "model.safetensors").unlink()
    torch.save({**state, "payload": Payload(marker)}, encoder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no .safetensors weights.*can run code"):
        VoiceEncoder.from_pretrained(encoder)

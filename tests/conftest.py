"""Shared fixtures: tiny random models saved locally, speech-like signals, a Hub cache.

Nothing here touches the network: models are built from configs and saved with
`save_pretrained`, then loaded through the same `from_pretrained` path a Hub id takes.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: tests never download

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import huggingface_hub
import pytest
import torch
from transformers import Wav2Vec2Model

from benchmarks.serve import running_app
from voiceface.devbundle import synthetic_voice, write_dev_bundle, write_random_encoder

REPO = Path(__file__).resolve().parents[1]
DEV_PEOPLE = 6  # people in the tests' dev bundle
PHOTO = REPO / "voiceface" / "data" / "astronaut.jpg"  # a real face (public domain; package data)
APP_START_TIMEOUT = 120  # s for app.py to load models and listen


@pytest.fixture(scope="module")
def one_torch_thread():
    """For a module of tiny models: they gain nothing from threads, and on a busy machine
    two threads contending for the cores make every step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_xvector_dir(tmp_path_factory):
    """A tiny random `Wav2Vec2ForXVector` checkpoint directory (24-d embeddings)."""
    return write_random_encoder(tmp_path_factory.mktemp("xvector"), seed=0)


@pytest.fixture(scope="session")
def tiny_w2v2_dir(tmp_path_factory):
    """A tiny random plain `Wav2Vec2Model` checkpoint directory (32-d hidden states)."""
    return write_random_encoder(tmp_path_factory.mktemp("w2v2"), seed=1, model_class=Wav2Vec2Model)


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
    return synthetic_voice


@pytest.fixture(scope="session")
def dev_bundle(tmp_path_factory):
    """A complete offline bundle of tiny random models and synthetic people."""
    return write_dev_bundle(tmp_path_factory.mktemp("bundles") / "dev", n_people=DEV_PEOPLE,
                            progress=False)


def serve_app(bundle: Path | None, log: Path, env: dict[str, str] | None = None,
              args: tuple[str, ...] = (), timeout: float = APP_START_TIMEOUT
              ) -> AbstractContextManager[tuple[str, subprocess.Popen]]:
    """app.py (on `bundle`, else its default) on 127.0.0.1 with more `args` and its output
    in `log`: a context giving (url, process) once it answers."""
    return running_app(bundle, log, env, args, timeout)


@contextmanager
def serve_with_cache(bundle: Path, root: Path) -> Iterator[dict]:
    """app.py on `bundle`, its log and Gradio's cache under `root`: {"url", "cache"}."""
    cache = root / "gradio-cache"
    with serve_app(bundle, root / "app.log", {"GRADIO_TEMP_DIR": str(cache)}) as (url, _):
        yield {"url": url, "cache": cache}

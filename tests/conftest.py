"""Shared fixtures: tiny random models saved locally, speech-like signals, a Hub cache.

Nothing here touches the network: models are built from configs and saved with
`save_pretrained`, then loaded through the same `from_pretrained` path a Hub id takes.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: tests never download

import shutil
import subprocess
from collections.abc import Generator, Iterator
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


# -- markers: what starts the app or Chromium says so, and the quick run leaves it out ---------
_current: pytest.Item | None = None  # the test being set up or run
_setting_up: list[pytest.FixtureDef] = []  # the fixtures being set up now, outermost first
_needs: dict[str, set[tuple[str, str]]] = {}  # marker -> (baseid, name) of fixtures needing it


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note the test whose fixtures are about to be set up (`require_marker` checks it)."""
    global _current
    _current = item


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef,
                         request: pytest.FixtureRequest) -> Generator[None, object, object]:
    """Keep the stack of fixtures being set up, for `require_marker`."""
    _setting_up.append(fixturedef)
    try:
        return (yield)
    finally:
        _setting_up.pop()


def require_marker(marker: str, what: str) -> None:
    """Fail the running test unless it is marked `marker` (it does `what`). The fixtures being
    set up now need the marker too, on every test that uses them (`pytest_runtest_call`)."""
    _needs.setdefault(marker, set()).update((f.baseid, f.argname) for f in _setting_up)
    if _current is not None and _current.get_closest_marker(marker) is None:
        pytest.fail(f"{_current.nodeid} {what} but is not marked {marker}: add "
                    f"@pytest.mark.{marker} (or `pytestmark = pytest.mark.{marker}` for the "
                    "module) so that the quick run leaves it out.", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A test that uses an app or a browser a fixture started earlier needs the marker too."""
    for marker, fixtures in _needs.items():
        used = sorted(name for baseid, name in fixtures
                      if name in item.fixturenames and item.nodeid.startswith(baseid))
        if used and item.get_closest_marker(marker) is None:
            pytest.fail(f"{item.nodeid} uses {', '.join(used)}, which needs the {marker} "
                        f"marker: add @pytest.mark.{marker} (or `pytestmark = "
                        f"pytest.mark.{marker}` for the module).", pytrace=False)


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
    in `log`: a context giving (url, process) once it answers. Only for tests marked slow."""
    require_marker("slow", "starts the app server")
    return running_app(bundle, log, env, args, timeout)


@contextmanager
def serve_with_cache(bundle: Path, root: Path) -> Iterator[dict]:
    """app.py on `bundle`, its log and Gradio's cache under `root`: {"url", "cache"}."""
    cache = root / "gradio-cache"
    with serve_app(bundle, root / "app.log", {"GRADIO_TEMP_DIR": str(cache)}) as (url, _):
        yield {"url": url, "cache": cache}

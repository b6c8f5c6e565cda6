"""The library stands alone: a public face that imports nothing heavy, and a package that
installs with pip into a fresh venv and runs from a folder that is not the checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import voiceface
from conftest import REPO

PUBLIC = ["load", "VoiceFace", "load_audio", "AudioError", "VoiceEncoder", "Gallery", "Generator"]
HEAVY = ("torch", "numpy", "transformers", "faiss", "huggingface_hub", "gradio", "PIL")


def run(*args, cwd=None, env=None) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_importing_the_package_does_no_work():
    out = run(sys.executable, "-c", "import sys, voiceface; print(sorted(m for m in sys.modules "
              f"if m.split('.')[0] in {HEAVY!r} or m.startswith('voiceface')))",
              cwd=REPO)
    assert out.strip() == "['voiceface']"


def test_the_public_names_are_the_librarys_own():
    from voiceface import audio, gallery, pipeline, stylegan2, voice

    assert sorted(voiceface.__all__) == sorted(PUBLIC)
    assert set(PUBLIC) <= set(dir(voiceface))
    assert (voiceface.VoiceFace, voiceface.load_audio, voiceface.AudioError,
            voiceface.VoiceEncoder, voiceface.Gallery, voiceface.Generator) == (
        pipeline.VoiceFace, audio.load_audio, audio.AudioError, voice.VoiceEncoder,
        gallery.Gallery, stylegan2.Generator)
    with pytest.raises(AttributeError, match="no attribute 'Pipeline'"):
        voiceface.Pipeline


def test_load_is_from_pretrained(dev_bundle, speech):
    vf = voiceface.load(dev_bundle, progress=False)
    assert isinstance(vf, voiceface.VoiceFace) and vf.spec.root == dev_bundle
    assert vf(dev_bundle / "voices" / "dev02.flac").matches[0].id == "dev02"
    with pytest.raises(voiceface.AudioError):
        vf((16_000, speech(0.2)))


def test_the_readmes_python_section_uses_only_the_public_names():
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Use it\n"):text.index("\n## Build your own gallery\n")]
    assert "import voiceface\n" in section and "from voiceface" not in section
    used = set(re.findall(r"\bvoiceface\.(\w+)", section))
    assert used and used <= set(PUBLIC), used - set(PUBLIC)


@pytest.mark.slow
def test_the_installed_package_runs_outside_the_checkout(tmp_path, speech):
    """pip install (no network: --no-index, --no-deps, this venv's setuptools) into a new venv
    that sees this venv's packages, then `dev-bundle` and `voiceface.load` in another folder."""
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside it
    shutil.copytree(REPO / "voiceface", source / "voiceface",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "test-venv.pth").write_text("\n".join(ours) + "\n")  # after the venv's own
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
        "--quiet", source, env=env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env |= {"HF_HUB_OFFLINE": "1", "VOICEFACE_CACHE": str(tmp_path / "cache")}
    run(python, "-m", "voiceface", "dev-bundle", "dev", "--people", "4", cwd=elsewhere,
        env=env)
    clip = tmp_path / "clip.npy"
    np.save(clip, speech(3.0, seed=7, f0=180.0))
    out = run(python, "-c", "\n".join([
        "import sys, numpy as np, voiceface",
        "from importlib import resources",
        "vf = voiceface.load('dev', progress=False)",
        "result = vf((16000, np.load(sys.argv[1])))",
        "print(voiceface.__file__)",
        "print(resources.files('voiceface').joinpath('data/astronaut.jpg').is_file())",
        "print(result.face.size, len(result.matches), result.method, vf.spec.test_weights)"]),
        clip, cwd=elsewhere, env=env).splitlines()
    assert Path(out[0]).is_relative_to(site)  # the installed copy, not the checkout
    assert out[1:] == ["True", "(64, 64) 4 mapper True"]

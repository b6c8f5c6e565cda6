"""From a bundle to what serving needs: the models it names, loaded, and its gallery and
mapper, built or read (the loading layer under `voiceface.pipeline`, and the generator loader
that offline tools share). Four steps, each usable alone:

    spec = BundleSpec.read(root)                                  # 1. read bundle.json
    encoder, generator, fp = load_models(spec)                    # 2. resolve the weights
    derived = prepare_derived(spec, encoder, generator, fp)       # 3. build the caches
    state = load_derived(derived, encoder.fingerprint, fp)        # 4. read them (derived.py)

Converted weights and a personas bundle's caches live in `cache_dir()`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import hub
from .bundle import (DEFAULT_GENERATOR_FILE, BundleSpec,
                     GeneratorSpec)
from .stylegan2 import CONFIG_FILE as GENERATOR_CONFIG
from .stylegan2 import Generator, convert_checkpoint
from .voice import VoiceEncoder

if TYPE_CHECKING:  # the builder is imported only when a personas bundle needs it
    from .persona_cache import Report

DEFAULT_BUNDLE = "index"  # relative to the current directory (the app names its own)


def cache_dir() -> Path:
    """Where converted weights are cached: $VOICEFACE_CACHE or ~/.cache/voiceface."""
    return Path(os.environ.get("VOICEFACE_CACHE", Path.home() / ".cache" / "voiceface"))


def default_bundle() -> str:
    """$VOICEFACE_BUNDLE, else `index` in the current directory."""
    return os.environ.get("VOICEFACE_BUNDLE") or DEFAULT_BUNDLE


def load_models(spec: BundleSpec, device: str | None = None
                ) -> tuple[VoiceEncoder, Generator, str]:
    """The voice encoder and generator `spec` names (relative paths inside its bundle), the
    generator on the encoder's device, and the generator's fingerprint."""
    enc = spec.encoder
    voice = VoiceEncoder.from_pretrained(spec.locate(enc.name_or_path), enc.revision,
                                         layer=enc.layer, device=device, quantize=enc.quantize)
    generator, fingerprint = spec_generator(spec)
    return voice, generator.to(voice.device), fingerprint


def prepare_derived(spec: BundleSpec, encoder: VoiceEncoder, generator: Generator,
                    generator_fingerprint: str, *, progress: bool = True,
                    report: Report | None = None) -> Path:
    """The directory holding the bundle's `gallery/`, `mapper/` and `face2voice/` for these
    models: the bundle itself, or for a personas bundle their caches in `cache_dir()`, built
    on first use with the bundle's backbone and face-trait model (minutes with full-size models;
    `voiceface.persona_cache.persona_bundle`, which tells `report(stage, done, total)` how far
    a build is), or installed from the prebuilt caches the bundle names ("persona_caches")
    when they were built for these models."""
    if spec.personas_dir is None:
        return spec.root
    # imported here: building loads OpenCV (face to voice), which a built bundle never needs
    from .persona_cache import persona_bundle

    caches = spec.persona_caches
    if caches is not None:  # a local folder standing in for the repo: relative to the bundle
        caches = replace(caches, repo=spec.locate(caches.repo))
    return persona_bundle(
        spec.personas_dir, encoder, generator, generator_fingerprint, cache_dir(),
        far=spec.far, truncation=spec.truncation, truncation_centre=spec.truncation_centre,
        backbone=spec.locate(spec.backbone.name_or_path),
        backbone_revision=spec.backbone.revision,
        face_traits=spec.locate(spec.face_traits.name_or_path),
        face_traits_revision=spec.face_traits.revision,
        prebuilt_caches=caches,
        progress=progress, report=report)


def spec_generator(spec: BundleSpec) -> tuple[Generator, str]:
    """The generator `spec` names (a relative path inside its bundle) and its fingerprint."""
    gen = spec.generator
    return load_generator(spec.locate(gen.name_or_path), gen.filename, gen.revision)


def bundle_generator(root: Path, gen: dict) -> tuple[Generator, str]:
    """The generator a `bundle.json` "generator" entry `gen` names (relative paths inside the
    bundle at `root`; the default generator for what it leaves out), and its fingerprint."""
    return spec_generator(BundleSpec(root=Path(root), generator=GeneratorSpec.from_dict(gen)))


def load_generator(name_or_path: str | os.PathLike, filename: str = DEFAULT_GENERATOR_FILE,
                   revision: str | None = None) -> tuple[Generator, str]:
    """A generator and its fingerprint from a saved-generator directory, a rosinality `.pt`
    file, or a Hub repo holding either. `.pt` files are converted once to safetensors and
    the conversion is cached (keyed by the fingerprint) in `cache_dir()`."""
    own_format = filename == "generator.safetensors" or (
        hub.is_local(name_or_path) and (Path(name_or_path) / GENERATOR_CONFIG).is_file())
    if own_format:
        resolved = hub.resolve_dir(name_or_path, revision, allow_patterns=("generator.*",),
                                   what="generator")
        return Generator.from_pretrained(resolved.path), resolved.fingerprint
    resolved = hub.resolve_file(name_or_path, filename, revision, what="generator")
    if resolved.path.suffix != ".pt":
        return Generator.from_pretrained(resolved.path), resolved.fingerprint
    key = hashlib.sha256(resolved.fingerprint.encode()).hexdigest()[:16]
    converted = cache_dir() / "generators" / key
    if not (converted / GENERATOR_CONFIG).is_file():
        convert_checkpoint(resolved.path, converted)
    return Generator.from_pretrained(converted), resolved.fingerprint

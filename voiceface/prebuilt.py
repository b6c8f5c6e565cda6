"""A personas bundle's caches, prebuilt: the manifest that says what they were built for, and
their checked installation from a Hub repo (or a local folder standing in for one).

    record(cache, key, made_for)            # a built cache says what it was built for
    manifest(cache)                         # ... and, to publish, the hash of every file
    install(repo, revision, made_for, work) # a download checked and copied into `work`

`python -m voiceface publish-personas` uploads a cache with its manifest
(`voiceface.publish.plan_persona_caches`); a bundle naming that repo at a commit
("persona_caches" in bundle.json) installs it at start instead of building
(`voiceface.persona_cache.persona_bundle`). A download is untrusted: only files with the
suffixes the cache format uses are fetched, each must be named by the manifest under a plain
relative path and match its size and sha256, the manifest must name exactly the models,
personas and settings of this start and this voiceface's cache format, and the files are then
read by the same loaders as a cache built here (JSON, `.npy` without pickles, safetensors,
PNG).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from . import hub, storage

MANIFEST = "persona_caches.json"  # in a cache and at the top of its repo
CACHE_PATTERNS = ("*.json", "*.npy", "*.safetensors", "*.png")  # every file a cache holds
HASH_CHUNK_BYTES = 8 * 1024 * 1024  # bytes read at a time when hashing a file
MAX_CACHE_BYTES = 256 * 1024**2  # bytes; the 48 personas' caches take about 6 MiB
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
FACE2VOICE_CONFIG = "face2voice/face2voice.json"  # names the backbone it was described with
FACE2VOICE_FEATURES = "face2voice/features.npy"  # one row per id the config names


class Unusable(ValueError):
    """Prebuilt caches that cannot be used here; the message says why."""


def record(cache: Path, key: str, made_for: dict) -> None:
    """Write into `cache` what it was built for: its key and `made_for` (the cache format
    version, the personas', models' and settings' fingerprints)."""
    storage.write_json(cache / MANIFEST, {"key": key, "made_for": made_for})


def manifest(cache: Path) -> dict:
    """The manifest published with `cache`: its record plus the size and sha256 of every
    file (not hidden, not temporary) it holds."""
    recorded = json.loads((cache / MANIFEST).read_text())
    files = sorted(p for p in cache.rglob("*") if p.is_file() and p.name != MANIFEST
                   and not p.name.endswith(".tmp")
                   and not any(part.startswith(".") for part in p.relative_to(cache).parts))
    return {**recorded, "files": {p.relative_to(cache).as_posix():
                                  {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                                  for p in files}}


def install(repo: str, revision: str | None, made_for: dict, work: Path,
            backbone: dict) -> None:
    """Copy the prebuilt caches in `repo` at `revision` (a Hub repo, or a local folder) into
    the new directory `work`, after checking them against `made_for` (and face to voice's
    `backbone` entry, {"name_or_path", "revision"}, against this start's). Raises `Unusable` (or
    `hub.WeightsNotFound` when the repo cannot be reached) saying why they cannot be used."""
    what = "prebuilt persona caches"
    listed = hub.resolve_dir(repo, revision, allow_patterns=(MANIFEST,), what=what).path
    try:
        given = json.loads((listed / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Unusable(f"it has no {MANIFEST}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Unusable(f"its {MANIFEST} is not JSON") from None
    if not isinstance(given, dict) or not isinstance(given.get("made_for"), dict) \
            or not isinstance(given.get("files"), dict):
        raise Unusable(f"its {MANIFEST} lacks \"made_for\" or \"files\"")
    theirs = given["made_for"]
    if theirs.get("cache_format_version") != made_for["cache_format_version"]:
        raise Unusable(f"they are of cache format {theirs.get('cache_format_version')!r} and "
                       f"this voiceface reads format {made_for['cache_format_version']}")
    differ = [name for name in made_for if theirs.get(name) != made_for[name]]
    if differ:
        raise Unusable(f"they were built for another {', '.join(differ)} than this start's "
                       "(rebuild them with `publish-personas` for these models)")
    for relative, expected in given["files"].items():
        if not _PLAIN_PATH.fullmatch(relative) or not any(
                Path(relative).match(p) for p in CACHE_PATTERNS):
            raise Unusable(f"its manifest names {relative!r}, not a cache file")
        if not isinstance(expected, dict) or not isinstance(expected.get("bytes"), int):
            raise Unusable(f"its manifest gives no size for {relative}")
    total = sum(expected["bytes"] for expected in given["files"].values())
    if total > MAX_CACHE_BYTES:
        raise Unusable(f"its manifest lists {total / 2**20:.0f} MiB, more than the "
                       f"{MAX_CACHE_BYTES / 2**20:.0f} MiB persona caches take")
    # only what the manifest names is fetched, once its sizes are known
    source = hub.resolve_dir(repo, revision, allow_patterns=sorted(given["files"]),
                             what=what).path
    for relative, expected in given["files"].items():
        path = source / relative
        if not path.is_file() or not isinstance(expected, dict) \
                or path.stat().st_size != expected.get("bytes") \
                or _sha256(path) != expected.get("sha256"):
            raise Unusable(f"{relative} is missing or damaged (its size or sha256 is not the "
                           "manifest's)")
    if not any(name.startswith("mapper/") for name in given["files"]):
        raise Unusable("they hold no mapper/")
    for relative in given["files"]:
        target = work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.write_bytes(target, (source / relative).read_bytes())
    _check_face2voice(work, made_for, backbone)
    storage.write_json(work / MANIFEST, given)


def _check_face2voice(work: Path, made_for: dict, backbone: dict) -> None:
    """Refuse a face2voice/ that a face query would refuse or mis-load later (another
    backbone, revision or models; ids and features that do not match): a start can still
    fall back to building, a query could not."""
    config = work / FACE2VOICE_CONFIG
    if not config.is_file():
        return
    spec = json.loads(config.read_text())
    wanted = {"backbone": backbone, "encoder_fingerprint": made_for["encoder"],
              "generator_fingerprint": made_for["generator"]}
    differ = [key for key, value in wanted.items() if spec.get(key) != value]
    if differ:
        raise Unusable(f"{FACE2VOICE_CONFIG} names another {', '.join(differ)} than this "
                       "start's")
    ids = spec.get("ids")
    features = np.load(work / FACE2VOICE_FEATURES, allow_pickle=False)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) \
            or features.ndim != 2 or len(features) != len(ids):
        raise Unusable(f"{FACE2VOICE_CONFIG}'s ids do not match {FACE2VOICE_FEATURES}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()

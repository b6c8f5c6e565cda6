"""Where weights come from: a local directory or file, or the Hugging Face Hub.

Every component resolves its weights here, so a local path works wherever a Hub id does, the
normal Hub cache is used, `HF_HUB_OFFLINE=1` is respected, and a failure names the repo and
file and says how to use a local copy instead. The resolved location carries a fingerprint
(repo id + commit, or a content hash of local files) that derived artifacts record.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

HASH_CHUNK_BYTES = 8 * 1024 * 1024  # bytes read at a time when hashing a file
FINGERPRINT_HEX = 16  # hex digits kept of a content hash
SAFE_MODEL_FILES = ("*.json", "*.safetensors")  # what to fetch: configs and weights, no pickles

_HUB_ERRORS = (LocalEntryNotFoundError, EntryNotFoundError, OfflineModeIsEnabled,
               RepositoryNotFoundError, RevisionNotFoundError, HfHubHTTPError, HFValidationError,
               OSError)


class WeightsNotFound(ValueError):
    """Weights could not be found locally or fetched from the Hub."""


@dataclass(frozen=True)
class Resolved:
    """A local path holding the weights and the fingerprint of what it holds."""

    path: Path
    fingerprint: str


def is_local(name_or_path: str | os.PathLike) -> bool:
    """True when `name_or_path` names an existing local file or directory."""
    return Path(name_or_path).expanduser().exists()


def resolve_safetensors_dir(name_or_path: str | os.PathLike, revision: str | None,
                            what: str) -> Resolved:
    """`resolve_dir` for a `transformers` checkpoint: only its configs and safetensors
    weights are fetched, and one without safetensors weights is refused."""
    local = resolve_dir(name_or_path, revision, allow_patterns=SAFE_MODEL_FILES, what=what)
    if not any(local.path.glob("*.safetensors")):
        raise WeightsNotFound(f"The {what} {name_or_path} has no .safetensors weights. voiceface "
                              "loads weights only as safetensors: pickled weights "
                              "(pytorch_model.bin) can run code when loaded. Use a revision "
                              "with model.safetensors, or convert the weights in a sandbox.")
    return local


def resolve_dir(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    *,
    allow_patterns: Sequence[str] | None = None,
    what: str = "weights",
) -> Resolved:
    """A local directory for `name_or_path`: itself if it exists, else a Hub snapshot.

    `allow_patterns` limits the download (e.g. only config and safetensors files).
    """
    if is_local(name_or_path):
        path = Path(name_or_path).expanduser().resolve()
        if not path.is_dir():
            raise WeightsNotFound(f"{what}: {path} is a file; expected a directory.")
        return Resolved(path, f"local:{content_hash(path, allow_patterns)}")
    repo_id = str(name_or_path)
    try:
        path = Path(snapshot_download(repo_id, revision=revision,
                                      allow_patterns=list(allow_patterns or []) or None))
    except _HUB_ERRORS as err:
        raise _not_found(what, repo_id, revision, None, err) from err
    return Resolved(path, f"{repo_id}@{path.name}")  # snapshot folders are named by commit


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    revision: str | None = None,
    *,
    what: str = "weights",
) -> Resolved:
    """A local file: `name_or_path` itself, `name_or_path/filename`, or from a Hub repo."""
    if is_local(name_or_path):
        path = Path(name_or_path).expanduser().resolve()
        if path.is_dir():
            path = path / filename
        if not path.is_file():
            raise WeightsNotFound(f"{what}: {path} does not exist.")
        return Resolved(path, f"local:{content_hash(path)}")
    repo_id = str(name_or_path)
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision))
    except _HUB_ERRORS as err:
        raise _not_found(what, repo_id, revision, filename, err) from err
    return Resolved(path, f"{repo_id}@{path.parent.name}/{filename}")


def content_hash(path: Path, patterns: Sequence[str] | None = None) -> str:
    """sha256 over the names and bytes of a file, or of a directory's files matching `patterns`."""
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and (not patterns or any(p.match(pat) for pat in patterns)))
    for file in files:
        digest.update(file.relative_to(path.parent if path.is_file() else path).as_posix()
                      .encode())
        with open(file, "rb") as f:
            while chunk := f.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()[:FINGERPRINT_HEX]


def _not_found(what: str, repo_id: str, revision: str | None, filename: str | None,
               err: Exception) -> WeightsNotFound:
    if isinstance(err, HFValidationError):  # not a repo id, so it was meant as a path
        return WeightsNotFound(f"Could not load the {what}: {repo_id} does not exist (it is "
                               "neither a local path nor a valid Hub repo id). Check the path.")
    where = f"{repo_id}" + (f"/{filename}" if filename else "") + \
        (f" (revision {revision})" if revision else "")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else \
        f"it could not be fetched from the Hugging Face Hub ({type(err).__name__})"
    return WeightsNotFound(
        f"Could not load the {what} {where}: {why}. Check the repo id and your connection, "
        "or pass a local directory or file instead of the repo id (for a test setup without "
        "the Hub: `python -m voiceface dev-bundle DIR`)."
    )

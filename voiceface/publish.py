"""Put a bundle on the Hugging Face Hub as a model repo, and the app as a Space pointing at it.

    plan = plan_publish("index/", repo="me/my-gallery", space="me/my-voiceface", app_dir=".")
    print(plan.describe())      # exactly what would go where (`--dry-run`)
    publish(plan)               # create the repos (model repo private by default), upload

Biometric data stays home unless asked for: every enrolled person must have consent or
nothing is published, and voice recordings (and the build's per-window voice embeddings,
kept for evaluation) are left out unless `include_voices=True`. The build's cache stays home,
and so do the local parts of its report (`build.json`): the people folder's path and the list
of problems, whose paths can name people who were never enrolled (no consent, say). The
gallery's people go with an allowlist of fields (id, name, faces, consent, counts), not the
other keys of their `person.json` (a phone number, say), and the evaluation report without
the people folder's path. No uploaded file may contain that path or the bundle's own: a plan
that would upload one is refused.
The default personas' synthetic text-to-speech voices are their definition, not anyone's
voice, so a personas bundle carries them.

A personas bundle's caches, built for its models, go to a model repo of their own with
`plan_persona_caches` and `publish_persona_caches` (which returns the commit a bundle pins;
`voiceface.prebuilt` installs them at start).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import prebuilt, storage
from .audio import AUDIO_SUFFIXES
from .build import REPORT_FILE, WINDOWS_FILE, WINDOWS_INDEX
from .enrolled import Enrolled
from .gallery_files import MANIFEST
from .personas import PERSONAS_FILE, VOICES_DIR, load_personas
from .bundle import BUNDLE_FILE, EXAMPLES_DIR, GALLERY_DIR, BundleSpec

SPACE_FILES = ("app.py", "requirements.txt", "packages.txt")  # from the app's directory
SPACE_CARD = "README.md"  # the app's README: the Space's card, with its title changed
SPACE_DOCS = ("docs", "CONTRIBUTING.md", "benchmarks/README.md")  # what the card links to,
# uploaded when the app's directory has them (a checkout does)
PACKAGE_DIR = "voiceface"  # the library, uploaded whole (subpackages and data) to a Space
SPACE_PERSONAS = "assets/personas"  # where a Space keeps the personas of a default bundle
# build.json published: these keys only (not the people folder's path or the problem list)
PUBLIC_REPORT_KEYS = ("enrolled", "seconds", "cached", "mapper", "config", "calibration",
                      "face2voice")
# the gallery's people.json published: these fields of each person only (not `extra`)
PUBLIC_PERSON_KEYS = ("id", "name", "faces", "consent", "n_clips")
EVAL_REPORT = "eval/report.json"  # where `python -m voiceface eval` writes by default
# eval/report.json published: these keys only (not the people folder's path)
PUBLIC_EVAL_KEYS = ("people", "seed", "folds", "false_alarm_rate", "identification",
                    "generation", "generated_latents", "gallery_calibration", "face2voice",
                    "verification")


class PublishError(ValueError):
    """The bundle cannot be published as asked."""


@dataclass(frozen=True)
class Upload:
    """One file: local bytes (a path, or content made for the upload) -> repo path."""

    repo_id: str
    repo_type: str  # "model" or "space"
    path_in_repo: str
    source: Path | None = None
    content: bytes | None = None

    def data(self) -> Path | bytes:
        return self.source if self.source is not None else self.content


@dataclass
class PublishPlan:
    """What `publish` does: repos to create, files to upload, Space variables to set."""

    repo: str | None
    space: str | None
    private: bool
    uploads: list[Upload] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # local files deliberately not uploaded
    variables: dict[str, str] = field(default_factory=dict)  # Space variables
    notes: list[str] = field(default_factory=list)

    def targets(self) -> Iterator[tuple[str, str, list[Upload]]]:
        """(repo id, repo type, its uploads) for the model repo and the Space, where given."""
        for repo_id, repo_type in ((self.repo, "model"), (self.space, "space")):
            if repo_id is not None:
                yield repo_id, repo_type, [u for u in self.uploads
                                           if u.repo_id == repo_id and u.repo_type == repo_type]

    def describe(self) -> str:
        """The plan as people read it: one line per file, grouped by repo."""
        lines = []
        for repo_id, repo_type, files in self.targets():
            visibility = "private" if self.private else "public"
            size = sum(len(u.content) if u.content is not None else u.source.stat().st_size
                       for u in files)
            lines.append(f"{repo_type} repo {repo_id} ({visibility}): {len(files)} files, "
                         f"{size / 1e6:.1f} MB")
            for u in files:
                origin = str(u.source) if u.source is not None else "(generated)"
                lines.append(f"  {u.path_in_repo}  <-  {origin}")
        for key, value in self.variables.items():
            lines.append(f"space variable {key}={value}")
        if self.left_out:
            lines.append(f"left out (voice recordings and per-window voice embeddings; "
                         f"--include-voices uploads them): "
                         f"{len(self.left_out)} files")
            lines += [f"  {path}" for path in self.left_out]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def plan_publish(bundle: str | Path, *, repo: str | None = None, space: str | None = None,
                 private: bool = True, include_voices: bool = False,
                 app_dir: str | Path = ".") -> PublishPlan:
    """Work out, without touching the network, what publishing `bundle` would upload.
    A Space gets the app from `app_dir` (default: the current directory): its app.py,
    requirements.txt, packages.txt, README.md (the Space card), the whole `voiceface/` and
    the pages the card links to (`SPACE_DOCS`)."""
    if not repo and not space:
        raise PublishError("Nothing to publish to: give --repo USER/NAME (the bundle as a model "
                           "repo) and/or --space USER/NAME (the app).")
    for repo_id in filter(None, (repo, space)):
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise PublishError(f"{repo_id!r} is not a Hub repo id; write it as USER/NAME.")
    root = Path(bundle).resolve()
    spec_path = root / BUNDLE_FILE
    if not spec_path.is_file():
        raise PublishError(f"{root} is not a voiceface bundle (no {BUNDLE_FILE}); build one "
                           "with `python -m voiceface build PEOPLE_DIR --out DIR`.")
    checked = BundleSpec.read(root)  # a bad bundle.json is refused here, not on the Hub
    if checked.test_weights:
        raise PublishError(f"{root} is a dev bundle of tiny random test models; publish a "
                           "bundle built from real data instead.")
    spec = json.loads(spec_path.read_text())  # published as written (personas: moved)
    plan = PublishPlan(repo, space, private)
    for what, model in (("encoder", checked.encoder), ("generator", checked.generator)):
        if model.name_or_path.startswith(("/", "~", "..")):  # a path outside the bundle
            plan.notes.append(f"bundle.json names a local {what} ({model.name_or_path}); "
                              f"elsewhere it will not be found: build with a Hub {what} to "
                              "publish")
    personas_dir = None if checked.personas_dir is None else checked.personas_dir.resolve()
    if personas_dir is None:
        _check_consent(root)
    if repo:
        if personas_dir is not None:
            _add_personas_bundle(plan, spec, personas_dir, repo, "model", "personas", "")
        else:
            _add_built_bundle(plan, root, repo, include_voices)
    if space:
        _add_space(plan, space, spec, personas_dir, Path(app_dir))
    _check_no_local_paths(plan, _local_paths(root))
    return plan


def publish(plan: PublishPlan, api=None) -> list[str]:
    """Carry out a plan: create the repos (exist_ok), one commit per repo, set variables.
    Returns the URLs of the commits. `api` is a `huggingface_hub.HfApi` (default: a new one,
    using the logged-in token)."""
    return [info.commit_url for info in
            _commit(plan, api, "Publish with `python -m voiceface publish`")]


def _commit(plan: PublishPlan, api, message: str) -> list:
    """`publish`'s work; the commits' `huggingface_hub.CommitInfo`s."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = api or HfApi()
    commits = []
    for repo_id, repo_type, files in plan.targets():
        api.create_repo(repo_id, repo_type=repo_type, private=plan.private, exist_ok=True,
                        **({"space_sdk": "gradio"} if repo_type == "space" else {}))
        operations = [CommitOperationAdd(u.path_in_repo, u.data()) for u in files]
        commits.append(api.create_commit(repo_id, operations, repo_type=repo_type,
                                         commit_message=message))
    for key, value in plan.variables.items():
        api.add_space_variable(plan.space, key, value)
    return commits


def plan_persona_caches(cache: str | Path, repo: str, private: bool = True) -> PublishPlan:
    """What `publish-personas` uploads to the model repo `repo` (or writes to a folder standing
    in for it, `write_plan`): the persona caches in the directory `cache`
    (`voiceface.loading.prepare_derived` of a personas bundle) and their manifest
    (`voiceface.prebuilt.MANIFEST`: what they were built for, every file's size and sha256).
    Refused when a file holds the cache's local path."""
    cache = Path(cache).resolve()
    made = prebuilt.manifest(cache)
    plan = PublishPlan(repo, None, private)
    plan.uploads += [Upload(repo, "model", relative, source=cache / relative)
                     for relative in made["files"]]
    plan.uploads.append(Upload(repo, "model", prebuilt.MANIFEST, content=_json_bytes(made)))
    local = [name for name, value in made["made_for"].items()
             if isinstance(value, str) and value.startswith(("local:", "/"))]
    if local:
        plan.notes.append(f"built for local files ({', '.join(local)}): only a start with the "
                          "same files uses these caches; build with Hub models to share them")
    _check_no_local_paths(plan, [str(cache)])
    return plan


def publish_persona_caches(plan: PublishPlan, api=None) -> str:
    """Upload a `plan_persona_caches` plan to the Hub in one commit; its commit (40 hex
    digits), the revision a bundle pins."""
    (info,) = _commit(plan, api, "Persona caches from `python -m voiceface publish-personas`")
    return info.oid


def write_plan(plan: PublishPlan, directory: str | Path) -> list[Path]:
    """Write the files of `plan`'s model repo into `directory` instead of uploading them (a
    local folder a bundle can name in place of the repo); the files written."""
    written = []
    for upload in plan.uploads:
        if upload.repo_id == plan.repo and upload.repo_type == "model":
            target = Path(directory) / upload.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            data = upload.data()
            written.append(storage.write_bytes(
                target, data if isinstance(data, bytes) else data.read_bytes()))
    return written


def _check_consent(root: Path) -> None:
    manifest = root / "gallery" / MANIFEST
    if not manifest.is_file():
        raise PublishError(f"{root} has no gallery ({manifest} is missing); build it first.")
    missing = [p.id for p in Enrolled.load(root / "gallery").gallery.people if not p.consent]
    if missing:
        raise PublishError(
            f"{len(missing)} enrolled people have no recorded consent: {', '.join(missing)}. "
            "Nothing was published. Record their consent (person.json \"consent\": true) and "
            "rebuild, or remove them from the people folder and rebuild.")


def _files(directory: Path) -> list[Path]:
    """Files to publish: not hidden (the build's `.cache`, `.lock`, `.gitkeep`), not temporary
    files."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
                  and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def _add_built_bundle(plan: PublishPlan, root: Path, repo: str, include_voices: bool) -> None:
    for path in _files(root):
        relative = path.relative_to(root).as_posix()
        is_voice = path.suffix.lower() in AUDIO_SUFFIXES or relative.startswith(
            f"{EXAMPLES_DIR}/") or relative in (WINDOWS_FILE, WINDOWS_INDEX)
        if is_voice and not include_voices:
            plan.left_out.append(relative)
        elif relative == REPORT_FILE:
            report = {k: v for k, v in json.loads(path.read_text()).items()
                      if k in PUBLIC_REPORT_KEYS}
            plan.uploads.append(Upload(repo, "model", relative, content=_json_bytes(report)))
            plan.notes.append(f"{REPORT_FILE} goes without the local people folder's path and "
                              "the build's problem list (paths that can name people who were "
                              "not enrolled)")
        elif relative == EVAL_REPORT:
            report = {k: v for k, v in json.loads(path.read_text()).items()
                      if k in PUBLIC_EVAL_KEYS}
            plan.uploads.append(Upload(repo, "model", relative, content=_json_bytes(report)))
            plan.notes.append(f"{EVAL_REPORT} goes without the local people folder's path")
        elif _is_gallery_people(relative):
            people = [{k: person[k] for k in PUBLIC_PERSON_KEYS if k in person}
                      for person in json.loads(path.read_text())]
            plan.uploads.append(Upload(repo, "model", relative, content=_json_bytes(people)))
            plan.notes.append(f"{relative} carries only {', '.join(PUBLIC_PERSON_KEYS)} of each "
                              "person (not the other keys of their person.json)")
        else:
            plan.uploads.append(Upload(repo, "model", relative, source=path))


def _is_gallery_people(relative: str) -> bool:
    """Whether a bundle path is the gallery's people list (gallery/data-<id>/people.json)."""
    parts = relative.split("/")
    return len(parts) == 3 and parts[0] == GALLERY_DIR and parts[1].startswith("data-") and \
        parts[2] == "people.json"


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode()


def _local_paths(root: Path) -> list[str]:
    """Paths that must not leave the machine: the bundle's own and the people folder's the
    build and the evaluation recorded."""
    paths = [str(root)]
    for report in (root / REPORT_FILE, root / EVAL_REPORT):
        if report.is_file():
            people_dir = json.loads(report.read_text()).get("people_dir")
            if people_dir:
                paths.append(str(people_dir))
    return paths


def _check_no_local_paths(plan: PublishPlan, paths: list[str]) -> None:
    """Refuse a plan that would upload a file containing one of these local paths."""
    needles = [p.encode() for p in paths]
    for upload in plan.uploads:
        data = upload.content if upload.content is not None else upload.source.read_bytes()
        for path, needle in zip(paths, needles):
            if needle in data:
                raise PublishError(
                    f"{upload.path_in_repo} (for {upload.repo_id}) contains the local path "
                    f"{path}; nothing was published. Remove the path from that file, or "
                    "remove the file from the bundle, and publish again.")


def _add_personas_bundle(plan: PublishPlan, spec: dict, personas_dir: Path, repo_id: str,
                         repo_type: str, personas_in_repo: str, bundle_in_repo: str) -> None:
    """bundle.json (pointing at the personas' new place) + personas.json + the voices."""
    load_personas(personas_dir)  # refuse a broken personas folder now, not on the Space
    bundle_dir = Path(bundle_in_repo)
    relative = Path(*[".."] * len(bundle_dir.parts), personas_in_repo).as_posix()
    content = (json.dumps({**spec, "personas": relative}, indent=1) + "\n").encode()
    plan.uploads.append(Upload(repo_id, repo_type, (bundle_dir / BUNDLE_FILE).as_posix(),
                               content=content))
    for path in [personas_dir / PERSONAS_FILE, *_files(personas_dir / VOICES_DIR)]:
        plan.uploads.append(Upload(repo_id, repo_type, f"{personas_in_repo}/"
                                   f"{path.relative_to(personas_dir).as_posix()}", source=path))
    plan.notes.append(f"the personas' voices ({personas_in_repo}/{VOICES_DIR}) are synthetic "
                      "text-to-speech, not recordings of people")


def _add_space(plan: PublishPlan, space: str, spec: dict, personas_dir: Path | None,
               app_dir: Path) -> None:
    missing = [name for name in (*SPACE_FILES, SPACE_CARD) if not (app_dir / name).is_file()]
    missing += [] if (app_dir / PACKAGE_DIR).is_dir() else [f"{PACKAGE_DIR}/"]
    if missing:
        raise PublishError(f"{app_dir.resolve()} is not the app's directory: it has no "
                           f"{', '.join(missing)}. Run publish from the folder holding app.py "
                           "and voiceface/, or give that folder with --app-dir.")
    code = [app_dir / name for name in SPACE_FILES] + [
        path for path in _files(app_dir / PACKAGE_DIR)
        if "__pycache__" not in path.parts and path.suffix != ".pyc"]
    for name in SPACE_DOCS:
        docs = app_dir / name
        code += _files(docs) if docs.is_dir() else [docs] if docs.is_file() else []
    for path in code:
        plan.uploads.append(Upload(space, "space", path.relative_to(app_dir).as_posix(),
                                   source=path))
    if plan.repo:
        plan.variables["VOICEFACE_BUNDLE"] = plan.repo
        if plan.private:
            plan.notes.append(f"{plan.repo} is private: give the Space a secret HF_TOKEN with "
                              "read access to it, or publish the repo with --public")
    elif personas_dir is not None:
        _add_personas_bundle(plan, spec, personas_dir, space, "space", SPACE_PERSONAS, "index")
    else:
        raise PublishError("A Space needs a bundle on the Hub to point at: publish a built "
                           "bundle with --repo USER/NAME together with --space.")
    caches = spec.get("persona_caches") or {}  # a Hub repo pins a revision; a folder does not
    caches = caches.get("repo") if personas_dir and caches.get("revision") else None
    plan.uploads.append(Upload(space, "space", SPACE_CARD,
                               content=_space_readme(app_dir, space, plan.repo, caches)))


def _space_readme(app_dir: Path, space: str, repo: str | None,
                  persona_caches: str | None = None) -> bytes:
    """The app's README (its Space card) with the Space's title, and the bundle repo and the
    prebuilt persona caches' repo preloaded (the whole repo: the card's preload list pins
    no revision without naming every file; the start downloads the bundle's pinned commit,
    from this preload when it is the repo's newest)."""
    text = (app_dir / SPACE_CARD).read_text()
    _, front, body = text.split("---\n", 2)
    lines = front.splitlines()
    lines = [f"title: {space.split('/')[1]}" if line.startswith("title:") else line
             for line in lines]
    for preloaded in filter(None, (repo, persona_caches)):
        lines.insert(lines.index("models:") + 1, f"  - {preloaded}")
        lines.insert(lines.index("preload_from_hub:") + 1, f"  - {preloaded}")
    return ("---\n" + "\n".join(lines) + "\n---\n" + body).encode()

"""From a folder of consenting people to a bundle: `python -m voiceface build PEOPLE --out index/`.

    people/<person_id>/person.json   {"name": ..., "consent": true}  (consent is required)
    people/<person_id>/face*.jpg|png|webp      one or more photos; the best aligned one is used
    people/<person_id>/voice*.wav|flac|...     one or more recordings (~90 s in all is ideal)

Every recording is embedded in 10 s windows (kept in `windows.npy` for evaluation), and each
window's voice traits are measured for the mapper (`voiceface.trait_inputs`); a person's
embedding is the renormalised mean. A person with a single recording has it split
in time before windowing (`split_for_evaluation`: the first 70 % and the last 30 %, each
cut into windows on its own), so that `eval` can hold out the last part without any window
overlapping the enrollment; the gallery pools the windows of both parts. The open-set
threshold is calibrated on those windows at `BuildConfig.far` (`voiceface.calibration`:
each window's best score among the other people's gallery embeddings is a non-mated
trial); with a single person there is nothing to calibrate on, and the previous build's
threshold and its record stay. Every photo is aligned; the best (eyes found,
largest face) is inverted into StyleGAN2's W space. Then the mapper is trained (with at
least 2 people), the aligned faces are described by the inversion's backbone for face to
voice (`voiceface.face2voice`: features, and the reverse mapper with at least 2 people), and
the bundle written; the gallery, thresholds, mapper and face to voice are made by the recipe
every bundle shares (`voiceface.assemble`). Work per file is cached under `<out>/.cache` by
content hash, so an unchanged person costs nothing on the next build. Bad files are reported
by path with the reason and skipped.

The whole bundle is written into a temporary folder beside `out` and swapped in at the end
(`storage.replace_dir`): a build that fails or is killed at any point leaves the old bundle or
the new one, never a mix. The new bundle holds only what this build made, plus the cache and
the example recordings (`voices/`) of the old one; the rest (a mapper from more people, an
evaluation report of the old gallery) goes with the old bundle.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import faces, storage
from . import verification
from .audio import AUDIO_SUFFIXES, load_audio
from .assemble import Enrollee, Models, assemble
from .calibration import FALSE_ALARM_RATE, Calibration
from .gallery import ID_PATTERN
from .invert import InversionConfig, Inverter, content_sha256
from .names import check_distinct, clean_name
from .bundle import (BUNDLE_FILE, BUNDLE_FORMAT_VERSION, DEFAULT_GENERATOR,
                     DEFAULT_GENERATOR_FILE, DEFAULT_GENERATOR_REVISION, DEFAULT_TRUNCATION,
                     EXAMPLES_DIR, GALLERY_DIR)
from .loading import load_generator
from .stylegan2 import Generator
from .trait_inputs import TRAIT_FEATURES, voice_traits_fingerprint, window_trait_features
from .voice import (DEFAULT_ENCODER, DEFAULT_ENCODER_REVISION, ENROLL_PART, HELD_OUT_PART,
                    HOLD_OUT_FRACTION, VoiceEncoder, split_for_evaluation)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
PERSON_FILE = "person.json"
CACHE = ".cache"  # inside the output bundle
CARRIED = (CACHE, EXAMPLES_DIR)  # what a new bundle takes over from the old one
WORK_SUFFIX = ".build"  # the new bundle is written to `.<out name>.<random>.build` beside it
WINDOWS_FILE = "windows.npy"  # [M, D] per-window embeddings of every enrolled recording
WINDOWS_INDEX = "windows.json"  # row -> person, recording, start second
REPORT_FILE = "build.json"


@dataclass(frozen=True)
class BuildConfig:
    """Which models and settings a build uses (all recorded in the bundle)."""

    encoder: str = DEFAULT_ENCODER
    encoder_revision: str | None = DEFAULT_ENCODER_REVISION
    layer: int = -1
    generator: str = DEFAULT_GENERATOR
    generator_file: str = DEFAULT_GENERATOR_FILE
    generator_revision: str | None = DEFAULT_GENERATOR_REVISION
    inversion: InversionConfig = field(default_factory=InversionConfig)
    far: float = FALSE_ALARM_RATE  # target false-alarm rate of the calibrated threshold
    truncation: float = DEFAULT_TRUNCATION
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.far < 1:  # checked before the work, not after every face is inverted
            raise ValueError(f"The false-alarm rate must be between 0 and 1, got {self.far}; "
                             "e.g. 0.01 for 1 %.")


@dataclass
class PersonFolder:
    """One folder of the people folder, as found on disk."""

    id: str
    name: str
    photos: list[Path]
    voices: list[Path]
    meta: dict


@dataclass
class BuildReport:
    """What a build did: who was enrolled, what was skipped and why, and how long it took."""

    enrolled: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, all people
    cached: dict[str, int] = field(default_factory=dict)  # files served from the cache
    mapper: dict | None = None
    calibration: dict | None = None  # the gallery's `Calibration`, None when never measured
    verification: dict | None = None  # its `VerificationCalibration`, None when not measured
    face2voice: dict | None = None  # the reverse mapper's training, None without one

    def summary(self) -> str:
        lines = [f"enrolled {len(self.enrolled)} people; {len(self.problems)} problems"]
        lines += [f"  {path}: {reason}" for path, reason in self.problems]
        lines.append("open set: " + (Calibration.from_dict(self.calibration).describe()
                                     if self.calibration else "threshold not calibrated"))
        lines.append("verification: " + (
            verification.VerificationCalibration.from_dict(self.verification).describe()
            if self.verification else "threshold not calibrated (fewer than 2 people)"))
        lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        return "\n".join(lines)


def scan_people(people_dir: str | Path) -> tuple[list[PersonFolder], list[tuple[str, str]]]:
    """The people folder's usable people, and a (path, reason) for everything skipped."""
    root = Path(people_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give the folder that holds one "
                                "sub-folder per person.")
    people, problems = [], []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    same_id: dict[str, list[str]] = {}
    for folder in folders:
        same_id.setdefault(folder.name.lower(), []).append(folder.name)
    for folder in folders:
        person_id = folder.name
        if not ID_PATTERN.match(person_id):
            problems.append((str(folder), "folder name is not a valid person id (use letters, "
                             "digits, '_', '-', '.'); skipped"))
            continue
        if len(same_id[person_id.lower()]) > 1:  # ids are file names: case must not matter
            problems.append((str(folder), "duplicate id: " + ", ".join(
                same_id[person_id.lower()]) + " differ only in letter case; rename all but "
                "one; skipped"))
            continue
        try:
            meta = json.loads((folder / PERSON_FILE).read_text()) \
                if (folder / PERSON_FILE).is_file() else {}
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            problems.append((str(folder / PERSON_FILE), f"unreadable ({err}); skipped"))
            continue
        if meta.get("consent") is not True:
            problems.append((str(folder), f"no consent recorded ({PERSON_FILE} needs "
                             "\"consent\": true); not enrolled"))
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file())
        photos = [p for p in files if p.suffix.lower() in PHOTO_SUFFIXES]
        voices = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
        missing = [what for what, got in (("photo", photos), ("recording", voices)) if not got]
        if missing:
            problems.append((str(folder), f"no {' and no '.join(missing)}; not enrolled"))
            continue
        try:  # the same rules as a live enrollment: two people cannot look the same
            name = clean_name(meta.get("name") or person_id)
        except ValueError as err:
            problems.append((str(folder / PERSON_FILE), f"{err} Skipped."))
            continue
        people.append(PersonFolder(person_id, name, photos, voices, meta))
    return people, problems


def build(people_dir: str | Path, out: str | Path, config: BuildConfig = BuildConfig(), *,
          progress: bool = True) -> BuildReport:
    """Build (or update) the bundle at `out` from `people_dir`; see the module docstring."""
    out = Path(out)
    people, problems = scan_people(people_dir)
    report = BuildReport(problems=problems)
    if not people:
        raise ValueError(f"Nobody in {people_dir} can be enrolled:\n{report.summary()}")
    _check_replaceable(out)
    storage.restore_aside(out)  # a build killed in the middle of its swap
    for stale in out.parent.glob(f".{out.name}.*{WORK_SUFFIX}"):  # left by killed builds
        shutil.rmtree(stale, ignore_errors=True)
    cache = Cache(out / CACHE)
    encoder = VoiceEncoder.from_pretrained(config.encoder, config.encoder_revision,
                                           layer=config.layer)
    generator, gen_fp = load_generator(config.generator, config.generator_file,
                                       config.generator_revision)
    inverter = Inverter.from_pretrained(config.inversion)

    enrolled, all_rows = [], []  # the people to assemble; one row per window of theirs
    for person in tqdm(people, desc="people", disable=not progress):
        try:  # two people cannot look the same: the first usable one keeps the name
            check_distinct(person.name, ((p.id, p.name) for p in enrolled))
        except ValueError as err:
            report.problems.append((str(Path(people_dir) / person.id / PERSON_FILE),
                                    f"{err} Skipped."))
            continue
        with _timed(report.seconds, "embed"):
            windows, traits, rows = _embed_person(encoder, person, cache, report)
        with _timed(report.seconds, "align"):
            face = _best_face(person, cache, report)
        if not windows or face is None:
            report.problems.append((str(Path(people_dir) / person.id),
                                    "no usable " + ("recording" if not windows else "photo") +
                                    "; not enrolled"))
            continue
        with _timed(report.seconds, "invert"):
            w = _invert(inverter, generator, gen_fp, face, cache, report, config.seed,
                        progress)
        image = face[0]
        photo = cache.path("display", person.id, "jpg")
        image.resize((faces.DISPLAY_SIZE,) * 2).save(photo, quality=faces.DISPLAY_QUALITY)
        enrolled.append(Enrollee(
            person.id, person.name, np.concatenate(windows),
            [f"{row['recording']}#{row.get('part', '')}" for row in rows], photo, image, w,
            n_clips=len({r["recording"] for r in rows}),
            extra={k: v for k, v in person.meta.items() if k not in ("name", "consent")},
            window_traits=np.concatenate(traits)))
        all_rows += rows
    if not enrolled:
        raise ValueError(f"Nobody in {people_dir} could be enrolled:\n{report.summary()}")

    # Write the whole new bundle beside the old one, then swap it in (module docstring).
    work = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}{WORK_SUFFIX}"
    try:
        work.mkdir()
        made = assemble(enrolled, work, Models(
            encoder.fingerprint, encoder.dim, gen_fp, generator.style_dim, inverter.backbone,
            {"name_or_path": config.inversion.backbone, "revision": config.inversion.revision}),
            far=config.far, seed=config.seed, previous=out / GALLERY_DIR, progress=progress)
        for stage, seconds in made.seconds.items():
            report.seconds[stage] = report.seconds.get(stage, 0.0) + seconds
        if made.mapper is not None:
            report.mapper = {"best_epoch": made.mapper.best_epoch,
                             "val_loss": made.mapper.val_loss,
                             "baseline_val_loss": made.mapper.baseline_val_loss}
        report.face2voice = made.face2voice
        report.enrolled = [p.id for p in enrolled]
        records = made.enrolled.calibrations
        report.calibration = records.open_set and records.open_set.to_dict()
        report.verification = records.verification and records.verification.to_dict()
        storage.write_npy(work / WINDOWS_FILE, np.concatenate([p.windows for p in enrolled]))
        storage.write_json(work / WINDOWS_INDEX, all_rows)
        storage.write_json(work / REPORT_FILE, {**asdict(report), "config": _jsonable(config),
                                                "people_dir": str(Path(people_dir).resolve())})
        storage.write_json(work / BUNDLE_FILE, {
            "format_version": BUNDLE_FORMAT_VERSION,
            "encoder": {"name_or_path": config.encoder, "revision": config.encoder_revision,
                        "layer": config.layer},
            "generator": {"name_or_path": config.generator, "filename": config.generator_file,
                          "revision": config.generator_revision},
            "truncation": config.truncation,
        })
        for name in CARRIED:
            if (out / name).is_dir():
                storage.link_tree(out / name, work / name)
        storage.replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cache.prune()  # forget derived data of files that are gone (deleted people)
    return report


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not a bundle: a build replaces all of `out`."""
    if out.is_dir() and not (out / BUNDLE_FILE).is_file() and \
            any(p.name != CACHE for p in out.iterdir()):
        raise ValueError(f"{out} holds files but no {BUNDLE_FILE}, and a build replaces the "
                         "whole folder; give a new folder (or an existing bundle) as --out.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the bundle as --out.")


class Cache:
    """Per-file results keyed by content: `<root>/<kind>/<key>.<ext>`; tracks what was used."""

    def __init__(self, root: Path):
        self.root = root
        self.used: set[Path] = set()

    def path(self, kind: str, key: str, ext: str) -> Path:
        path = self.root / kind / f"{key}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.used.add(path)
        return path

    def prune(self) -> None:
        for path in self.root.glob("*/*"):
            if path.is_file() and path not in self.used:
                path.unlink()


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _embed_person(encoder: VoiceEncoder, person: PersonFolder, cache: Cache, report: BuildReport,
                  voices: list[Path] | None = None
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    """A person's window embeddings and the same windows' voice traits (one array per
    recording part each) and their rows in `windows.json`. A person with a single usable
    recording has it split in time (`split_for_evaluation`), also when their other recordings
    could not be decoded, so that `eval` always has held-out audio that no enrollment window
    overlaps."""
    voices = person.voices if voices is None else voices
    split = len(voices) == 1
    windows, traits, rows = [], [], []
    for path in voices:
        embedded = _embed(encoder, path, cache, report, split)
        if embedded is None:
            continue
        measured = _measure_traits(encoder, path, cache, split)
        for part, part_windows in embedded.items():
            windows.append(part_windows)
            traits.append(measured[part])
            rows += [{"person": person.id, "recording": path.name, "window": i,
                      **({"part": part} if split else {})} for i in range(len(part_windows))]
    usable = [p for p in voices if any(r["recording"] == p.name for r in rows)]
    if len(usable) == 1 < len(voices):  # the others failed: split the one left
        return _embed_person(encoder, person, cache, report, usable)
    return windows, traits, rows


def _measure_traits(encoder: VoiceEncoder, path: Path, cache: Cache, split: bool
                    ) -> dict[str, np.ndarray]:
    """The voice traits [n, TRAIT_FEATURES] of the encoder's windows of one recording (cached
    by content, windowing and `voice_traits_fingerprint`), per part as `_embed` returns them; the
    recording was decoded by `_embed` already."""
    sha, window = content_sha256(path), encoder.config
    parts = (ENROLL_PART, HELD_OUT_PART) if split else ("whole",)
    targets = {part: cache.path("voice-traits", _key(
        sha, voice_traits_fingerprint(), f"{window.window_seconds:g}/{window.hop_seconds:g}", part,
        str(HOLD_OUT_FRACTION)), "npy") for part in parts}
    if all(target.is_file() for target in targets.values()):
        return {part: np.load(target) for part, target in targets.items()}
    wav = load_audio(path, max_seconds=None)
    bounds = split_for_evaluation(len(wav)) if split else [("whole", 0, len(wav))]
    measured = {name: window_trait_features(wav[a:b], window.window_seconds,
                                            window.hop_seconds) for name, a, b in bounds}
    for part, target in targets.items():  # a recording too short to split holds nothing out
        storage.write_npy(target, measured.get(part, np.zeros((0, len(TRAIT_FEATURES)))))
    return {part: np.load(target) for part, target in targets.items()}


def _embed(encoder: VoiceEncoder, path: Path, cache: Cache, report: BuildReport,
           split: bool) -> dict[str, np.ndarray] | None:
    """Window embeddings [n, D] of one recording (cached): {"whole": ...}, or with `split`
    one entry per part of `split_for_evaluation`; None with the reason reported."""
    sha = content_sha256(path)
    if split:
        targets = {part: cache.path("voices", _key(sha, encoder.fingerprint, part,
                                                   str(HOLD_OUT_FRACTION)), "npy")
                   for part in (ENROLL_PART, HELD_OUT_PART)}
    else:
        targets = {"whole": cache.path("voices", _key(sha, encoder.fingerprint), "npy")}
    if all(target.is_file() for target in targets.values()):
        report.cached["voices"] = report.cached.get("voices", 0) + 1
        return {part: np.load(target) for part, target in targets.items()}
    try:
        wav = load_audio(path, max_seconds=None)
        parts = split_for_evaluation(len(wav)) if split else [("whole", 0, len(wav))]
        embedded = dict(zip([name for name, *_ in parts],
                            encoder.embed_windows_many([wav[a:b] for _, a, b in parts])))
    except ValueError as err:
        report.problems.append((str(path), str(err)))
        return None
    windows = {part: embedded.get(part, np.zeros((0, encoder.dim), np.float32))
               for part in targets}  # a recording too short to split holds nothing out
    for part, target in targets.items():
        storage.write_npy(target, windows[part])
    return windows


def _best_face(person: PersonFolder, cache: Cache, report: BuildReport):
    """(aligned photo, its cache key) to invert: eyes found beats eyes guessed, then the
    larger face; None when no photo has exactly one face."""
    candidates = []
    for path in person.photos:
        key = _key(content_sha256(path), str(faces.DEFAULT_SIZE))
        image_path = cache.path("aligned", key, "png")
        info_path = cache.path("aligned", key, "json")
        if info_path.is_file():  # aligned before, or refused before (same bytes, same answer)
            info = json.loads(info_path.read_text())
            report.cached["photos"] = report.cached.get("photos", 0) + 1
        else:
            try:
                aligned = faces.align(path, faces.DEFAULT_SIZE)
                info = {"eyes_detected": aligned.eyes_detected, "face_side": aligned.box.w}
                buffer = io.BytesIO()
                aligned.image.save(buffer, "PNG")
                storage.write_bytes(image_path, buffer.getvalue())
            except ValueError as err:
                info = {"error": str(err), "name": path.name}
            storage.write_json(info_path, info)
        if "error" in info:
            report.problems.append((str(path), info["error"].replace(info["name"], path.name)))
            continue
        candidates.append(((info["eyes_detected"], info["face_side"]), image_path, key))
    if not candidates:
        return None
    _, image_path, key = max(candidates, key=lambda c: c[0])
    return faces.load_image(image_path), key


def _invert(inverter: Inverter, generator: Generator, gen_fp: str,
            face: tuple[Image.Image, str], cache: Cache, report: BuildReport,
            seed: int, progress: bool) -> np.ndarray:
    """w [style_dim] of an aligned photo (cached by the photo's key, models and settings)."""
    image, key = face
    target = cache.path("latents", inverter.cache_key(key, gen_fp, seed), "npy")
    if target.is_file():
        report.cached["latents"] = report.cached.get("latents", 0) + 1
        return np.load(target)
    with tqdm(total=inverter.config.steps, desc="inverting the photo", leave=False,
              disable=not progress) as bar:
        def step(done: int, steps: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        w = inverter.invert(generator, image, seed=seed, progress=step).w
    storage.write_npy(target, w)
    return w


@contextmanager
def _timed(totals: dict[str, float], stage: str) -> Iterator[None]:
    """Add the time spent in the block to `totals[stage]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - start


def _jsonable(config: BuildConfig) -> dict:
    return json.loads(json.dumps(asdict(config), default=str))

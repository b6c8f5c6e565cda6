"""What a bundle says about itself: its `bundle.json`, read and checked (`BundleSpec.read`).

    spec = BundleSpec.read("index/")
    spec.encoder.name_or_path, spec.generator.revision, spec.truncation, spec.test_weights

A bundle is a directory (a Hub repo is downloaded to one first) holding `bundle.json`,
`gallery/` (a saved `Gallery`) and optionally `mapper/` (a trained `VoiceToLatent`) and
`voices/` (example recordings). A personas bundle names a personas folder instead
(`"personas": "../assets/personas"`, relative to the bundle); its gallery, mapper and
face2voice/ are caches built for the models it names, "backbone" among them (see
`voiceface.persona_cache`).

`bundle.json`, format 1; every key but "format_version" may be left out:

    {"format_version": 1,
     "description": "free text",
     "encoder": {"name_or_path": "anton-l/wav2vec2-base-superb-sv", "revision": "f00a71e...",
                 "layer": -1, "quantize": false},
     "generator": {"name_or_path": "aaronb/StyleGAN2",
                   "filename": "stylegan2-ffhq-config-f.pt", "revision": null},
     "truncation": 0.7,                   psi in [0, 1]: generated faces pulled toward ...
     "truncation_centre": "population",   ... the people's mean latent, or "generator" (w_avg);
                                          older bundles' "truncation_center" is read too
     "personas": "../assets/personas",    a personas bundle
     "far": 0.01,                         false-alarm rate of a personas gallery's thresholds
     "backbone": {"name_or_path": "facebook/dinov2-small", "revision": "ed25f3a..."},
                                          a personas bundle's face-to-voice features
     "face_traits": {"name_or_path": "openai/clip-vit-base-patch16", "revision": "57c2164..."},
                                          a personas bundle's face-trait model (apparent
                                          sex agreeing with the voice: persona_cache)
     "persona_caches": {"repo": "USER/NAME", "revision": "<40 hex digits>"},
                                          a personas bundle's caches prebuilt and published
                                          (`python -m voiceface publish-personas`): a Hub
                                          repo at a commit, or a local folder (no revision)
     "test_weights": false}               tiny random models (the app says so)

Relative model paths are looked up inside the bundle first (`BundleSpec.locate`). Reading a
spec loads no weights; a bad `bundle.json` is a `BundleError` saying what is wrong and what
to do.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from .population import POPULATION, TRUNCATION_CENTRES
from .thresholds import FALSE_ALARM_RATE

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT_VERSION = 1  # the newest format this voiceface reads
GALLERY_DIR, MAPPER_DIR = "gallery", "mapper"  # the derived artifacts inside a bundle
EXAMPLES_DIR = "voices"  # example recordings inside a bundle
# the models a bundle uses unless it names others, each pinned to a revision
DEFAULT_ENCODER = "anton-l/wav2vec2-base-superb-sv"
DEFAULT_ENCODER_REVISION = "f00a71e827414d3e04228bb97bbee924d3044e85"  # adds model.safetensors
DEFAULT_BACKBONE = "facebook/dinov2-small"
DEFAULT_BACKBONE_REVISION = "ed25f3a31f01632728cabb09d1542f84ab7b0056"
# zero-shot face traits (voiceface.face_traits); the last commit other projects pin (found,
# not checked against the Hub from here): a revision without model.safetensors is refused
DEFAULT_FACE_TRAITS = "openai/clip-vit-base-patch16"
DEFAULT_FACE_TRAITS_REVISION = "57c216476eefef5ab752ec549e440a49ae4ae5f3"
DEFAULT_GENERATOR = "aaronb/StyleGAN2"
DEFAULT_GENERATOR_FILE = "stylegan2-ffhq-config-f.pt"
DEFAULT_GENERATOR_REVISION = "d9b2f23f21856b6bdfabd37de6f3d04cf39f891e"
DEFAULT_TRUNCATION = 0.7  # psi: pull generated faces toward the centre (1 = not at all)
DEFAULT_TRUNCATION_CENTRE = POPULATION

OLD_CENTRE_KEY = "truncation_center"  # how bundles written before 2026-12 spell "truncation_centre"
# The JSON types each key may hold (None: null).
_NUMBER = (int, float)
ENCODER_KEYS = {"name_or_path": (str,), "revision": (str, None), "layer": (int,),
                "quantize": (bool,)}
GENERATOR_KEYS = {"name_or_path": (str,), "filename": (str, None), "revision": (str, None)}
BACKBONE_KEYS = {"name_or_path": (str,), "revision": (str, None)}
FACE_TRAITS_KEYS = BACKBONE_KEYS
PERSONA_CACHES_KEYS = {"repo": (str,), "revision": (str, None)}
COMMIT = re.compile(r"[0-9a-f]{40}")  # a Hub commit: a branch or a tag can move
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # USER/NAME; other names are folders
BUNDLE_KEYS = {"format_version": (int,), "description": (str,), "encoder": (dict,),
               "generator": (dict,), "truncation": _NUMBER, "truncation_centre": (str,),
               OLD_CENTRE_KEY: (str,),
               "personas": (str,), "far": _NUMBER, "backbone": (dict,), "face_traits": (dict,),
               "persona_caches": (dict,), "test_weights": (bool,)}


class BundleError(ValueError):
    """A bundle's `bundle.json` is missing, or says something voiceface cannot use."""


@dataclass(frozen=True)
class EncoderSpec:
    """The voice encoder a bundle names: a Hub repo id or a path (relative: in the bundle)."""

    name_or_path: str = DEFAULT_ENCODER
    revision: str | None = DEFAULT_ENCODER_REVISION
    layer: int = -1  # hidden layer a plain wav2vec2 model is pooled over
    quantize: bool = False  # int8 on the CPU; its embeddings have their own fingerprint

    @classmethod
    def from_dict(cls, data: object, where: str = 'bundle.json "encoder"') -> EncoderSpec:
        """From a `bundle.json` "encoder" object; `BundleError` for wrong keys or types."""
        return cls(**_checked(data, where, ENCODER_KEYS))


@dataclass(frozen=True)
class GeneratorSpec:
    """The StyleGAN2 generator a bundle names: a saved-generator directory, a rosinality
    `.pt` file or a Hub repo holding either (`filename` inside it)."""

    name_or_path: str = DEFAULT_GENERATOR
    filename: str = DEFAULT_GENERATOR_FILE
    revision: str | None = None

    @classmethod
    def from_dict(cls, data: object, where: str = 'bundle.json "generator"') -> GeneratorSpec:
        """From a `bundle.json` "generator" object (a null filename: the default one);
        `BundleError` for wrong keys or types."""
        given = _checked(data, where, GENERATOR_KEYS)
        if given.get("filename") is None:
            given.pop("filename", None)
        return cls(**given)


@dataclass(frozen=True)
class BackboneSpec:
    """The perceptual backbone a personas bundle describes faces with for face to voice
    (`voiceface.face2voice`; a built bundle records its own in face2voice/): a Hub repo id
    or a path (relative: in the bundle)."""

    name_or_path: str = DEFAULT_BACKBONE
    revision: str | None = DEFAULT_BACKBONE_REVISION

    @classmethod
    def from_dict(cls, data: object, where: str = 'bundle.json "backbone"') -> BackboneSpec:
        """From a `bundle.json` "backbone" object; another backbone without a "revision" is
        taken at its latest (the default revision pins the default backbone only);
        `BundleError` for wrong keys or types."""
        given = _checked(data, where, BACKBONE_KEYS)
        if given.get("name_or_path", DEFAULT_BACKBONE) != DEFAULT_BACKBONE:
            given.setdefault("revision", None)
        return cls(**given)


@dataclass(frozen=True)
class FaceTraitsSpec:
    """The zero-shot image-text model a personas bundle reads its faces' apparent sex and age
    band with (`voiceface.face_traits`): a Hub repo id or a path (relative: in the bundle)."""

    name_or_path: str = DEFAULT_FACE_TRAITS
    revision: str | None = DEFAULT_FACE_TRAITS_REVISION

    @classmethod
    def from_dict(cls, data: object, where: str = 'bundle.json "face_traits"'
                  ) -> FaceTraitsSpec:
        """From a `bundle.json` "face_traits" object; another model without a "revision" is
        taken at its latest; `BundleError` for wrong keys or types."""
        given = _checked(data, where, FACE_TRAITS_KEYS)
        if given.get("name_or_path", DEFAULT_FACE_TRAITS) != DEFAULT_FACE_TRAITS:
            given.setdefault("revision", None)
        return cls(**given)


@dataclass(frozen=True)
class PersonaCachesSpec:
    """Where a personas bundle's caches come prebuilt (`voiceface.prebuilt`): a Hub repo at a
    pinned commit, or a local folder (relative: in the bundle) standing in for one."""

    repo: str
    revision: str | None = None

    @classmethod
    def from_dict(cls, data: object, root: Path | None = None,
                  where: str = 'bundle.json "persona_caches"') -> PersonaCachesSpec:
        """From a `bundle.json` "persona_caches" object; `BundleError` for wrong keys or types,
        no "repo", or a Hub repo without a commit (40 hex digits) as its "revision"."""
        given = _checked(data, where, PERSONA_CACHES_KEYS)
        if not given.get("repo"):
            raise BundleError(f'{where} has no "repo"; name the Hub repo USER/NAME that '
                              "`python -m voiceface publish-personas` uploaded to.")
        spec = cls(**given)
        local = Path(spec.repo).expanduser().is_absolute() or (
            root is not None and (root / spec.repo).is_dir()) or Path(spec.repo).is_dir() \
            or not HUB_REPO_ID.fullmatch(spec.repo)  # a folder, even one missing now
        if spec.revision is None and not local:
            raise BundleError(f'{where} names the Hub repo {spec.repo!r} without a "revision"; '
                              "pin the commit `publish-personas` printed (40 hex digits).")
        if spec.revision is not None and not COMMIT.fullmatch(spec.revision):
            raise BundleError(f'{where} "revision" is {spec.revision!r}; give the full commit '
                              "(40 lowercase hex digits) `publish-personas` printed, not a "
                              "branch or tag, which can move.")
        return spec


@dataclass(frozen=True)
class BundleSpec:
    """A bundle's `bundle.json`, typed and checked, with what it implies: where the bundle is
    (`root`; None for a pipeline assembled in code) and its example recordings."""

    root: Path | None = None
    format_version: int = BUNDLE_FORMAT_VERSION
    description: str = ""
    encoder: EncoderSpec = EncoderSpec()
    generator: GeneratorSpec = GeneratorSpec()
    truncation: float = DEFAULT_TRUNCATION
    truncation_centre: str = DEFAULT_TRUNCATION_CENTRE
    personas: str | None = None  # the personas folder, relative to `root`
    far: float = FALSE_ALARM_RATE  # target false-alarm rate of a personas gallery
    backbone: BackboneSpec = BackboneSpec()  # a personas bundle's face-to-voice features
    face_traits: FaceTraitsSpec = FaceTraitsSpec()  # a personas bundle's face-trait model
    persona_caches: PersonaCachesSpec | None = None  # a personas bundle's prebuilt caches
    face_traits_named: bool = False  # bundle.json or an override names it (not the default)
    test_weights: bool = False  # tiny random models: results mean nothing
    examples: tuple[Path, ...] = ()  # example recordings: `voices/`, or a few personas'

    def __post_init__(self) -> None:
        if not 1 <= self.format_version <= BUNDLE_FORMAT_VERSION:
            newer = self.format_version > BUNDLE_FORMAT_VERSION
            raise BundleError(
                f"format_version is {self.format_version}, and this voiceface reads format "
                f"{BUNDLE_FORMAT_VERSION}. " + (
                    "A newer voiceface wrote this bundle: upgrade voiceface." if newer else
                    f'Write "format_version": {BUNDLE_FORMAT_VERSION}, or build the bundle '
                    "again (`python -m voiceface build`)."))
        if not (math.isfinite(self.truncation) and 0 <= self.truncation <= 1):
            raise BundleError(f"truncation is {self.truncation}; give a psi between 0 (the "
                              "centre's face) and 1 (no truncation), e.g. 0.7.")
        if self.truncation_centre not in TRUNCATION_CENTRES:
            raise BundleError(f"truncation_centre is {self.truncation_centre!r}; use one of "
                              f"{', '.join(map(repr, TRUNCATION_CENTRES))}.")
        if not 0 < self.far < 1:
            raise BundleError(f"far is {self.far}; give a false-alarm rate between 0 and 1, "
                              "e.g. 0.01.")
        if self.personas == "":
            raise BundleError('personas is empty; name the personas folder (e.g. '
                              '"../assets/personas"), or leave the key out.')
        if self.persona_caches is not None and self.personas is None:
            raise BundleError('persona_caches names prebuilt caches of personas, but the bundle '
                              'names no "personas" folder; remove "persona_caches".')

    @classmethod
    def read(cls, root: str | Path) -> BundleSpec:
        """The spec of the bundle in directory `root`. Raises `BundleError` when it has no
        `bundle.json`, or one that is not JSON, holds unknown keys or values of the wrong
        type or range, or is of a format this voiceface does not read."""
        root = Path(root)
        path = root / BUNDLE_FILE
        if not path.is_file():
            raise BundleError(
                f"{root} is not a voiceface bundle (no {BUNDLE_FILE}). Build one with "
                "`python -m voiceface build`, or make a test bundle with "
                "`python -m voiceface dev-bundle DIR` and pass --bundle DIR.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = (f" ({err.msg} at line {err.lineno}, column {err.colno})"
                     if isinstance(err, json.JSONDecodeError) else " (not UTF-8 text)")
            raise BundleError(f"{path} is not JSON{where}. Correct it, or write the bundle "
                              "again (`python -m voiceface build`).") from None
        try:
            return cls.from_dict(data, root)
        except BundleError as err:
            raise BundleError(f"{root}: {err}") from None

    @classmethod
    def from_dict(cls, data: object, root: Path | None = None) -> BundleSpec:
        """A spec from the parsed `bundle.json` of the bundle at `root`; see `read`."""
        given = _checked(data, "bundle.json", BUNDLE_KEYS)
        if OLD_CENTRE_KEY in given:
            if "truncation_centre" in given:
                raise BundleError(f'bundle.json has both "truncation_centre" and its old '
                                  f'spelling "{OLD_CENTRE_KEY}"; keep "truncation_centre".')
            given["truncation_centre"] = given.pop(OLD_CENTRE_KEY)
        if "format_version" not in given:
            raise BundleError(f'bundle.json has no "format_version"; add "format_version": '
                              f"{BUNDLE_FORMAT_VERSION} (the format this voiceface reads).")
        if "encoder" in given:
            given["encoder"] = EncoderSpec.from_dict(given["encoder"])
        if "generator" in given:
            given["generator"] = GeneratorSpec.from_dict(given["generator"])
        if "backbone" in given:
            given["backbone"] = BackboneSpec.from_dict(given["backbone"])
        if "face_traits" in given:
            given["face_traits"] = FaceTraitsSpec.from_dict(given["face_traits"])
        if "persona_caches" in given:
            given["persona_caches"] = PersonaCachesSpec.from_dict(given["persona_caches"], root)
        spec = cls(root=root, face_traits_named="face_traits" in given, **given)
        return replace(spec, examples=spec._find_examples())

    @property
    def personas_dir(self) -> Path | None:
        """The personas folder of a personas bundle (None for a built bundle)."""
        if self.personas is None:
            return None
        return Path(self.personas) if self.root is None else self.root / self.personas

    @property
    def synthetic_personas(self) -> bool:
        """Whether the gallery is a personas folder's (synthetic people), not a built one."""
        return self.personas is not None

    def locate(self, name_or_path: str) -> str:
        """A model path relative to the bundle ("encoder", "./generator") inside the bundle
        when it exists there; anything else (a Hub id, another path) as it is."""
        if self.root is not None and (self.root / name_or_path).exists():
            return str(self.root / name_or_path)
        return name_or_path

    def with_models(self, *, encoder: str | None = None, encoder_revision: str | None = None,
                    generator: str | None = None, generator_file: str | None = None,
                    generator_revision: str | None = None, backbone: str | None = None,
                    backbone_revision: str | None = None, face_traits: str | None = None,
                    face_traits_revision: str | None = None,
                    quantize: bool | None = None) -> BundleSpec:
        """This spec with another encoder (at `encoder_revision`, the bundle's layer) and/or
        generator (`generator_file` in it, default the default file name, at
        `generator_revision`) and/or backbone (at `backbone_revision`), and/or face-trait
        model (at `face_traits_revision`), and/or `quantize`; None keeps the bundle's
        choice."""
        enc, gen, back = self.encoder, self.generator, self.backbone
        if backbone:
            back = BackboneSpec(backbone, backbone_revision)
        traits = FaceTraitsSpec(face_traits, face_traits_revision) if face_traits \
            else self.face_traits
        if encoder:
            enc = replace(enc, name_or_path=encoder, revision=encoder_revision)
        if quantize is not None:
            enc = replace(enc, quantize=quantize)
        if generator:
            gen = GeneratorSpec(generator, generator_file or DEFAULT_GENERATOR_FILE,
                                generator_revision)
        return replace(self, encoder=enc, generator=gen, backbone=back, face_traits=traits,
                       face_traits_named=self.face_traits_named or bool(face_traits))

    @property
    def face_trait_model(self) -> FaceTraitsSpec | None:
        """The face-trait model that reads visitors' photos in face to voice: a personas
        bundle's (its caches were made with it), or the one bundle.json or an override names;
        None for a built bundle that names none (nothing is fetched it did not ask for)."""
        return self.face_traits if self.synthetic_personas or self.face_traits_named else None

    def voice_samples(self) -> dict[str, Path]:
        """Recordings of the bundle's people that may be played to visitors, by person id:
        every persona's voice in a personas bundle, else the example recordings named after
        a person (`voices/<person id>.flac`). Nobody enrolled live has one: their
        recordings are never kept."""
        if self.personas_dir is not None:
            from .personas import load_personas  # reads the personas' list

            return {p["id"]: p["voice_file"] for p in load_personas(self.personas_dir)
                    if p["voice_file"].is_file()}
        return {path.stem: path for path in self.examples}

    def _find_examples(self) -> tuple[Path, ...]:
        if self.personas_dir is not None:
            from .personas import example_voices  # reads the personas' list

            return tuple(example_voices(self.personas_dir))
        if self.root is None or not (self.root / EXAMPLES_DIR).is_dir():
            return ()
        return tuple(sorted(p for p in (self.root / EXAMPLES_DIR).iterdir() if p.is_file()))


def _checked(data: object, where: str, schema: dict[str, tuple]) -> dict:
    """`data` as a new dict if it is a JSON object with only `schema`'s keys, each of one of
    its types; else a `BundleError` naming the key, what it holds and what it should."""
    if not isinstance(data, dict):
        raise BundleError(f"{where} is {_json_kind(data)}; it must be an object {{...}} "
                          f"with the keys {', '.join(schema)}.")
    unknown = [key for key in data if key not in schema]
    if unknown:
        raise BundleError(f"{where} has unknown keys {', '.join(map(repr, unknown))}; the keys "
                          f"it may hold are {', '.join(schema)}. Correct the spelling (or, if a "
                          "newer voiceface wrote it, upgrade voiceface).")
    for key, value in data.items():
        kinds = schema[key]
        types = tuple(k for k in kinds if k is not None)
        ok = (value is None and None in kinds) or (
            isinstance(value, types) and isinstance(value, bool) == (bool in kinds))
        if not ok:
            wanted = " or ".join(_KINDS[k] for k in kinds if not (k is int and float in kinds))
            raise BundleError(f"{where} key {key!r} is {_json_kind(value)}; it must be "
                              f"{wanted}.")
    return dict(data)


_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
          dict: "an object", list: "a list", None: "null"}


def _json_kind(value: object) -> str:
    """What a parsed JSON value is, for a message: its kind and (the start of) its text."""
    text = json.dumps(value)
    kind = _KINDS[None if value is None else type(value)]
    return f"{kind} ({text[:40]}{'...' if len(text) > 40 else ''})"

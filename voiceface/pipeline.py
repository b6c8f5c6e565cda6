"""One object, one call: audio in; the nearest enrolled people and a generated face out.

    vf = VoiceFace.from_pretrained("index/")      # a bundle: local directory or Hub repo id
    result = vf("clip.wav")
    result.face.save("face.png"); result.matches[0].name; result.confident

A bundle (see `voiceface.bundle`) is a directory (or Hub repo) holding `bundle.json` (which
encoder and generator, with revisions), `gallery/` (a saved `Enrolled`) and optionally
`mapper/` (a trained `VoiceToLatent`). A personas bundle (the app's default `index/`) names a
personas folder instead; its gallery and mapper are caches built for the configured encoder
and generator (see `voiceface.persona_cache`). Loading is `voiceface.loading`'s four steps.

A request reads the gallery and the mapper once, at its start, from `vf.state` (a frozen
`GalleryState`); enrollment and deletion swap a new state in (`vf.swap`), so a request
running meanwhile finishes on the version it started with.

`from_pretrained` returns a pipeline ready to answer. With `prepare=False` it returns as soon
as the models are loaded, and `vf.prepare()` (e.g. in a background thread: the app's choice)
builds and reads the caches later; until then `vf.state`, which every request reads first,
raises `NotReady` carrying `vf.preparation` (the stage, how far, or why it failed).

Faces are truncated toward a centre: by default the gallery's population centre (the mean
latent of its people, `Latents.centre`), so they stay among the people enrolled; the
generator's `w_avg` (FFHQ's average face) when the gallery holds no latents, or when
`bundle.json` says `"truncation_centre": "generator"`. The result says which (`centre`).

Visitors' voices are embedded by `query_encoder`: `encoder` itself, or the same encoder in a
reduced precision with the same fingerprint once `voiceface.precision.settle` checked it
against fp32 on the bundle's voices (`serve_queries_with`). What a gallery stores is always
embedded by `encoder`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from . import hub, verification
from .audio import AudioError, AudioSource, load_audio
from .bundle import BundleSpec
from .enrolled import Enrolled
from .gallery import Gallery, Match
from .derived import GalleryState, load_derived
from .loading import default_bundle, load_models, prepare_derived
from .mapper import VoiceToLatent, knn_blend
from .population import GENERATOR, POPULATION
from .provenance import mark
from .stylegan2 import Generator, to_pil
from .trait_inputs import trait_features
from .traits import VoiceTraits, measure
from .voice import VoiceEncoder

if TYPE_CHECKING:  # face2voice loads OpenCV and the backbone: only at the first face query
    from .face2voice import FaceToVoice, FaceToVoiceResult
    from .face_traits import FaceTraitModel
    from .faces import ImageSource

log = logging.getLogger(__name__)

DEFAULT_K = 5  # matches returned
PREVIEW_RESOLUTION = 128  # px of the app's quick first face, before the full-size one
STAGES = ("waiting", "faces", "people", "models")  # of a preparation, in order (Preparation)


class Preparation:
    """How far a pipeline's gallery and mapper are from ready (`VoiceFace.prepare`), read by
    other threads while it runs: the `stage` (one of `STAGES`: "waiting" until a personas
    bundle's build counts its people; then choosing their faces, embedding their voices and
    drawing their faces, training the models), `done` of `total` people in it, the `error`
    that stopped it (None while it runs or once it is done). The pipeline is ready once it
    serves a gallery (`VoiceFace.ready`)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.stage, self.done, self.total = STAGES[0], 0, 0
        self.error: str | None = None

    def report(self, stage: str, done: int, total: int) -> None:
        """Say that `done` of `total` people are through `stage` (one of `STAGES`)."""
        if stage not in STAGES:
            raise ValueError(f"Unknown preparation stage {stage!r}; use one of {STAGES}.")
        with self._lock:
            self.stage, self.done, self.total = stage, done, total

    def fail(self, error: str) -> None:
        """Say that the preparation stopped with `error` (a sentence, for the page)."""
        self.error = error

    def progress(self) -> tuple[str, int, int, str | None]:
        """(stage, done, total, error), read together."""
        with self._lock:
            return self.stage, self.done, self.total, self.error

    def describe(self) -> str:
        """Where the preparation is, in English (for NotReady's message)."""
        stage, done, total, error = self.progress()
        if error is not None:
            return f"preparing the gallery failed: {error}"
        return f"preparing the gallery: {stage}" + (f", {done}/{total} people" if total else "")


class NotReady(ValueError):
    """The pipeline's gallery and mapper are not prepared yet (or their preparation failed):
    `preparation` says how far it is. Try again once the pipeline is `ready`."""

    def __init__(self, preparation: Preparation):
        super().__init__(f"Not ready to answer yet ({preparation.describe()}); try again "
                         "shortly.")
        self.preparation = preparation


@dataclass
class VoiceFaceResult:
    """What one call returns. `face` is the generated image (None in the first result of
    `stream(..., matches_first=True)`, sent before any face is drawn); `matches` best first."""

    face: Image.Image | None
    w: np.ndarray  # [style_dim] StyleGAN2 latent that drew `face` (after truncation)
    matches: list[Match]
    confident: bool  # the best match reaches the gallery's threshold ...
    threshold: float  # ... this one, of the gallery version the request searched
    method: str  # "mapper", "knn-blend" or "average" (the centre: no latents to blend)
    embedding: np.ndarray  # [D] the voice embedding
    centre: str  # what the face was truncated toward: "population" or "generator" (w_avg)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    # pitch and apparent sex (`voiceface.traits`): measured before the face when the mapper
    # takes them (every result has them), else after the first face is drawn (only the last
    # result has them); None when the voice has no voiced speech
    voice_traits: VoiceTraits | None = None

    @property
    def best(self) -> Match | None:
        """The nearest person when the match is confident, else None ("no confident match")."""
        return self.matches[0] if self.confident else None

    def summary(self, test_weights: bool) -> dict:
        """The result for programs: the keys of `python -m voiceface predict --json` and of
        the app's `/predict` (the CLI adds the face's file)."""
        return {"matches": [m.summary() for m in self.matches], "confident": self.confident,
                "threshold": round(self.threshold, 6), "method": self.method,
                "centre": self.centre, "timings": {k: round(v, 4) for k, v in
                                                   self.timings.items()},
                "test_weights": test_weights,
                "voice_traits": self.voice_traits.summary() if self.voice_traits else None}


class VoiceFace:
    """The voice-to-face pipeline; build with `VoiceFace.from_pretrained(bundle)`."""

    def __init__(self, encoder: VoiceEncoder, generator: Generator, enrolled: Enrolled | None,
                 mapper: VoiceToLatent | None = None, *, spec: BundleSpec = BundleSpec(),
                 generator_fingerprint: str | None = None, derived_dir: Path | None = None):
        """`spec` is the bundle's (truncation, its centre, examples, test weights); the
        default is a bundle.json's defaults. `derived_dir` holds the gallery, `mapper/` and
        `face2voice/` the pipeline was loaded from (None: built by hand, no face queries).
        `enrolled` None: not ready until `prepare()` (or `swap`) gives it a gallery."""
        if enrolled is None and generator_fingerprint is None:
            raise ValueError("A pipeline without a gallery yet needs its generator_fingerprint.")
        self.encoder = encoder  # embeds what the gallery stores (enrollment, caches)
        self.query_encoder = encoder  # embeds visitors' voices (`serve_queries_with`)
        self.generator = generator.eval()
        self.preparation = Preparation()
        self._state: GalleryState | None = None  # replaced whole (`swap`), never changed
        self.spec = spec
        self.generator_fingerprint = generator_fingerprint or \
            enrolled.latents.generator_fingerprint
        self.derived_dir = derived_dir
        self._face2voice: FaceToVoice | None = None  # loaded at the first face query
        self._face_traits: FaceTraitModel | None = None  # loaded at the first face query ...
        self._face_traits_tried = False  # ... once, even when it fails
        self._lazy_lock = threading.Lock()  # the two models above load once
        if enrolled is not None:
            self.swap(GalleryState(enrolled, mapper))

    @property
    def state(self) -> GalleryState:
        """The current version of the gallery and mapper; a request reads it once. Raises
        NotReady before the pipeline has one (`prepare`)."""
        state = self._state
        if state is None:
            raise NotReady(self.preparation)
        return state

    def swap(self, state: GalleryState) -> None:
        """Serve `state` from now on (live enrollment): one assignment, so a request running
        meanwhile finishes on the version it read at its start. The first makes the
        pipeline ready."""
        self._state = state

    @property
    def ready(self) -> bool:
        """The pipeline has a gallery to answer from (`state` does not raise NotReady)."""
        return self._state is not None

    def prepare(self, progress: bool = False, serve: bool = True) -> GalleryState:
        """Build the caches the bundle needs (a personas bundle's gallery and mapper, reporting
        to `preparation`, and with `progress` bars), read them and return them; serve them
        too unless `serve` is False (a live gallery opened from them will serve its own,
        `voiceface.enroll.LiveGallery.open`): for a pipeline from `from_pretrained(...,
        prepare=False)`. A failure is recorded in `preparation` and raised."""
        try:
            # 3. build the caches (a personas bundle's gallery and mapper)
            derived = prepare_derived(self.spec, self.encoder, self.generator,
                                      self.generator_fingerprint, progress=progress,
                                      report=self.preparation.report)
            # 4. read them
            state = load_derived(derived, self.encoder.fingerprint, self.generator_fingerprint)
        except Exception as err:
            self.preparation.fail(str(err) or type(err).__name__)
            raise
        self.derived_dir = derived
        if serve:
            self.swap(state)
        return state

    def serve_queries_with(self, encoder: VoiceEncoder) -> None:
        """Embed visitors' voices with `encoder` from now on (one assignment, as `swap`): the
        pipeline's encoder in another precision (`VoiceEncoder.with_precision`), checked by
        the caller. An encoder of another fingerprint would search a gallery made in another
        embedding space and is refused with a ValueError."""
        if encoder.fingerprint != self.encoder.fingerprint:
            raise ValueError(f"The query encoder's fingerprint {encoder.fingerprint!r} is not "
                             f"the gallery's encoder's {self.encoder.fingerprint!r}; its "
                             "embeddings cannot search this gallery.")
        self.query_encoder = encoder

    @property
    def gallery(self) -> Gallery:
        """The current gallery (a request should read `state` once instead)."""
        return self.state.gallery

    @property
    def mapper(self) -> VoiceToLatent | None:
        """The current mapper (a request should read `state` once instead)."""
        return self.state.mapper

    @classmethod
    def from_pretrained(
        cls,
        bundle: str | os.PathLike | None = None,
        *,
        revision: str | None = None,
        encoder: str | None = None,
        encoder_revision: str | None = None,
        generator: str | None = None,
        generator_file: str | None = None,
        generator_revision: str | None = None,
        backbone: str | None = None,
        backbone_revision: str | None = None,
        face_traits: str | None = None,
        face_traits_revision: str | None = None,
        device: str | None = None,
        quantize: bool | None = None,
        progress: bool = True,
        prepare: bool = True,
    ) -> "VoiceFace":
        """Load a bundle (local directory or Hub repo id; default `default_bundle()`); keyword
        arguments override its choice of encoder, generator and (a personas bundle's, for face
        to voice) perceptual backbone and (a personas bundle's, choosing faces that agree
        with the voices) face-trait model. Derived artifacts made for
        other models are refused, except a personas bundle's, which are caches: built once
        for these models (with a `progress` bar) in `cache_dir()` and reused. `quantize`
        (default: the bundle's `encoder.quantize`) runs the voice encoder in int8 on the
        CPU; its embeddings have their own fingerprint, so a gallery must be built with the
        same setting. A bad `bundle.json` raises `voiceface.bundle.BundleError`.
        `prepare=False` returns once the models are loaded: the caches are built and read by
        `prepare()`, which the caller runs (in another thread, say); until it is done requests
        raise `NotReady`.
        """
        # 1. read the bundle's spec (a Hub bundle is downloaded first), with the overrides
        root = hub.resolve_dir(default_bundle() if bundle is None else bundle, revision,
                               what="voiceface bundle").path
        spec = BundleSpec.read(root).with_models(
            encoder=encoder, encoder_revision=encoder_revision, generator=generator,
            generator_file=generator_file, generator_revision=generator_revision,
            backbone=backbone, backbone_revision=backbone_revision, face_traits=face_traits,
            face_traits_revision=face_traits_revision, quantize=quantize)
        # 2. resolve the weights it names
        voice, face_gen, gen_fp = load_models(spec, device=device)
        vf = cls(voice, face_gen, None, spec=spec, generator_fingerprint=gen_fp)
        if prepare:  # 3. and 4. build the caches it needs and read them
            vf.prepare(progress=progress)
        return vf

    def example_voices(self) -> list[Path]:
        """Example recordings: the bundle's `voices/`, or a few of its personas' voices."""
        return list(self.spec.examples)

    def __call__(self, audio: AudioSource, k: int = DEFAULT_K, truncation: float | None = None,
                 resolution: int | None = None) -> VoiceFaceResult:
        """Audio (path, bytes or (rate, samples)) -> matches and a generated face.

        resolution: None for the generator's full size, or a smaller power of two for a
        fast preview. Raises AudioError for unusable audio.
        """
        return next(self.stream(audio, k, truncation, None if resolution is None else [resolution]))

    def stream(self, audio: AudioSource, k: int = DEFAULT_K, truncation: float | None = None,
               resolutions: Sequence[int] | None = None, matches_first: bool = False
               ) -> Iterator[VoiceFaceResult]:
        """Like calling the pipeline, with one result per resolution in `resolutions`
        (ascending powers of two; default: full size only), each ready as soon as its face is
        drawn. One render serves them all (`Generator.progressive`): a 128 px preview and
        then the full face cost the full face alone. With `matches_first`, a first result
        with `face` None comes before any drawing: the nearest people need only the voice.
        The voice is analysed at the call (so AudioError is raised here); faces are drawn as
        the iterator is read. Each result's timings count the work up to its own face, not
        the caller's time between results. The voice's traits (0.05-0.3 s per 5 s) are measured
        once: before the mapper when it takes them, else after the first face, with the last
        one, which alone then carries them.
        """
        state = self.state  # this request's version of the gallery and mapper
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        sizes = self.generator.check_sizes(
            [self.generator.resolution] if resolutions is None else resolutions)

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        # 1. load audio: decode, mono, 16 kHz, trim, validate
        wav = load_audio(audio)
        lap("load_audio")
        # 2. embed the voice
        embedding = self.query_encoder.embed(wav)
        lap("embed")
        # 3. search the gallery
        matches = state.gallery.search(embedding, k)
        lap("search")
        # 4. map the voice to a latent; a mapper that takes the voice's traits gets them
        traits_first = state.mapper is not None and state.mapper.takes_traits
        traits = _traits(wav) if traits_first else None
        if traits_first:
            lap("traits")
        w, method = self.latent(embedding, matches, state, traits)
        lap("map")
        # 5. synthesise the face, at each resolution asked for; the only truncation: stored
        #    and predicted latents are untruncated w
        centre, centre_kind = self.centre(state)
        w = self.generator.truncate(
            w, self.spec.truncation if truncation is None else truncation, centre)
        with torch.inference_mode():  # the levels run in it whenever the iterator is read
            images = self.generator.progressive(w, sizes, noise="const")
        confident, threshold = state.gallery.confident(matches), state.gallery.threshold
        setup = time.perf_counter() - clock

        def results() -> Iterator[VoiceFaceResult]:
            if matches_first:
                laps = {**timings, "total": sum(timings.values())}
                yield VoiceFaceResult(None, w[0].cpu().numpy(), matches, confident, threshold,
                                      method, embedding, centre_kind, laps, traits)
            drawn, measured = setup, traits
            for i, _ in enumerate(sizes):
                start = time.perf_counter()
                face = mark(to_pil(next(images))[0])
                drawn += time.perf_counter() - start
                laps = {**timings, "synthesise": drawn}
                if i == len(sizes) - 1 and not traits_first:
                    start = time.perf_counter()
                    measured = _traits(wav)
                    laps["traits"] = time.perf_counter() - start
                laps["total"] = sum(laps.values())
                yield VoiceFaceResult(face, w[0].cpu().numpy(), matches, confident, threshold,
                                      method, embedding, centre_kind, laps, measured)

        return results()

    def verify(self, audio: AudioSource, claim_id: str) -> verification.VerifyResult:
        """Is `audio` (path, bytes or (rate, samples)) the voice of enrolled person `claim_id`?
        The AS-norm score against the gallery's verification threshold, with the false-accept
        and false-reject rates measured there (`voiceface.verification`). Raises UnknownClaim (a
        ValueError listing the enrolled ids) for an id not enrolled, AudioError for unusable
        audio."""
        state = self.state  # this request's version
        gallery = state.gallery
        verification.check_claim(gallery, claim_id)  # before any decoding: a wrong id is cheap
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        wav = load_audio(audio)
        timings["load_audio"] = time.perf_counter() - clock
        clock = time.perf_counter()
        embedding = self.query_encoder.embed(wav)
        timings["embed"] = time.perf_counter() - clock
        return verification.decide(embedding, claim_id, gallery,
                                   state.enrolled.calibrations.verification, timings)

    def face2voice(self, photo: ImageSource, k: int = DEFAULT_K) -> FaceToVoiceResult:
        """A face photo (path, bytes, PIL image or RGB array; exactly one face) -> the `k`
        enrolled people whose voices suit it best (`voiceface.face2voice`). Raises FaceError
        for an unusable photo, FileNotFoundError for a bundle without face2voice/."""
        from .face2voice import FACE2VOICE_DIR, FaceToVoice

        gallery = self.state.gallery  # this request's version (NotReady before `prepare`)
        if self._face2voice is None:
            if self.derived_dir is None:
                raise FileNotFoundError("This pipeline was not loaded from a bundle, so it has "
                                        "no face-to-voice model; use VoiceFace.from_pretrained.")
            with self._lazy_lock:  # threads asking at once wait for one load
                if self._face2voice is None:
                    self._face2voice = FaceToVoice.from_pretrained(
                        self.derived_dir / FACE2VOICE_DIR, self.derived_dir,
                        encoder_fingerprint=self.encoder.fingerprint,
                        generator_fingerprint=self.generator_fingerprint)
        return self._face2voice(photo, gallery, k, self.face_trait_model())

    def face_trait_model(self) -> FaceTraitModel | None:
        """The face-trait model that reads visitors' photos (`BundleSpec.face_trait_model`),
        loaded once, at the first call (threads wait for one load); None when the bundle
        names none, or when it cannot be loaded (one warning says why)."""
        if not self._face_traits_tried:
            with self._lazy_lock:
                if not self._face_traits_tried:
                    self._face_traits = self._load_face_traits()
                    self._face_traits_tried = True
        return self._face_traits

    def _load_face_traits(self) -> FaceTraitModel | None:
        source = self.spec.face_trait_model
        if source is None:
            return None
        from .face_traits import FaceTraitModel

        try:
            return FaceTraitModel.from_pretrained(self.spec.locate(source.name_or_path),
                                                  source.revision)
        except (OSError, ValueError, RuntimeError) as err:  # missing, offline, not a CLIP
            log.warning("Face to voice answers without face traits: the face-trait model "
                        "%s could not be loaded (%s). Check bundle.json \"face_traits\" or "
                        "--face-traits.", source.name_or_path, err)
            return None

    def centre(self, state: GalleryState | None = None) -> tuple[torch.Tensor, str]:
        """What faces are truncated toward, [style_dim] on the generator's device, and its kind:
        the gallery's population centre ("population"), or the generator's w_avg
        ("generator") when the bundle asks for it or the gallery has no latents."""
        state = self.state if state is None else state
        population = state.latents.centre if self.spec.truncation_centre == POPULATION \
            else None
        if population is None:
            return self.generator.w_avg, GENERATOR
        return torch.from_numpy(population).to(self.generator.w_avg.device), POPULATION

    def latent(self, embedding: np.ndarray, matches: list[Match],
               state: GalleryState | None = None, traits: VoiceTraits | None = None
               ) -> tuple[torch.Tensor, str]:
        """w [1, style_dim] for an embedding: the mapper, else a blend of the matches' latents,
        else (none of them has one) the centre (`centre`). `state` is the version `matches`
        were found in (default: the current one). A mapper that takes the voice's `traits`
        gets them; without (no voiced speech) it puts the trained people's mean in their
        place."""
        state = self.state if state is None else state
        if state.mapper is not None:
            w, method = state.mapper.predict(embedding, trait_features(traits)), "mapper"
        else:
            with_latent = [(m.score, state.latents.get(m.id)) for m in matches]
            with_latent = [(s, w) for s, w in with_latent if w is not None]
            if with_latent:
                scores, latents = zip(*with_latent)
                w, method = knn_blend(np.array(scores), np.stack(latents)), "knn-blend"
            else:
                w, method = self.centre(state)[0].cpu().numpy(), "average"
        return torch.from_numpy(np.asarray(w, np.float32)).reshape(1, -1).to(
            self.generator.w_avg.device), method


def _traits(wav: np.ndarray) -> VoiceTraits | None:
    """The voice's traits, None when it has no voiced speech (a whisper, noise)."""
    try:
        return measure(wav)
    except AudioError:
        return None

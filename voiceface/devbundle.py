"""A complete offline bundle of tiny random models: for tests, CI and anyone without the Hub.

`write_dev_bundle(DIR)` writes a tiny randomly initialised wav2vec2 x-vector encoder, a tiny
StyleGAN2 generator, a gallery of synthetic people (harmonic "voices" with their own pitch and
formants, faces rendered by the generator from a seed, so each face's latent is exact), a
mapper trained on them (with their voices' traits), and a tiny random DINOv2 backbone with
the people's face features and the reverse (face-to-voice) mapper. The gallery's threshold
is calibrated like a built one's (on the enrolled recordings' windows; 8 people give 8
trials), and so is its
verification threshold (`voiceface.verification`: the example recording in `voices/` is each
person's second recording, so it gives the mated trials too). Latents are stored
untruncated; faces
are drawn from them truncated by the bundle's truncation toward their population centre, as
the pipeline draws them. The people go through the recipe every bundle shares
(`voiceface.assemble`). Its `bundle.json` says `"test_weights": true`: nothing it produces
means anything about real voices or faces.
"""

from __future__ import annotations

import string
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForXVector

from . import faces, storage
from .assemble import Enrollee, Models, assemble
from .audio import SAMPLE_RATE
from .bundle import BUNDLE_FILE, BUNDLE_FORMAT_VERSION, DEFAULT_TRUNCATION
from .invert import Backbone
from .loading import load_generator
from .population import population_centre
from .stylegan2 import Generator, GeneratorConfig, to_pil
from .trait_inputs import window_trait_features
from .voice import VoiceEncoder

TINY_ENCODER = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
    conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    tdnn_dim=(32, 32, 32, 32, 64), xvector_output_dim=24,
)
TINY_GENERATOR = GeneratorConfig(size=64, style_dim=64, n_mlp=2,
                                 channels={4: 64, 8: 64, 16: 32, 32: 32, 64: 16})
TINY_BACKBONE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                     patch_size=8, image_size=64)
TINY_FACE_TRAITS = dict(
    text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=77),
    vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=2, image_size=32, patch_size=8),
    projection_dim=16)
CLIP_LOGIT_SCALE = 4.6052  # log(100): the scale trained CLIP models end at
DEV_PEOPLE = 8
VOICE_SECONDS = 4.0  # s per synthetic recording


def synthetic_voice(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0, f0: float = 140.0,
                    formant: float = 700.0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal [T] float32 peaking at 0.5.

    Harmonics of a wobbling f0 shaped by one formant-like peak, switched on and off at a
    syllable rate: structured enough to exercise trimming, resampling and the encoder.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / rate
    wav = sum((1 / k) * np.sin(k * phase) * np.exp(-((k * f0 - formant) / 900) ** 2)
              for k in range(1, 25))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, np.pi))
    wav = wav * syllables + 0.01 * rng.standard_normal(len(t))
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


def write_random_encoder(directory: Path, seed: int = 0,
                       model_class: type = Wav2Vec2ForXVector,
                       config: dict | None = None) -> Path:
    """Save a random wav2vec2 model with its feature extractor into `directory`.

    Tiny by default: `Wav2Vec2ForXVector` gives 24-d x-vectors, `Wav2Vec2Model` 32-d hidden
    states. `config={}` gives the base size (768 x 12 layers) for benchmarks.
    """
    torch.manual_seed(seed)
    model_class(Wav2Vec2Config(**(TINY_ENCODER if config is None else config))) \
        .save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True,
                             return_attention_mask=True).save_pretrained(directory)
    return directory


def write_random_backbone(directory: Path, seed: int = 0, config: dict | None = None) -> Path:
    """Save a random DINOv2 (tiny by default; `config={}` gives ViT-B) with an image processor
    config, as a stand-in for the inversion backbone. The normalisation is deliberately not
    ImageNet's, so tests can tell that it is read from the file."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(**(TINY_BACKBONE if config is None else config))) \
        .save_pretrained(directory)
    side = 56 if config is None else 224
    storage.write_json(Path(directory) / "preprocessor_config.json", {
        "image_processor_type": "BitImageProcessor",
        "crop_size": {"height": side, "width": side}, "size": {"shortest_edge": side + 8},
        "image_mean": [0.5, 0.4, 0.3], "image_std": [0.25, 0.25, 0.25]})
    return Path(directory)


def write_random_face_traits(directory: Path, seed: int = 0, config: dict | None = None
                             ) -> Path:
    """Save a random CLIP (tiny by default; `config={}` gives ViT-B/32's size,
    `{"vision_config": {"patch_size": 16}}` ViT-B/16's) with a character-level tokenizer and
    an image processor config, as a stand-in for the face-trait model
    (`voiceface.face_traits`). Its logit scale is a trained CLIP's, so its answers are as
    decided as a real model's, and as meaningless as its weights."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    symbols = string.ascii_lowercase + string.digits + "'.,-"
    vocab = {token: i for i, token in enumerate(
        [*symbols, *(c + "</w>" for c in symbols), "<|startoftext|>", "<|endoftext|>"])}
    special = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
               "pad_token_id": vocab["<|endoftext|>"]}
    given = TINY_FACE_TRAITS if config is None else config
    text = {**given.get("text_config", {}), **special}
    if config is None:
        text["vocab_size"] = len(vocab)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(**{**given, "text_config": text},
                         logit_scale_init_value=CLIP_LOGIT_SCALE)).save_pretrained(directory)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    side = 32 if config is None else 224
    storage.write_json(Path(directory) / "preprocessor_config.json", {
        "image_processor_type": "CLIPImageProcessor", "crop_size": {"height": side, "width": side},
        "size": {"shortest_edge": side}})
    return Path(directory)


def write_dev_bundle(directory: str | Path, n_people: int = DEV_PEOPLE, seed: int = 0,
                     progress: bool = True, encoder_config: dict | None = None,
                     generator_config: GeneratorConfig = TINY_GENERATOR,
                     backbone_config: dict | None = None) -> Path:
    """Write a complete test bundle into `directory` (created; must be empty or absent).

    The models are tiny unless `encoder_config` (wav2vec2 config kwargs; `{}` = base size),
    `generator_config` (e.g. `GeneratorConfig.ffhq(1024)`) and `backbone_config` (DINOv2
    config kwargs, for face to voice) ask for full-size random ones.
    """
    root = Path(directory)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty; choose a new directory for the dev bundle.")
    root.mkdir(parents=True, exist_ok=True)
    encoder = VoiceEncoder.from_pretrained(
        write_random_encoder(root / "encoder", seed, config=encoder_config))
    Generator(generator_config, seed=seed).save_pretrained(root / "generator",
                                                         metadata={"test_weights": "true"})
    generator, gen_fp = load_generator(root / "generator")
    rng = np.random.default_rng(seed)
    with torch.inference_mode():  # every latent first: faces are truncated toward their centre
        ws = [generator.seed_latents([seed * 1000 + i], 1.0) for i in range(n_people)]
    centre = torch.from_numpy(population_centre(np.stack([w[0].numpy() for w in ws])))
    backbone = write_random_backbone(root / "backbone", seed, config=backbone_config)
    people = []
    (root / "voices").mkdir()
    with tempfile.TemporaryDirectory(prefix="voiceface-dev-") as tmp:
        for i, w in enumerate(ws):
            person_id = f"dev{i:02d}"
            f0, formant = rng.uniform(90, 260), rng.uniform(500, 1100)
            enroll, example = (synthetic_voice(VOICE_SECONDS, seed=seed * 1000 + 2 * i + j,
                                               f0=f0, formant=formant) for j in range(2))
            sf.write(root / "voices" / f"{person_id}.flac", example, SAMPLE_RATE)
            with torch.inference_mode():
                face = to_pil(generator.synthesis(
                    generator.truncate(w, DEFAULT_TRUNCATION, centre), noise="const"))[0]
            photo = Path(tmp) / f"{person_id}.png"
            face.save(photo)
            windows, trials = encoder.embed_windows(enroll), encoder.embed_windows(example)
            traits = window_trait_features(enroll, encoder.config.window_seconds,
                                           encoder.config.hop_seconds)
            people.append(Enrollee(
                person_id, f"Test person {i + 1}", windows, ["enroll"] * len(windows), photo,
                face, w[0].numpy(), extra={"face_seed": seed * 1000 + i,
                                           "f0_hz": round(float(f0), 1),
                                           "formant_hz": round(float(formant), 1)},
                trial_windows=trials, trial_recordings=["example"] * len(trials),
                window_traits=traits))
        assemble(people, root, Models(encoder.fingerprint, encoder.dim, gen_fp,
                                      generator.style_dim, Backbone.from_pretrained(backbone, None),
                                      {"name_or_path": "backbone", "revision": None}),
                 mapper_options={"hidden": 64, "max_epochs": 200, "patience": 20}, seed=seed,
                 progress=progress)
    storage.write_json(root / BUNDLE_FILE, {
        "format_version": BUNDLE_FORMAT_VERSION,
        "test_weights": True,
        "description": "Tiny random models and synthetic people for tests; not a real model.",
        "encoder": {"name_or_path": "encoder"},
        "generator": {"name_or_path": "generator"},
        "truncation": DEFAULT_TRUNCATION,
    })
    return root


DEV_PHOTO = "astronaut.jpg"  # package data (voiceface/data): a public-domain NASA portrait
DEV_SENTENCES = ("The birch canoe slid on the smooth planks.",
                 "Glue the sheet to the dark blue background.",
                 "It is easy to tell the depth of a well.",
                 "Rice is often served in round bowls.",
                 "The juice of lemons makes fine punch.")


def write_people_folder(directory: str | Path, n_people: int = 6, seed: int = 0,
                        photo: str | Path | None = None) -> Path:
    """A small people folder for trying `build` and `eval` (format: see `voiceface.build`).

    Each person: two espeak-ng recordings in a voice of their own (needs espeak-ng and
    ffmpeg), two photos made from one portrait (mirrored, recoloured, rescaled; by default
    the package's public-domain `DEV_PHOTO`), and `person.json` with consent. Only a test
    of the machinery: everyone has the same face.
    """
    from PIL import Image

    from .persona_voices import synthesize

    root = Path(directory)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty; choose a new directory for the people folder.")
    rng = np.random.default_rng(seed)
    base = faces.load_image(photo or (resources.files(__package__) / "data" / DEV_PHOTO)
                            .read_bytes())
    variants = ["f1", "m3", "f4", "m1", "klatt", "f2", "m6", "f5", "m2", "klatt3"]
    for i in range(n_people):
        person = root / f"person{i + 1:02d}"
        person.mkdir(parents=True)
        storage.write_json(person / "person.json", {"name": f"Dev person {i + 1}",
                                                    "consent": True})
        recipe = {"engine": "espeak-ng", "voice": f"en-us+{variants[i % len(variants)]}",
                  "pitch": int(rng.integers(20, 80)), "rate": int(rng.integers(140, 190))}
        for j, count in enumerate((3, 2)):
            text = " ".join(DEV_SENTENCES[(i + j + k) % len(DEV_SENTENCES)] for k in range(count))
            sf.write(person / f"voice{j + 1}.flac", synthesize(recipe, text), SAMPLE_RATE)
        for j in range(2):
            pixels = np.asarray(base, np.float32)
            gain = rng.uniform(0.8, 1.2, 3)  # a colour cast per photo
            image = Image.fromarray(np.clip(pixels * gain, 0, 255).astype(np.uint8))
            if (i + j) % 2:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            side = int(base.width * rng.uniform(0.9, 1.2))
            image.resize((side, side), Image.Resampling.LANCZOS).save(
                person / f"face{j + 1}.jpg", quality=90)
    return root

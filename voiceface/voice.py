"""Speaker embeddings from a wav2vec2 model loaded through `transformers`.

Two kinds of checkpoints work:
- `Wav2Vec2ForXVector` (default `anton-l/wav2vec2-base-superb-sv`): its x-vector `embeddings`
  output, trained for speaker verification;
- a plain `Wav2Vec2Model` (e.g. `facebook/wav2vec2-base`): the mean over time of one hidden
  layer's states.

Long audio is cut into equal, overlapping windows; the window embeddings are averaged and
renormalised. Every embedding is L2-normalised float32, so inner product = cosine similarity.

`quantize=True` runs the Linear layers in int8 (dynamic quantisation, CPU): faster, slightly
different embeddings, so it is part of the fingerprint (see `benchmarks/encoder_options.py`).
`with_precision("bf16" | "int8")` is the other way: a copy that embeds queries in reduced
precision under the fp32 fingerprint, for use once its embeddings were checked to stay close
enough to fp32's to search an fp32 gallery (`voiceface.precision`).
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, Wav2Vec2ForXVector

from . import hub
from .audio import MIN_SPEECH_SECONDS, SAMPLE_RATE
from .bundle import DEFAULT_ENCODER, DEFAULT_ENCODER_REVISION

WINDOW_SECONDS = 10.0  # s per window for long audio
HOP_SECONDS = 5.0  # s between window starts (50 % overlap)
BATCH_WINDOWS = 8  # windows per forward pass in embed_many
HOLD_OUT_FRACTION = 0.3  # of a single recording: its last part, held out by `eval`
ENROLL_PART, HELD_OUT_PART = "enroll", "held_out"  # windows.json "part" of a split recording
PRECISIONS = ("fp32", "bf16", "int8")  # what `VoiceEncoder.with_precision` runs in


@dataclass(frozen=True)
class EncoderConfig:
    """How embeddings are computed; part of the fingerprint."""

    pooling: str  # "xvector" or "mean"
    layer: int  # hidden layer for "mean" pooling (-1 = last); unused for "xvector"
    window_seconds: float = WINDOW_SECONDS
    hop_seconds: float = HOP_SECONDS
    quantize: bool = False  # Linear layers in dynamic int8


class VoiceEncoder:
    """wav2vec2 speaker encoder: `VoiceEncoder.from_pretrained(name).embed(wav)`."""

    def __init__(self, model: torch.nn.Module, feature_extractor, config: EncoderConfig,
                 source_fingerprint: str, device: torch.device, precision: str = "fp32"):
        """`precision` (see `with_precision`) is how `model` runs; "int8" needs a model whose
        Linear layers are already quantised (`quantize_linear`)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
        self.model = model.eval().to(device)
        self.feature_extractor = feature_extractor
        self.config = config
        self.device = device
        self.precision = precision
        self._source = source_fingerprint

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_ENCODER,
        revision: str | None = DEFAULT_ENCODER_REVISION,
        *,
        layer: int = -1,
        window_seconds: float = WINDOW_SECONDS,
        hop_seconds: float = HOP_SECONDS,
        device: str | torch.device | None = None,
        quantize: bool = False,
    ) -> "VoiceEncoder":
        """Load a wav2vec2 checkpoint from a local directory or a Hub repo id.

        x-vector checkpoints use their `embeddings` output; other wav2vec2 checkpoints use
        mean pooling over hidden layer `layer` (0 = CNN features after projection, -1 = last).
        `device` defaults to CUDA when available, else CPU. `quantize` (CPU only) runs the
        Linear layers in int8: faster on CPU, embeddings within about 0.99 cosine of fp32
        (measured with random weights), and a different fingerprint.
        """
        if not 0 < hop_seconds <= window_seconds:
            raise ValueError(f"hop_seconds ({hop_seconds}) must be in (0, window_seconds "
                             f"({window_seconds})].")
        local = hub.resolve_safetensors_dir(name_or_path, revision, "voice encoder")
        model_config = AutoConfig.from_pretrained(local.path)
        if model_config.model_type != "wav2vec2":
            raise ValueError(f"{name_or_path} is a {model_config.model_type!r} model; the voice "
                             "encoder needs a wav2vec2 checkpoint.")
        if "Wav2Vec2ForXVector" in (model_config.architectures or []):
            model = Wav2Vec2ForXVector.from_pretrained(local.path, config=model_config,
                                                       use_safetensors=True)
            config = EncoderConfig("xvector", -1, window_seconds, hop_seconds)
        else:
            model = AutoModel.from_pretrained(local.path, config=model_config,
                                              use_safetensors=True)
            n_layers = model_config.num_hidden_layers
            if not -n_layers - 1 <= layer <= n_layers:
                raise ValueError(f"layer {layer} does not exist; {name_or_path} has hidden "
                                 f"states 0..{n_layers}.")
            config = EncoderConfig("mean", layer, window_seconds, hop_seconds)
        feature_extractor = AutoFeatureExtractor.from_pretrained(local.path)
        if feature_extractor.sampling_rate != SAMPLE_RATE:
            raise ValueError(f"{name_or_path} expects {feature_extractor.sampling_rate} Hz "
                             f"audio; voiceface works at {SAMPLE_RATE} Hz.")
        if device is None:
            device = "cpu" if quantize or not torch.cuda.is_available() else "cuda"
        if quantize:
            if torch.device(device).type != "cpu":
                raise ValueError("quantize=True runs on the CPU only; use device='cpu' or "
                                 "leave quantize off on a GPU.")
            model = quantize_linear(model.eval())
            config = replace(config, quantize=True)
        return cls(model, feature_extractor, config, local.fingerprint, torch.device(device))

    def with_precision(self, precision: str) -> "VoiceEncoder":
        """This encoder running in `precision`, under the same fingerprint: "fp32" is this
        encoder; "bf16" shares its weights and runs under bf16 autocast (fast on CPUs with
        bf16 instructions, emulated and slow elsewhere); "int8" (CPU only) is a copy with the
        wav2vec2 body's Linear layers in dynamic int8. The embeddings differ slightly from
        fp32's while the fingerprint says they are the same: serve queries with it only once
        they were checked against fp32 (`voiceface.precision.settle`), and keep embedding
        what a gallery stores with this encoder."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
        if self.config.quantize or self.precision != "fp32":
            running = "int8 (quantize=True)" if self.config.quantize else self.precision
            raise ValueError(f"This encoder already runs in {running}; take another precision "
                             "from an fp32 encoder (quantize=False).")
        if precision == "fp32":
            return self
        model = self.model
        if precision == "int8":
            if self.device.type != "cpu":
                raise ValueError(f"int8 runs on the CPU only and this encoder is on "
                                 f"{self.device}; use bf16 or fp32 there.")
            model = quantize_linear(copy.deepcopy(model))
        return VoiceEncoder(model, self.feature_extractor, self.config, self._source,
                            self.device, precision)

    @property
    def dim(self) -> int:
        """Embedding size D."""
        if self.config.pooling == "xvector":
            return int(self.model.config.xvector_output_dim)
        return int(self.model.config.hidden_size)

    @property
    def fingerprint(self) -> str:
        """Model id + revision (or content hash) + pooling: equal fingerprints, same space."""
        c = self.config
        pooling = "xvector" if c.pooling == "xvector" else f"mean@{c.layer}"
        fp = f"{self._source}|{pooling}|win{c.window_seconds:g}/{c.hop_seconds:g}"
        return fp + "|int8" if c.quantize else fp

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """One L2-normalised float32 embedding [D] for 16 kHz mono samples `wav` [T]."""
        return self.embed_many([wav])[0]

    def embed_many(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings [N, D] for N recordings; windows of all recordings share batches."""
        per_wav = self.embed_windows_many(wavs)
        return np.stack([pool(w) for w in per_wav])

    def embed_windows(self, wav: np.ndarray) -> np.ndarray:
        """Per-window embeddings [W, D] (each L2-normalised) of one recording."""
        return self.embed_windows_many([wav])[0]

    def embed_windows_many(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """For each recording, its per-window embeddings [W_i, D]."""
        windows: list[np.ndarray] = []
        owners: list[int] = []
        for i, wav in enumerate(wavs):
            wav = np.asarray(wav, dtype=np.float32)
            if wav.ndim != 1 or wav.size == 0:
                raise ValueError(f"Recording {i} has shape {wav.shape}; expected non-empty "
                                 "16 kHz mono samples [T] (use voiceface.audio.load_audio).")
            for window in split_windows(wav, self.config.window_seconds,
                                        self.config.hop_seconds):
                windows.append(window)
                owners.append(i)
        out = np.empty((len(windows), self.dim), dtype=np.float32)
        # Windows of equal length batch without padding, so batching never changes a result.
        by_length: dict[int, list[int]] = {}
        for j, window in enumerate(windows):
            by_length.setdefault(len(window), []).append(j)
        for idx in by_length.values():
            for start in range(0, len(idx), BATCH_WINDOWS):
                batch = idx[start:start + BATCH_WINDOWS]
                out[batch] = self._forward(np.stack([windows[j] for j in batch]))
        owners_arr = np.asarray(owners)
        return [out[owners_arr == i] for i in range(len(wavs))]

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings [B, D] for equal-length windows `batch` [B, T]."""
        inputs = self.feature_extractor(list(batch), sampling_rate=SAMPLE_RATE,
                                        return_tensors="pt")
        values = inputs["input_values"].to(self.device)
        assert values.shape == batch.shape, (values.shape, batch.shape)
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            if self.config.pooling == "xvector":
                emb = self.model(values).embeddings
            else:
                states = self.model(values, output_hidden_states=True).hidden_states
                emb = states[self.config.layer].mean(dim=1)
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        return emb.cpu().numpy()


def quantize_linear(model: torch.nn.Module) -> torch.nn.Module:
    """`model`, changed in place, with the Linear layers of its wav2vec2 body in dynamic int8
    (weights int8, activations quantised per call); convolutions and the x-vector head stay
    fp32 (the head's TDNN layers read their Linear's weight directly, which a quantised
    Linear does not have). In place: a base-size model is not held twice while converting.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch 2.11 deprecates torch.ao for torchao; still works
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        if isinstance(model, Wav2Vec2ForXVector):
            quantize_dynamic(model.wav2vec2, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
            return model
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def split_windows(wav: np.ndarray, window_seconds: float = WINDOW_SECONDS,
                  hop_seconds: float = HOP_SECONDS, rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Cut [T] into windows of exactly `window_seconds`; the last one ends at the end.

    Audio no longer than one window is a single window. All windows of a long recording have
    the same length, so they batch without padding.
    """
    return [wav[start:end] for start, end in
            window_bounds(len(wav), window_seconds, hop_seconds, rate)]


def window_bounds(n_samples: int, window_seconds: float = WINDOW_SECONDS,
                  hop_seconds: float = HOP_SECONDS,
                  rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """The sample ranges [start, end) of `split_windows` on a recording of `n_samples`."""
    size, hop = int(window_seconds * rate), int(hop_seconds * rate)
    if n_samples <= size:
        return [(0, n_samples)]
    starts = list(range(0, n_samples - size + 1, hop))
    if starts[-1] + size < n_samples:
        starts.append(n_samples - size)
    return [(s, s + size) for s in starts]


def pool(window_embeddings: np.ndarray) -> np.ndarray:
    """One embedding [D] from window embeddings [W, D]: the renormalised mean."""
    mean = np.asarray(window_embeddings, np.float32).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def split_for_evaluation(n_samples: int) -> list[tuple[str, int, int]]:
    """The parts (name, start, end) of a person's single recording of `n_samples`, each cut
    into windows on its own: "enroll" is [0, cut), "held_out" [cut, n_samples), with
    cut = round(n_samples * (1 - HOLD_OUT_FRACTION)). A held-out part shorter than the
    shortest query (`MIN_SPEECH_SECONDS`) is not split off: all is "enroll"."""
    cut = round(n_samples * (1 - HOLD_OUT_FRACTION))
    if n_samples - cut < MIN_SPEECH_SECONDS * SAMPLE_RATE:
        return [(ENROLL_PART, 0, n_samples)]
    return [(ENROLL_PART, 0, cut), (HELD_OUT_PART, cut, n_samples)]

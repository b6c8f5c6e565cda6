"""Voice encoder speed-ups against plain fp32 transformers, for one 5 s utterance.

A base-size wav2vec2 x-vector encoder with random weights (trained weights cost the same time;
but the cosine figures below say less about them: random weights do not produce speaker
features, and quantisation error grows or shrinks with the weights' real ranges). Options:
- fp32 with 2 and with 1 torch threads;
- dynamic int8 quantisation of the Linear layers (`VoiceEncoder.from_pretrained(quantize=True)`);
- bf16 autocast (`torch.autocast("cpu", torch.bfloat16)`: matrix products and convolutions in
  bf16), with --bf16; fast only on CPUs with bf16 instructions (AVX512-BF16 or AMX), which this
  machine has; elsewhere emulated and slower;
- `torch.compile` of the model, with --compile (its first call compiled for 222 s on this
  2-core machine under load: far beyond a 15 s cold start);
- ONNX Runtime, fp32 and dynamic int8 (MatMul weights), with --onnx: the model exported with
  torch.onnx (TorchScript exporter); needs `pip install onnxruntime onnx`, which voiceface
  itself does not use.
All run with the allocator setting the app uses (`stylegan2_ops.reuse_freed_memory`).
The options are timed round-robin (one call each per round) so that load from other work on a
shared machine falls on all of them alike. Cosine similarity of each option's embedding to the
fp32 one is reported for a synthetic voice and, if `espeak-ng` is installed, synthetic speech.
Usage (repository root):
python -m benchmarks.encoder_options [--rounds 10] [--bf16] [--compile] [--onnx]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from voiceface.audio import SAMPLE_RATE, load_audio
from voiceface.devbundle import synthetic_voice, write_random_encoder
from voiceface.stylegan2_ops import reuse_freed_memory
from voiceface.voice import VoiceEncoder

SECONDS = 5.0  # utterance length
ESPEAK_TEXT = ("The quick brown fox jumps over the lazy dog while seven wizards quietly "
               "vex the jumping frogs.")


def test_audio(tmp: Path) -> dict[str, np.ndarray]:
    """5 s clips: a synthetic voice and, when espeak-ng is installed, synthetic speech."""
    clips = {"synthetic voice": synthetic_voice(SECONDS, seed=3, f0=150.0)}
    if shutil.which("espeak-ng"):
        wav = tmp / "espeak.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), ESPEAK_TEXT], check=True)
        speech = load_audio(wav)
        reps = int(np.ceil(SECONDS * SAMPLE_RATE / len(speech)))
        clips["espeak-ng speech"] = np.tile(speech, reps)[:int(SECONDS * SAMPLE_RATE)]
    return clips


class OnnxEncoder:
    """`embed` of a VoiceEncoder's x-vector model run by ONNX Runtime (export done here)."""

    def __init__(self, encoder: VoiceEncoder, directory: Path, int8: bool):
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic

        class Embeddings(torch.nn.Module):
            def __init__(self, model: torch.nn.Module):
                super().__init__()
                self.model = model

            def forward(self, values: torch.Tensor) -> torch.Tensor:
                return self.model(values).embeddings

        path = directory / "encoder.onnx"
        example = torch.zeros(1, int(SECONDS * SAMPLE_RATE))
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still works
            warnings.simplefilter("ignore")
            torch.onnx.export(Embeddings(encoder.model).eval(), (example,), str(path),
                              input_names=["values"], output_names=["embeddings"],
                              dynamic_axes={"values": {1: "samples"}}, dynamo=False)
        if int8:
            quantize_dynamic(str(path), str(directory / "encoder.int8.onnx"),
                             weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            path = directory / "encoder.int8.onnx"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
        self.feature_extractor = encoder.feature_extractor

    def embed(self, wav: np.ndarray) -> np.ndarray:
        values = self.feature_extractor([wav], sampling_rate=SAMPLE_RATE,
                                        return_tensors="np")["input_values"]
        emb = self.session.run(None, {"values": values.astype(np.float32)})[0][0]
        return emb / np.linalg.norm(emb)


class Bf16Encoder:
    """`embed` of a VoiceEncoder run under bf16 autocast on the CPU."""

    def __init__(self, encoder: VoiceEncoder):
        self.encoder = encoder

    def embed(self, wav: np.ndarray) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.encoder.embed(wav)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--bf16", action="store_true", help="also try bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow)")
    parser.add_argument("--onnx", action="store_true",
                        help="also try ONNX Runtime (pip install onnxruntime onnx)")
    args = parser.parse_args()
    reuse_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_encoder(Path(tmp) / "enc", config={})
        clips = test_audio(Path(tmp))
        fp32 = VoiceEncoder.from_pretrained(path)
        int8 = VoiceEncoder.from_pretrained(path, quantize=True)
        options = {"fp32, 2 threads": (fp32, 2), "fp32, 1 thread": (fp32, 1),
                   "int8 dynamic, 2 threads": (int8, 2), "int8 dynamic, 1 thread": (int8, 1)}
        if args.bf16:
            options["bf16 autocast, 2 threads"] = (Bf16Encoder(fp32), 2)
        if args.compile:
            compiled = VoiceEncoder.from_pretrained(path)
            compiled.model = torch.compile(compiled.model)
            start = time.perf_counter()
            torch.set_num_threads(2)
            try:
                compiled.embed(clips["synthetic voice"])
                print(f"torch.compile: first call (compiling) {time.perf_counter() - start:.1f} s")
                options["torch.compile, 2 threads"] = (compiled, 2)
            except Exception as err:  # report and go on: compile support varies by machine
                print(f"torch.compile failed: {type(err).__name__}: {str(err)[:200]}")
        if args.onnx:
            torch.set_num_threads(2)
            options["onnxruntime fp32, 2 threads"] = (OnnxEncoder(fp32, Path(tmp), False), 2)
            options["onnxruntime int8, 2 threads"] = (OnnxEncoder(fp32, Path(tmp), True), 2)
    wav = clips["synthetic voice"]
    reference = {name: fp32.embed(clip) for name, clip in clips.items()}
    times: dict[str, list[float]] = {name: [] for name in options}
    for name, (encoder, threads) in options.items():  # warm-up
        torch.set_num_threads(threads)
        encoder.embed(wav)
    for _ in range(args.rounds):
        for name, (encoder, threads) in options.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            encoder.embed(wav)
            times[name].append(time.perf_counter() - start)
    base = float(np.median(times["fp32, 2 threads"]))
    print(f"torch {torch.__version__}, wav2vec2-base x-vector, random weights, {SECONDS:g} s "
          f"utterance, median of {args.rounds} round-robin rounds; 2 shared CPUs")
    print(f"{'option':<26} {'median s':>9} {'p95 s':>7} {'speed-up':>9} " +
          " ".join(f"{'cos ' + n:>22}" for n in clips))
    for name, (encoder, threads) in options.items():
        torch.set_num_threads(threads)
        cosines = [float(encoder.embed(clip) @ reference[n]) for n, clip in clips.items()]
        med = float(np.median(times[name]))
        print(f"{name:<26} {med:>9.3f} {np.percentile(times[name], 95):>7.3f} "
              f"{base / med:>8.2f}x " + " ".join(f"{c:>22.4f}" for c in cosines))
    if len(reference) > 1:  # how far apart different inputs land: the scale cosines live on
        a, b = reference.values()
        print(f"for scale: fp32 cosine between the two clips' embeddings {float(a @ b):.4f}")


if __name__ == "__main__":
    main()

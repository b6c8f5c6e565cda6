"""Audio input: decode anything a person or a browser sends, return clean 16 kHz mono speech.

`load_audio(source)` accepts a file path, raw bytes, or Gradio's `(sample_rate, array)` tuple
and returns float32 mono samples at `SAMPLE_RATE`, DC removed, leading and trailing silence
trimmed. Anything unusable raises `AudioError` (a `ValueError`) whose message says what was
wrong and what to do; clipping only warns (`ClippingWarning`).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch
import torchaudio

SAMPLE_RATE = 16_000  # Hz, what wav2vec2 models expect
MIN_SPEECH_SECONDS = 1.0  # s of speech left after trimming silence
MAX_QUERY_SECONDS = 30.0  # s of speech in one query; enrollment passes max_seconds=None
MIN_INPUT_RATE = 4_000  # Hz; below this nothing speech-like survives
MAX_INPUT_RATE = 384_000  # Hz; the highest rate audio interfaces record at
MAX_FILE_BYTES = 100 * 1024 * 1024  # bytes; a 10 min 48 kHz stereo WAV is ~110 MB, FLAC less
MAX_DECODED_SECONDS = 20 * 60  # s of decoded audio; a few kB of compressed silence can hold hours
SILENCE_PEAK = 1e-3  # full scale; a recording whose peak stays below this is silent (-60 dBFS)
TRIM_RELATIVE_DB = 40.0  # dB below the loudest frame still counts as sound
TRIM_FRAME_SECONDS = 0.025  # s, frame for the trimming energy
TRIM_HOP_SECONDS = 0.010  # s
TRIM_MARGIN_SECONDS = 0.100  # s of context kept before and after the detected sound
CLIP_LEVEL = 0.999  # full scale; samples at or above count as clipped
CLIP_FRACTION_WARN = 0.001  # warn when more than 0.1 % of samples are clipped
FFMPEG_TIMEOUT_SECONDS = 60.0  # s, for one decode

SUPPORTED_FORMATS = "WAV, FLAC, OGG/Opus, MP3, M4A/AAC or WebM"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".webm")  # recordings

AudioSource = Union[str, os.PathLike, bytes, bytearray, tuple]

# Leading bytes of common non-audio files, to tell a person what they uploaded instead.
_NOT_AUDIO_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (or Office document)",
    b"\x7fELF": "a program",
}
TEXT_SNIFF_BYTES = 512  # a file whose first bytes are all printable text is not audio


class AudioError(ValueError):
    """The audio cannot be used; the message says why and what to do."""


class ClippingWarning(UserWarning):
    """The recording is clipped (too loud); it is used anyway."""


def load_audio(
    source: AudioSource,
    *,
    max_seconds: float | None = MAX_QUERY_SECONDS,
    min_seconds: float = MIN_SPEECH_SECONDS,
    trim: bool = True,
) -> np.ndarray:
    """Decode `source` into float32 mono samples at `SAMPLE_RATE`, shape [T].

    `source`: a path, raw file bytes, or `(sample_rate, array)` as Gradio's `gr.Audio`
    delivers it (int16/int32/uint8/float, shape [T] or [T, channels]). Multi-channel audio is
    averaged to mono, resampled with torchaudio, DC removed and (with `trim`) leading and
    trailing silence cut. `max_seconds=None` accepts any length (enrollment recordings are
    windowed by the encoder). Raises `AudioError` for anything unusable.
    """
    wav, rate, name = _decode(source)
    return prepare(wav, rate, name=name, max_seconds=max_seconds, min_seconds=min_seconds,
                   trim=trim)


def prepare(
    wav: np.ndarray,
    rate: int,
    *,
    name: str = "The recording",
    max_seconds: float | None = MAX_QUERY_SECONDS,
    min_seconds: float = MIN_SPEECH_SECONDS,
    trim: bool = True,
) -> np.ndarray:
    """Validate and normalise decoded samples `wav` [T] or [T, C] in full scale at `rate` Hz."""
    rate = int(rate)
    if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
        raise AudioError(
            f"{name} has a sample rate of {rate} Hz, which is not a real audio rate; expected "
            f"{MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz. Re-export it as a normal WAV or FLAC file."
        )
    wav = np.asarray(wav)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    if wav.ndim != 1:
        raise AudioError(f"{name} has samples of shape {wav.shape}; expected [time] or "
                         "[time, channels].")
    if wav.size == 0:
        raise AudioError(f"{name} is empty (no samples). Record again and speak for a few "
                         "seconds.")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{name} contains invalid samples (NaN or infinity); the file is "
                         "damaged. Record again or export it again from your editor.")
    wav = wav.astype(np.float32)
    clipped = float(np.mean(np.abs(wav) >= CLIP_LEVEL))
    if clipped > CLIP_FRACTION_WARN:
        warnings.warn(f"{name} is clipped ({clipped:.1%} of samples at full scale); "
                      "results may be worse. Record a little quieter.", ClippingWarning,
                      stacklevel=3)
    # 1. remove DC before anything measures levels
    wav = wav - wav.mean()
    if float(np.max(np.abs(wav))) < SILENCE_PEAK:
        raise AudioError(f"{name} is silent. Check that the microphone is on and not muted, "
                         "then record again.")
    # 2. resample to the model's rate
    if rate != SAMPLE_RATE:
        wav = torchaudio.functional.resample(torch.from_numpy(wav), rate, SAMPLE_RATE).numpy()
    # 3. cut silence at both ends, then check the speech length
    if trim:
        wav = trim_silence(wav)
    seconds = len(wav) / SAMPLE_RATE
    if seconds < min_seconds:
        heard = f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"
        raise AudioError(f"{name} has only {heard} of sound; speak for at least "
                         f"{min_seconds:g} s.")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{name} is {seconds:.1f} s long; the limit is {max_seconds:g} s. "
                         "Record a shorter clip or cut it.")
    return np.ascontiguousarray(wav, dtype=np.float32)


def trim_silence(wav: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut leading and trailing frames quieter than `TRIM_RELATIVE_DB` below the loudest frame.

    wav: [T] float32. Keeps `TRIM_MARGIN_SECONDS` of context on each side.
    """
    frame = int(TRIM_FRAME_SECONDS * rate)
    hop = int(TRIM_HOP_SECONDS * rate)
    if len(wav) <= frame:
        return wav
    frames = np.lib.stride_tricks.sliding_window_view(wav, frame)[::hop]
    db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(db > db.max() - TRIM_RELATIVE_DB)
    margin = int(TRIM_MARGIN_SECONDS * rate)
    start = max(0, loud[0] * hop - margin)
    end = min(len(wav), loud[-1] * hop + frame + margin)
    return wav[start:end]


def _decode(source: AudioSource) -> tuple[np.ndarray, int, str]:
    """Turn any accepted source into (samples [T] or [T, C] in full scale, rate, name)."""
    if isinstance(source, tuple):
        return _from_array_tuple(source)
    if isinstance(source, (bytes, bytearray)):
        return _decode_bytes(bytes(source), "The recording")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"Audio file not found: {path}. Check the path.")
        size = path.stat().st_size
        _check_size(size, path.name)
        with open(path, "rb") as f:
            data = f.read()
        return _decode_bytes(data, path.name)
    raise AudioError(f"Cannot read audio from a {type(source).__name__}; pass a file path, the "
                     "file's bytes, or a (sample_rate, samples) tuple.")


def _from_array_tuple(source: tuple) -> tuple[np.ndarray, int, str]:
    if len(source) != 2:
        raise AudioError("Expected a (sample_rate, samples) tuple.")
    rate, samples = source
    if isinstance(rate, np.ndarray) or not isinstance(samples, np.ndarray):  # e.g. swapped
        raise AudioError("Expected (sample_rate, samples) with samples a numpy array.")
    return _to_float(samples), int(rate), "The recording"


def _to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM to float in [-1, 1]; floats pass through. Shape [T] or [T, C] kept."""
    if samples.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.integer):
        return samples.astype(np.float32) / float(-np.iinfo(samples.dtype).min)
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32)
    raise AudioError(f"Samples of type {samples.dtype} are not audio; expected integer or "
                     "float PCM.")


def _check_size(size: int, name: str) -> None:
    if size == 0:
        raise AudioError(f"{name} is empty (0 bytes). Record again or choose another file.")
    if size > MAX_FILE_BYTES:
        raise AudioError(f"{name} is too large ({size / 2**20:.1f} MB; the limit is "
                         f"{MAX_FILE_BYTES / 2**20:.0f} MB). Upload a shorter or compressed "
                         "recording (FLAC, Opus, MP3).")


def _check_duration(frames: int, rate: int, name: str) -> None:
    """Refuse before decoding what would decode to more than `MAX_DECODED_SECONDS`."""
    if MIN_INPUT_RATE <= rate and frames > MAX_DECODED_SECONDS * rate:  # bad rates: prepare()
        raise AudioError(f"{name} lasts more than {MAX_DECODED_SECONDS / 60:.0f} min, the "
                         "limit. Cut it to the part with the voice.")


def _is_text(data: bytes) -> bool:
    """True when the first bytes are printable UTF-8 text (notes, an HTML error page)."""
    head = data[:TEXT_SNIFF_BYTES]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not a character cut at the sniffing boundary: binary
            return False
        text = head[:err.start].decode("utf-8")
    return bool(text) and all(ch.isprintable() or ch in "\t\r\n" for ch in text)


def _decode_bytes(data: bytes, name: str) -> tuple[np.ndarray, int, str]:
    _check_size(len(data), name)
    for magic, what in _NOT_AUDIO_MAGIC.items():
        if data.startswith(magic):
            raise AudioError(f"{name} is {what}, not audio. Upload a voice recording "
                             f"({SUPPORTED_FORMATS}).")
    if _is_text(data):
        raise AudioError(f"{name} is a text file, not audio. Upload a voice recording "
                         f"({SUPPORTED_FORMATS}).")
    # libsndfile reads WAV, FLAC, OGG/Vorbis/Opus and MP3 in process; the rest goes to ffmpeg
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            _check_duration(f.frames, f.samplerate, name)
            samples = f.read(dtype="float32", always_2d=False)
        return samples, int(f.samplerate), name
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        pass
    samples, rate = _decode_with_ffmpeg(data, name)
    return samples, rate, name


def _decode_with_ffmpeg(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode M4A/AAC, WebM and anything else ffmpeg knows; keep the native rate."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(f"{name} could not be decoded, and ffmpeg (needed for M4A and WebM) "
                         "is not installed. Convert it to WAV or FLAC, or install ffmpeg.")
    with tempfile.TemporaryDirectory(prefix="voiceface-") as tmp:
        src, dst = Path(tmp) / "input", Path(tmp) / "output.wav"
        src.write_bytes(data)  # a file, not a pipe: MP4 keeps its index at the end
        # -t: stop decoding just past the limit instead of filling the disk with hours
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(src), "-vn", "-map", "0:a:0",
               "-t", str(MAX_DECODED_SECONDS + 1), "-c:a", "pcm_f32le", "-f", "wav", str(dst)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired as err:
            raise AudioError(f"{name} took too long to decode; convert it to WAV or FLAC.") \
                from err
        if b"matches no streams" in proc.stderr:  # a container (video) without sound
            raise AudioError(f"{name} has no audio track. Upload a recording with sound "
                             f"({SUPPORTED_FORMATS}), or record with the microphone.")
        if proc.returncode != 0 or not dst.is_file() or dst.stat().st_size == 0:
            raise AudioError(f"{name} could not be decoded as audio; it is damaged or not a "
                             f"recording. Use {SUPPORTED_FORMATS}.")
        with sf.SoundFile(dst) as f:
            _check_duration(f.frames, f.samplerate, name)
            samples, rate = f.read(dtype="float32", always_2d=False), f.samplerate
    return samples, int(rate)

"""Audio input: decode anything a person or a browser sends, return clean 16 kHz mono speech.

`load_audio(source)` accepts a file path, raw bytes, or Gradio's `(sample_rate, array)` tuple
and returns float32 mono samples at `SAMPLE_RATE`, DC removed, leading and trailing silence
trimmed. Anything unusable raises `AudioError` (a `ValueError`) whose message says what was
wrong and what to do; clipping only warns (`ClippingWarning`).

Memory is bounded whatever comes in. The header's rate, channels and length are checked
before decoding (`MAX_DECODED_SECONDS`, `MAX_DECODED_SAMPLES`, and with `max_seconds` a raw
length of at most `RAW_SECONDS_FACTOR` times it). Then the samples are decoded twice in blocks
of `BLOCK_SAMPLES`, each block averaged to mono: once to check the levels and measure the DC,
once to remove it and resample to 16 kHz; only the 16 kHz mono result is kept. ffmpeg (M4A,
WebM, Matroska ...) is told to write 16 kHz mono and to stop at the same length. Files are
read where they are, bytes from the caller's buffer. One decode therefore holds at most the
16 kHz result (4 B x 16 kHz x its length: <= 77 MB at the 20-min cap, <= 7.7 MB for a query's
120 s) + about 60 MB of blocks and resampling buffers, so <= 140 MB in all (the peak RSS
growth is measured by `tests/test_audio_limits.py`; docs/security.md).
ffmpeg's temporary files are its output, <= 4 B x 16 kHz x (length cap + 1 s): 7.7 MB for a
query, 77 MB at the 20-min cap; and for bytes, a copy of them (<= `MAX_FILE_BYTES`, 100 MB).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch
import torchaudio

from .errors import InputError
from .memory import release_freed_memory

SAMPLE_RATE = 16_000  # Hz, what wav2vec2 models expect
MIN_SPEECH_SECONDS = 1.0  # s of speech left after trimming silence
MAX_QUERY_SECONDS = 30.0  # s of speech in one query; enrollment passes max_seconds=None
MIN_INPUT_RATE = 4_000  # Hz; below this nothing speech-like survives
MAX_INPUT_RATE = 384_000  # Hz; the highest rate audio interfaces record at
MAX_FILE_BYTES = 100 * 1024 * 1024  # bytes; a 10 min 48 kHz stereo WAV is ~110 MB, FLAC less
MAX_DECODED_SECONDS = 20 * 60  # s of decoded audio; a few kB of compressed silence can hold hours
MAX_DECODED_SAMPLES = 20 * 60 * 96_000 * 2  # samples over all channels (20 min of 96 kHz stereo)
RAW_SECONDS_FACTOR = 4  # with max_seconds, a file may last this many times it before trimming
BLOCK_SAMPLES = 1 << 20  # samples over all channels decoded at once (4 MB of float32)
RESAMPLE_STEP_SECONDS = 4.0  # s of 16 kHz output resampled at once
RESAMPLE_ZERO_CROSSINGS = 6  # torchaudio's lowpass_filter_width: sinc lobes on each side
RESAMPLE_ROLLOFF = 0.99  # cutoff as a fraction of the lower rate's Nyquist frequency
# Elements of torchaudio's sinc kernel table, [new, orig + 2 * width] for the rates reduced by
# their gcd: 76 000 at 44.1 kHz, but 128 million (GBs) at an odd rate such as 8001 Hz.
MAX_RESAMPLE_KERNEL = 4_000_000
SILENCE_PEAK = 1e-3  # full scale; a recording whose peak stays below this is silent (-60 dBFS)
TRIM_RELATIVE_DB = 40.0  # dB below the loudest frame still counts as sound
TRIM_FRAME_SECONDS = 0.025  # s, frame for the trimming energy
TRIM_HOP_SECONDS = 0.010  # s
TRIM_MARGIN_SECONDS = 0.100  # s of context kept before and after the detected sound
TRIM_CHUNK_FRAMES = 4096  # frames whose energy is computed at once (13 MB of float64)
RELEASE_AFTER_SAMPLES = 16_000_000  # samples decoded (all channels) after which the freed
# memory is given back to the system (`voiceface.memory`): 64 MB of float32 blocks
CLIP_LEVEL = 0.999  # full scale; samples at or above count as clipped
CLIP_FRACTION_WARN = 0.001  # warn when more than 0.1 % of samples are clipped
FFMPEG_TIMEOUT_SECONDS = 60.0  # s, for one decode
# The only containers ffmpeg may open: recordings, never playlists (HLS, concat, ...) that
# would make it read other files on the server.
FFMPEG_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,ogg,mp3,aac,wav,flac"

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
SF_UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's length of a streamed file (e.g. FLAC from a pipe)


class AudioError(InputError):
    """The audio cannot be used; the message says why and what to do (and `reason`, for the
    problems of a person's own recording)."""


class ClippingWarning(UserWarning):
    """The recording is clipped (too loud); it is used anyway."""


class _ReadError(Exception):
    """libsndfile failed in the middle of a file (another decoder may read it)."""


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
    averaged to mono, resampled with torchaudio's sinc resampler, DC removed and (with `trim`)
    leading and trailing silence cut. `max_seconds=None` accepts any length up to
    `MAX_DECODED_SECONDS` (enrollment recordings are windowed by the encoder); with a limit,
    files longer than `RAW_SECONDS_FACTOR` times it are refused before decoding. Raises
    `AudioError` for anything unusable.
    """
    wav, name = _decode(source, max_seconds)
    return _finish(wav, name, max_seconds=max_seconds, min_seconds=min_seconds, trim=trim)


def trim_silence(wav: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut leading and trailing frames quieter than `TRIM_RELATIVE_DB` below the loudest frame.

    wav: [T] float32. Keeps `TRIM_MARGIN_SECONDS` of context on each side.
    """
    frame = int(TRIM_FRAME_SECONDS * rate)
    hop = int(TRIM_HOP_SECONDS * rate)
    if len(wav) <= frame:
        return wav
    frames = np.lib.stride_tricks.sliding_window_view(wav, frame)[::hop]  # a view, no copy
    db = np.concatenate([  # in chunks: the float64 copy of every frame at once is 20x the audio
        10.0 * np.log10(np.mean(chunk.astype(np.float64) ** 2, axis=1) + 1e-12)
        for chunk in (frames[i:i + TRIM_CHUNK_FRAMES]
                      for i in range(0, len(frames), TRIM_CHUNK_FRAMES))])
    loud = np.flatnonzero(db > db.max() - TRIM_RELATIVE_DB)
    margin = int(TRIM_MARGIN_SECONDS * rate)
    start = max(0, loud[0] * hop - margin)
    end = min(len(wav), loud[-1] * hop + frame + margin)
    return wav[start:end]


@dataclass
class _Stream:
    """Decoded audio on its way in: blocks of float32 samples [n, channels] in full scale."""

    name: str
    rate: int
    channels: int
    frames: int  # as the header declares; checked again while decoding
    blocks: Callable[[], Iterator[np.ndarray]]  # from the start, each time it is called
    cut: bool = False  # the decoder stopped at a length cap: `frames` is a lower bound


def _finish(wav: np.ndarray, name: str, *, max_seconds: float | None, min_seconds: float,
            trim: bool) -> np.ndarray:
    """Trim 16 kHz mono `wav` [T] and check how much speech is left."""
    if trim:
        wav = trim_silence(wav)
    seconds = len(wav) / SAMPLE_RATE
    if seconds < min_seconds:
        heard = f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"
        raise AudioError(f"{name} has only {heard} of sound; speak for at least "
                         f"{min_seconds:g} s.", "too_short", seconds=seconds,
                         min_seconds=min_seconds)
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{name} is {seconds:.1f} s long; the limit is {max_seconds:g} s. "
                         "Record a shorter clip or cut it.", "too_long", seconds=seconds,
                         max_seconds=max_seconds)
    return np.ascontiguousarray(wav, dtype=np.float32)


def _raw_limit(max_seconds: float | None) -> float:
    """Seconds of audio decoded at most: the rest could only be silence around the speech,
    and trimming cannot cut minutes of it; a recording with a long silent tail can be cut."""
    if max_seconds is None:
        return MAX_DECODED_SECONDS
    return min(MAX_DECODED_SECONDS, RAW_SECONDS_FACTOR * max_seconds)


def _too_long(name: str, frames: int, rate: int, max_seconds: float | None,
              cut: bool) -> AudioError | None:
    """The error for `frames` at `rate` over a length limit, or None; `cut`: at least that."""
    seconds = frames / rate
    if seconds > MAX_DECODED_SECONDS:
        return AudioError(f"{name} lasts more than {MAX_DECODED_SECONDS / 60:.0f} min, the "
                          "limit. Cut it to the part with the voice.", "too_many_minutes",
                          minutes=MAX_DECODED_SECONDS / 60)
    if seconds > _raw_limit(max_seconds):
        length = f"more than {_raw_limit(max_seconds):g} s" if cut else f"{seconds:.1f} s"
        return AudioError(f"{name} is {length} long; the limit is {max_seconds:g} s of speech "
                          f"(with silence around it, {_raw_limit(max_seconds):g} s). Record a "
                          "shorter clip or cut it.", "too_long_with_silence",
                          max_seconds=max_seconds, raw_seconds=_raw_limit(max_seconds))
    return None


def _check_header(stream: _Stream, max_seconds: float | None) -> None:
    """Refuse before decoding what no usable recording looks like or what would be too much."""
    name, rate = stream.name, stream.rate
    if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
        raise AudioError(
            f"{name} has a sample rate of {rate} Hz, which is not a real audio rate; expected "
            f"{MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz. Re-export it as a normal WAV or FLAC file."
        )
    if rate != SAMPLE_RATE and _kernel_elements(rate, SAMPLE_RATE) > MAX_RESAMPLE_KERNEL:
        raise AudioError(
            f"{name} has an unusual sample rate of {rate} Hz, which would take too much memory "
            "to convert. Re-export it at 16, 44.1 or 48 kHz.")
    error = _too_long(name, stream.frames, rate, max_seconds, stream.cut)
    if error is not None:
        raise error
    if stream.frames * stream.channels > MAX_DECODED_SAMPLES:
        raise AudioError(
            f"{name} holds too many samples ({stream.channels} channels at {rate} Hz for "
            f"{stream.frames / rate:.0f} s; the limit is {MAX_DECODED_SAMPLES / 1e6:.0f} million, "
            "e.g. 20 min of 96 kHz stereo). Export the voice as mono or stereo at 16-48 kHz.")


def _decode_to_mono(stream: _Stream, max_seconds: float | None) -> np.ndarray:
    """Average `stream` to mono block by block and resample it to 16 kHz, in two passes: the
    first checks the levels and measures the DC, the second removes it and resamples.
    Returns float32 [T] at `SAMPLE_RATE`."""
    _check_header(stream, max_seconds)
    try:
        return _two_passes(stream, max_seconds)
    finally:
        if stream.frames * stream.channels > RELEASE_AFTER_SAMPLES:
            release_freed_memory()  # a large decode's blocks would stay in the heap for good


def _two_passes(stream: _Stream, max_seconds: float | None) -> np.ndarray:
    """`_decode_to_mono` after the header check."""
    name, rate = stream.name, stream.rate
    limit = min(MAX_DECODED_SAMPLES // stream.channels, int(_raw_limit(max_seconds) * rate))
    frames, total, clipped, low, high = 0, 0.0, 0, math.inf, -math.inf
    for mono in _mono_blocks(stream):
        if not np.all(np.isfinite(mono)):
            raise AudioError(f"{name} contains invalid samples (NaN or infinity); the file is "
                             "damaged. Record again or export it again from your editor.",
                             "damaged")
        frames += len(mono)
        if frames > limit:  # the header understated the length
            raise (_too_long(name, frames, rate, max_seconds, cut=True)
                   or AudioError(f"{name} holds too many samples; export the voice as mono "
                                 "or stereo at 16-48 kHz."))
        if len(mono) == 0:
            continue
        total += float(mono.sum(dtype=np.float64))
        clipped += int(np.count_nonzero(np.abs(mono) >= CLIP_LEVEL))
        low, high = min(low, float(mono.min())), max(high, float(mono.max()))
    if frames == 0:
        raise AudioError(f"{name} is empty (no samples). Record again and speak for a few "
                         "seconds.", "empty")
    if clipped / frames > CLIP_FRACTION_WARN:
        warnings.warn(f"{name} is clipped ({clipped / frames:.1%} of samples at full scale); "
                      "results may be worse. Record a little quieter.", ClippingWarning,
                      stacklevel=3)
    mean = np.float32(total / frames)  # DC, removed before anything measures levels
    if max(high - mean, mean - low) < SILENCE_PEAK:
        raise AudioError(f"{name} is silent. Check that the microphone is on and not muted, "
                         "then record again.", "silent")
    # the first pass counted the frames: the result is allocated once, at its final size
    resampler = _StreamResampler(rate, SAMPLE_RATE) if rate != SAMPLE_RATE else None
    out = np.empty(resampler.output_length(frames) if resampler else frames, np.float32)
    filled = 0
    for mono in _mono_blocks(stream):
        for piece in resampler.push(mono - mean) if resampler else [mono - mean]:
            out[filled:filled + len(piece)] = piece
            filled += len(piece)
    if resampler:
        out[filled:] = resampler.flush()
    return out


def _mono_blocks(stream: _Stream) -> Iterator[np.ndarray]:
    """The stream from its start, block by block, averaged over channels: float32 [n]."""
    for block in stream.blocks():
        yield block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]


class _StreamResampler:
    """Resample mono blocks as they come, to what `torchaudio.functional.resample` gives for
    the whole signal at once: each step is resampled with enough real samples on both sides
    to cover the sinc kernel, and only its own outputs are kept."""

    def __init__(self, rate: int, new_rate: int):
        self.rate, self.new_rate = rate, new_rate
        gcd = math.gcd(rate, new_rate)
        self.orig, self.new = rate // gcd, new_rate // gcd  # output frame k*new <- input k*orig
        half_kernel = _sinc_width(self.orig, self.new)
        # both multiples of orig, so every step starts on an input frame an output lands on
        self.context = self.orig * (math.ceil(half_kernel / self.orig) + 1)
        self.step = self.orig * max(1, round(RESAMPLE_STEP_SECONDS * new_rate / self.new))
        self.buffer = np.zeros(0, np.float32)
        self.left = 0  # samples of context before the next step in `buffer`

    def push(self, mono: np.ndarray) -> list[np.ndarray]:
        """Take the next samples [n]; return the 16 kHz outputs that are now complete."""
        self.buffer = np.concatenate([self.buffer, mono])
        out = []
        while len(self.buffer) - self.left >= self.step + self.context:
            chunk = self.buffer[:self.left + self.step + self.context]
            first = self.left // self.orig * self.new
            out.append(self._resample(chunk)[first:first + self.step // self.orig * self.new])
            self.buffer = self.buffer[self.left + self.step - self.context:]
            self.left = self.context
        return out

    def output_length(self, frames: int) -> int:
        """Samples out for `frames` samples in, as torchaudio gives for the whole signal."""
        return math.ceil(frames * self.new / self.orig)

    def flush(self) -> np.ndarray:
        """The outputs of the samples still held, at the end of the signal."""
        rest = len(self.buffer) - self.left
        if rest == 0:
            return np.zeros(0, np.float32)
        first = self.left // self.orig * self.new
        return self._resample(self.buffer)[first:first + self.output_length(rest)]

    def _resample(self, chunk: np.ndarray) -> np.ndarray:
        return torchaudio.functional.resample(
            torch.from_numpy(np.ascontiguousarray(chunk)), self.rate, self.new_rate,
            lowpass_filter_width=RESAMPLE_ZERO_CROSSINGS, rolloff=RESAMPLE_ROLLOFF).numpy()


def _sinc_width(orig: int, new: int) -> int:
    """Input samples on each side of torchaudio's sinc kernel for gcd-reduced rates."""
    return math.ceil(RESAMPLE_ZERO_CROSSINGS * orig / (min(orig, new) * RESAMPLE_ROLLOFF))


def _kernel_elements(rate: int, new_rate: int) -> int:
    """Size of the kernel table torchaudio builds to resample `rate` to `new_rate`."""
    gcd = math.gcd(rate, new_rate)
    orig, new = rate // gcd, new_rate // gcd
    return new * (orig + 2 * _sinc_width(orig, new))


def _decode(source: AudioSource, max_seconds: float | None) -> tuple[np.ndarray, str]:
    """Any accepted source as (16 kHz mono float32 [T] with DC removed, its name)."""
    if isinstance(source, tuple):
        return _decode_to_mono(_from_array_tuple(source), max_seconds), "The recording"
    if isinstance(source, (bytes, bytearray)):
        data: bytes | Path = bytes(source)
        name, size, head = "The recording", len(data), data[:TEXT_SNIFF_BYTES]
    elif isinstance(source, (str, os.PathLike)):
        data = Path(source).absolute()  # read where it is: neither memory nor a copy holds it
        name, size, head = data.name, *_stat_file(data)
    else:
        raise AudioError(f"Cannot read audio from a {type(source).__name__}; pass a file path, "
                         "the file's bytes, or a (sample_rate, samples) tuple.")
    _check_content(head, size, name)
    # libsndfile reads WAV, FLAC, OGG/Vorbis/Opus and MP3 in process; ffmpeg reads the rest,
    # streamed files (no length in the header: libsndfile fails at their end) and whatever
    # libsndfile fails to read
    try:
        f = sf.SoundFile(data if isinstance(data, Path) else io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        f = None
    if f is not None:
        with f:
            if f.frames != SF_UNKNOWN_FRAMES:
                stream = _Stream(name, int(f.samplerate), f.channels, f.frames,
                                 lambda: _read_blocks(f))
                with contextlib.suppress(_ReadError):
                    return _decode_to_mono(stream, max_seconds), name
    with _ffmpeg_stream(data, name, max_seconds) as stream:
        try:
            return _decode_to_mono(stream, max_seconds), name
        except _ReadError:
            raise AudioError(f"{name} could not be decoded as audio; it is damaged. Use "
                             f"{SUPPORTED_FORMATS}.", "unreadable") from None


def _stat_file(path: Path) -> tuple[int, bytes]:
    """The size of the file at `path` and its first bytes; errors name the file, never the
    server's folders."""
    if path.is_dir():
        raise AudioError(f"'{path.name}' is a folder, not an audio file. Choose a recording "
                         f"({SUPPORTED_FORMATS}).")
    if not path.is_file():
        raise AudioError(f"Audio file '{path.name}' not found. Check the file name, or upload "
                         "the recording again.")
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_size, f.read(TEXT_SNIFF_BYTES)
    except OSError as err:
        raise AudioError(f"Audio file '{path.name}' could not be read ({err.strerror}). Check "
                         "that it is readable, or upload it again.") from None


def _read_blocks(f: sf.SoundFile) -> Iterator[np.ndarray]:
    """`f` from its start, in blocks [n, channels] float32 of about `BLOCK_SAMPLES` samples."""
    frames = max(1, BLOCK_SAMPLES // f.channels)
    try:
        f.seek(0)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise _ReadError from err
    while True:
        try:
            block = f.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise _ReadError from err
        if len(block) == 0:
            return
        yield block


def _from_array_tuple(source: tuple) -> _Stream:
    if len(source) != 2:
        raise AudioError("Expected a (sample_rate, samples) tuple.")
    rate, samples = source
    if isinstance(rate, np.ndarray) or not isinstance(samples, np.ndarray):  # e.g. swapped
        raise AudioError("Expected (sample_rate, samples) with samples a numpy array.")
    return _array_stream(samples, rate, "The recording")


def _array_stream(samples: np.ndarray, rate: int, name: str) -> _Stream:
    """Samples [T] or [T, C] already in memory, as blocks converted to float one at a time."""
    _to_float(samples[:0])  # refuse non-audio dtypes before anything else
    if samples.ndim not in (1, 2):
        raise AudioError(f"{name} has samples of shape {samples.shape}; expected [time] or "
                         "[time, channels].")
    if samples.ndim == 1:
        samples = samples[:, None]
    frames = max(1, BLOCK_SAMPLES // max(1, samples.shape[1]))
    return _Stream(name, int(rate), samples.shape[1], len(samples),
                   lambda: (_to_float(samples[i:i + frames])
                            for i in range(0, len(samples), frames)))


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
        raise AudioError(f"{name} is empty (0 bytes). Record again or choose another file.",
                         "empty")
    if size > MAX_FILE_BYTES:
        raise AudioError(f"{name} is too large ({size / 2**20:.1f} MB; the limit is "
                         f"{MAX_FILE_BYTES / 2**20:.0f} MB). Upload a shorter or compressed "
                         "recording (FLAC, Opus, MP3).", "too_large", megabytes=size / 2**20,
                         limit_megabytes=MAX_FILE_BYTES / 2**20)


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


def _check_content(head: bytes, size: int, name: str) -> None:
    """Refuse empty, oversized and obviously non-audio files (from their first bytes `head`
    and `size`) with what they are."""
    _check_size(size, name)
    for magic, what in _NOT_AUDIO_MAGIC.items():
        if head.startswith(magic):
            raise AudioError(f"{name} is {what}, not audio. Upload a voice recording "
                             f"({SUPPORTED_FORMATS}).", "not_audio")
    if _is_text(head):
        raise AudioError(f"{name} is a text file, not audio. Upload a voice recording "
                         f"({SUPPORTED_FORMATS}).", "not_audio")


@contextlib.contextmanager
def _ffmpeg_stream(data: bytes | Path, name: str, max_seconds: float | None
                   ) -> Iterator[_Stream]:
    """Decode M4A/AAC, WebM and anything else ffmpeg knows to 16 kHz mono, stopping just past
    the length limit, so that neither its output file nor our memory grows with the input's
    rate, channels or length."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(f"{name} could not be decoded, and ffmpeg (needed for M4A and WebM) "
                         "is not installed. Convert it to WAV or FLAC, or install ffmpeg.")
    with tempfile.TemporaryDirectory(prefix="voiceface-") as tmp:
        src, dst = Path(tmp) / "input", Path(tmp) / "output.wav"
        if isinstance(data, Path):
            src = data  # absolute: ffmpeg takes it for neither an option nor a protocol
        else:
            src.write_bytes(data)  # a file, not a pipe: MP4 keeps its index at the end
        # -t: one second past the limit, so that a longer file is seen to be longer;
        # -rematrix_maxval 1: mono is the channels' mean, as for other files (not their sum/√2)
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-format_whitelist", FFMPEG_FORMATS,
               "-i", str(src), "-vn", "-map", "0:a:0",
               "-t", str(_raw_limit(max_seconds) + 1), "-ac", "1", "-ar", str(SAMPLE_RATE),
               "-rematrix_maxval", "1", "-c:a", "pcm_f32le", "-f", "wav", str(dst)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired as err:
            raise AudioError(f"{name} took too long to decode; convert it to WAV or FLAC.") \
                from err
        if b"matches no streams" in proc.stderr:  # a container (video) without sound
            raise AudioError(f"{name} has no audio track. Upload a recording with sound "
                             f"({SUPPORTED_FORMATS}), or record with the microphone.",
                             "no_audio_track")
        if proc.returncode != 0 or not dst.is_file() or dst.stat().st_size == 0:
            raise AudioError(f"{name} could not be decoded as audio; it is damaged or not a "
                             f"recording. Use {SUPPORTED_FORMATS}.", "unreadable")
        with sf.SoundFile(dst) as f:
            yield _Stream(name, int(f.samplerate), f.channels, f.frames,
                          lambda: _read_blocks(f), cut=True)

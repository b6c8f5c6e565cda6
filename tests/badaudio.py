"""A corpus of bad (and borderline good) audio files, generated on the fly: no binaries committed.

`write_corpus(directory)` writes every case as a file and returns `{name: Case}`. A case either
decodes to usable speech (`expect=None`) or must be refused with an `AudioError` whose message
matches every pattern in `expect` (what was wrong, and what to do).
"""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from voiceface.audio import MAX_FILE_BYTES, SAMPLE_RATE
from voiceface.devbundle import synthetic_voice

SPEECH_SECONDS = 2.5  # s of speech in the cases that should be accepted


@dataclass(frozen=True)
class Case:
    path: Path
    expect: tuple[str, ...] | None  # regexes the AudioError message must match; None = accepted
    why: str  # what the file is, for the report


def _wav(path: Path, wav: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, wav, rate, format="WAV", subtype=subtype)
    return path


def _ffmpeg(path: Path, src: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *args, str(path)],
                   check=True)
    return path


def write_corpus(directory: Path) -> dict[str, Case]:
    """Write every case into `directory`; return them by name (insertion order = report order)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    voice = synthetic_voice(SPEECH_SECONDS, seed=3)
    voice48 = synthetic_voice(SPEECH_SECONDS, rate=48_000, seed=3)
    good = _wav(d / "good.wav", voice, SAMPLE_RATE)
    cases: dict[str, Case] = {}

    def add(name: str, path: Path, expect: tuple[str, ...] | None, why: str) -> None:
        cases[name] = Case(path, expect, why)

    # -- broken or not audio at all
    empty = d / "empty.wav"
    empty.write_bytes(b"")
    add("empty file", empty, ("empty", "Record again"), "0 bytes")
    add("truncated header", _bytes(d / "truncated.wav", good.read_bytes()[:30]),
        ("could not be decoded", "Use WAV"), "the first 30 bytes of a WAV")
    add("header only", _bytes(d / "header-only.wav", good.read_bytes()[:44]),
        ("empty", "speak for a few"), "a WAV header with no samples")
    add("truncated data", _bytes(d / "cut.wav", good.read_bytes()[:44 + 2 * SAMPLE_RATE * 2]),
        None, "a WAV cut after 2 s of its samples (header says more)")
    add("random bytes", _bytes(d / "random.wav", np.random.default_rng(0).bytes(20_000)),
        ("could not be decoded", "not a recording"), "20 kB of random bytes named .wav")
    add("text file", _bytes(d / "notes.wav", b"Meeting notes: bring the microphone.\n" * 40),
        ("text file, not audio", "Upload a voice recording"), "plain text named .wav")
    add("html page", _bytes(d / "download.wav",
                            b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"),
        ("text file, not audio",), "an HTML error page saved as .wav")
    png = d / "photo.png"
    Image.new("RGB", (64, 64), (200, 120, 90)).save(png)
    add("png image", png, ("PNG image, not audio", "voice recording"), "a PNG photo")
    jpg_buf = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 120, 90)).save(jpg_buf, format="JPEG")
    add("jpeg named .wav", _bytes(d / "photo.wav", jpg_buf.getvalue()),
        ("JPEG image, not audio",), "a JPEG photo renamed .wav")
    add("pdf", _bytes(d / "letter.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"),
        ("PDF document, not audio",), "a minimal PDF")
    zip_path = d / "voices.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.write(good, "good.wav")
    add("zip of a wav", zip_path, ("ZIP archive", "not audio"), "a ZIP holding a good WAV")
    add("video, no sound", _ffmpeg(d / "silent-video.webm", png, "-loop", "1", "-t", "1",
                                   "-c:v", "libvpx", "-an"),
        ("no audio track", "record"), "a WebM video without an audio stream")

    # -- decodes, but the content is unusable
    add("50 ms clip", _wav(d / "50ms.wav", voice[:SAMPLE_RATE // 20], SAMPLE_RATE),
        ("only 50 ms of sound", "at least 1 s"), "50 ms of speech")
    add("pure silence", _wav(d / "silence.wav", np.zeros(3 * SAMPLE_RATE), SAMPLE_RATE),
        ("silent", "microphone"), "3 s of digital zeros")
    add("DC only", _wav(d / "dc.wav", np.full(3 * SAMPLE_RATE, 0.3), SAMPLE_RATE),
        ("silent",), "3 s of a constant 0.3")
    nan = voice.copy()
    nan[1000:1010] = np.nan
    add("NaN samples", _wav(d / "nan.wav", nan, SAMPLE_RATE, "FLOAT"),
        ("NaN", "damaged"), "float WAV with 10 NaN samples")
    inf = voice.copy()
    inf[500] = np.inf
    add("Inf sample", _wav(d / "inf.wav", inf, SAMPLE_RATE, "FLOAT"),
        ("infinity", "damaged"), "float WAV with one +Inf sample")
    add("10-minute clip", _wav(d / "10min.wav", np.tile(voice, int(600 / SPEECH_SECONDS)),
                               SAMPLE_RATE),
        (r"\d{3}\.\d s long", "limit is 30 s", "shorter"), "10 min of speech, 16 kHz 16-bit (19 MB)")
    add("3 kHz sample rate", _wav(d / "3k.wav", voice[::5], 3_200),
        ("3200 Hz", "not a real audio rate"), "speech stored at 3.2 kHz")
    hours = d / "bomb.flac"  # 2 h of digital silence: a tiny file that decodes to 460 MB
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "anullsrc=r=16000:cl=mono", "-t", "7200", "-c:a", "flac",
                    "-sample_fmt", "s16", str(hours)], check=True)
    add("2 h FLAC (decompression bomb)", hours, ("more than 20 min", "Cut it"),
        f"2 h of silence in {hours.stat().st_size // 1024} kB of FLAC")
    huge = d / "huge.wav"
    with open(huge, "wb") as f:  # sparse: over the limit without writing 100 MB
        f.truncate(MAX_FILE_BYTES + 1)
    add("over the size limit", huge, ("limit is 100 MB", "shorter or compressed"),
        "a sparse file 1 byte over 100 MB")

    # -- unusual but usable
    add("short but OK", _wav(d / "short-ok.wav", voice[:int(1.5 * SAMPLE_RATE)], SAMPLE_RATE),
        None, "1.5 s of speech")
    add("DC offset", _wav(d / "dc-offset.wav", voice * 0.5 + 0.4, SAMPLE_RATE), None,
        "speech riding on a +0.4 offset")
    add("clipping", _wav(d / "clipped.wav", np.clip(voice * 6, -1, 1), SAMPLE_RATE), None,
        "speech amplified 6x and clipped (warns)")
    add("quiet", _wav(d / "quiet.wav", voice * 0.01, SAMPLE_RATE), None,
        "speech peaking at -46 dBFS")
    add("8-bit WAV", _wav(d / "8bit.wav", voice, SAMPLE_RATE, "PCM_U8"), None,
        "unsigned 8-bit PCM")
    add("float WAV over full scale", _wav(d / "hot.wav", voice * 3, SAMPLE_RATE, "FLOAT"),
        None, "32-bit float peaking at 1.5")
    add("6 channels", _wav(d / "6ch.wav", np.stack([voice48 * g for g in
                                                    (1, .8, .6, .4, .2, 0)], axis=1), 48_000),
        None, "5.1 surround at 48 kHz")
    add("192 kHz", _wav(d / "192k.wav", synthetic_voice(SPEECH_SECONDS, rate=192_000, seed=3),
                        192_000, "PCM_24"), None, "24-bit at 192 kHz")
    add("8 kHz", _wav(d / "8k.wav", synthetic_voice(SPEECH_SECONDS, rate=8_000, seed=3),
                      8_000), None, "telephone rate")
    src48 = _wav(d / "src48.wav", voice48, 48_000)
    add("mp3 named .wav", _ffmpeg(d / "really-mp3.wav", src48, "-f", "mp3"), None,
        "MP3 bytes with a .wav name")
    add("ogg/opus", _ffmpeg(d / "clip.ogg", src48, "-c:a", "libopus"), None, "Opus in Ogg")
    add("m4a/aac", _ffmpeg(d / "clip.m4a", src48, "-c:a", "aac"), None, "AAC in MP4 (iPhone)")
    add("webm/opus", _ffmpeg(d / "clip.webm", src48, "-c:a", "libopus"), None,
        "Opus in WebM (Chrome's recorder)")
    return cases


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def over_upload_limit(directory: Path, limit_bytes: int) -> Path:
    """A real WAV file just over `limit_bytes` (for an upload limit, which a sparse file
    would not exercise: the bytes have to travel)."""
    frames = (limit_bytes - 44) // 2 + 1
    wav = np.tile(synthetic_voice(SPEECH_SECONDS, seed=4), frames // int(SPEECH_SECONDS *
                                                                        SAMPLE_RATE) + 1)
    path = Path(directory) / "over-upload-limit.wav"
    sf.write(path, wav[:frames], SAMPLE_RATE, subtype="PCM_16")
    assert os.path.getsize(path) > limit_bytes
    return path

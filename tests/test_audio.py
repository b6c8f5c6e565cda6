"""Audio front end: every accepted input form, every format a browser records, every refusal."""

from __future__ import annotations

import io
import pickle
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from voiceface.audio import (
    MAX_QUERY_SECONDS,
    SAMPLE_RATE,
    TRIM_FRAME_SECONDS,
    TRIM_MARGIN_SECONDS,
    AudioError,
    ClippingWarning,
    load_audio,
)


def wav_bytes(wav: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_array_tuple_int16_mono(speech):
    wav = speech(3.0)
    out = load_audio((SAMPLE_RATE, (wav * 32767).astype(np.int16)), trim=False)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == len(wav)
    assert corr(out, wav) > 0.999


def test_48k_stereo_int16_resampled_to_16k_mono(speech):
    wav48 = speech(2.0, rate=48_000)
    stereo = (np.stack([wav48, wav48], axis=1) * 32767).astype(np.int16)  # [T, 2] as Gradio
    out = load_audio((48_000, stereo), trim=False)
    assert len(out) == 2 * SAMPLE_RATE
    assert corr(out, speech(2.0, rate=SAMPLE_RATE)) > 0.99


def test_dc_offset_removed(speech):
    out = load_audio((SAMPLE_RATE, speech(2.0) + 0.3), trim=False)
    assert abs(float(out.mean())) < 1e-3


def offset_in(wav: np.ndarray, part: np.ndarray) -> int:
    """Where `part` (a stretch of `wav`, maybe shifted by a constant: DC removal) starts."""
    probe = np.diff(part[:64])
    windows = np.lib.stride_tricks.sliding_window_view(np.diff(wav), len(probe))
    found = np.flatnonzero(np.all(np.abs(windows - probe) < 1e-5, axis=1))
    assert len(found) == 1, f"the kept audio is found {len(found)} times in the input"
    return int(found[0])


def test_silence_trimmed_at_both_ends_keeping_the_margin_and_all_the_speech(speech):
    """The kept audio starts the margin before the speech and ends the margin after it; the
    sound is found in frames, which may add up to one frame more, never less."""
    rng = np.random.default_rng(0)
    quiet = lambda s: 1e-4 * rng.standard_normal(int(s * SAMPLE_RATE))  # noqa: E731
    wav = np.concatenate([quiet(2.0), speech(2.0), quiet(3.0)]).astype(np.float32)
    onset, offset = 2 * SAMPLE_RATE, 4 * SAMPLE_RATE  # samples: the speech is wav[onset:offset]
    margin = round(TRIM_MARGIN_SECONDS * SAMPLE_RATE)
    frame = round(TRIM_FRAME_SECONDS * SAMPLE_RATE)
    out = load_audio((SAMPLE_RATE, wav))
    start = offset_in(wav, out)
    end = start + len(out)
    assert onset - margin - frame <= start <= onset - margin
    assert offset + margin <= end <= offset + margin + frame


def test_the_minimum_length_counts_speech_after_trimming(speech):
    """0.6 s of speech in 3.6 s of recording is too little: silence is not speech."""
    silence = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    padded = np.concatenate([silence, speech(0.6), silence])
    with pytest.raises(AudioError, match=r"has only 0\.\d s of sound; speak for at least 1 s"
                       ) as caught:
        load_audio((SAMPLE_RATE, padded))
    # its reason and figures, for interfaces that say it in another language, survive a
    # pickle (as a ZeroGPU worker sends errors back)
    error = pickle.loads(pickle.dumps(caught.value))
    assert type(error) is AudioError and str(error) == str(caught.value)
    assert error.reason == "too_short" and error.values["min_seconds"] == 1.0
    assert 0.5 <= error.values["seconds"] < 1.0
    kept = len(load_audio((SAMPLE_RATE, padded), min_seconds=0.5)) / SAMPLE_RATE
    assert 0.6 <= kept < 1.0  # the speech and a margin either side of it


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_wav_sample_formats(speech, subtype):
    out = load_audio(wav_bytes(speech(2.0), SAMPLE_RATE, subtype), trim=False)
    assert corr(out, speech(2.0)) > 0.99


def test_path_and_bytes_agree(speech, tmp_path):
    path = tmp_path / "clip.flac"
    sf.write(path, speech(2.0, rate=44_100), 44_100)
    a, b = load_audio(path), load_audio(path.read_bytes())
    assert np.array_equal(a, b)
    assert load_audio(str(path)).shape == a.shape


FFMPEG_FORMATS = {  # extension: ffmpeg encoder arguments (what browsers and phones record)
    "ogg": ["-c:a", "libopus", "-b:a", "64k"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "m4a": ["-c:a", "aac", "-b:a", "128k"],
    "webm": ["-c:a", "libopus", "-b:a", "64k"],
}


@pytest.mark.parametrize("ext", sorted(FFMPEG_FORMATS))
def test_compressed_formats_decode(speech, tmp_path, ext):
    assert shutil.which("ffmpeg"), "ffmpeg is needed to encode the test files (apt ffmpeg)"
    src = tmp_path / "clip.wav"
    sf.write(src, speech(3.0, rate=48_000), 48_000)
    dst = tmp_path / f"clip.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *FFMPEG_FORMATS[ext],
                    str(dst)], check=True)
    out = load_audio(dst.read_bytes(), trim=False)  # bytes: no file name to hint the format
    assert abs(len(out) / SAMPLE_RATE - 3.0) < 0.1
    lag = int(0.1 * SAMPLE_RATE)  # codecs add a little delay: best correlation within 100 ms
    ref = speech(3.0)
    best = max(corr(out[k:], ref) for k in range(0, lag, 8))
    assert best > 0.9


def test_clipping_warns_but_is_accepted(speech):
    loud = np.clip(speech(2.0) * 4, -1, 1)
    with pytest.warns(ClippingWarning, match="clipped"):
        out = load_audio((SAMPLE_RATE, loud))
    assert len(out) > SAMPLE_RATE
    with warnings.catch_warnings():  # a recording that is not clipped does not warn
        warnings.simplefilter("error", ClippingWarning)
        load_audio((SAMPLE_RATE, speech(2.0)))


def test_long_audio_accepted_when_no_limit(speech):
    out = load_audio((SAMPLE_RATE, speech(40.0)), max_seconds=None)
    assert len(out) / SAMPLE_RATE > MAX_QUERY_SECONDS


def _bad_inputs(speech, tmp_path):
    png = tmp_path / "face.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    nan = speech(2.0)
    nan[100] = np.nan
    inf = speech(2.0)
    inf[5] = np.inf
    truncated = wav_bytes(speech(2.0), SAMPLE_RATE)[:30]
    return {
        "empty bytes": (b"", "empty"),
        "empty file": (_write(tmp_path / "empty.wav", b""), "empty"),
        "missing file": (tmp_path / "nope.wav", "not found"),
        "random bytes": (np.random.default_rng(0).bytes(5000), "could not be decoded"),
        "truncated header": (truncated, "could not be decoded"),
        "text": (b"hello, this is not a recording" * 20, "text file, not audio"),
        # the first 512 bytes end with 3 of an emoji's 4: a character cut, still text
        "text cut in a character": (("a" * 509 + "\U0001F600" * 10).encode(), "text file"),
        "image": (png, "PNG image, not audio"),
        "nan": ((SAMPLE_RATE, nan), "NaN"),
        "inf": ((SAMPLE_RATE, inf), "NaN or infinity"),
        "silence": ((SAMPLE_RATE, np.zeros(3 * SAMPLE_RATE, np.int16)), "silent"),
        "dc only": ((SAMPLE_RATE, np.full(3 * SAMPLE_RATE, 0.4, np.float32)), "silent"),
        "too short": ((SAMPLE_RATE, speech(0.4)), "at least 1 s"),
        "50 ms": ((SAMPLE_RATE, speech(0.05)), "at least 1 s"),
        "too long": ((SAMPLE_RATE, speech(45.0)), "limit is 30 s"),
        "rate 100 Hz": ((100, speech(2.0)), "not a real audio rate"),
        "rate 10 MHz": ((10_000_000, speech(2.0)), "not a real audio rate"),
        "rate above 384 kHz": ((384_001, speech(2.0)), "not a real audio rate"),
        "no samples": ((SAMPLE_RATE, np.zeros(0, np.float32)), "empty"),
        "wrong type": (12345, "Cannot read audio"),
        "3-d array": ((SAMPLE_RATE, np.zeros((2, 2, 2), np.float32)), "shape"),
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_every_bad_input_raises_a_clear_audio_error(speech, tmp_path):
    for label, (source, message) in _bad_inputs(speech, tmp_path).items():
        with pytest.raises(AudioError, match=message) as info:
            load_audio(source)
        assert isinstance(info.value, ValueError), label
        assert len(str(info.value)) > 30, label  # a sentence, not a code


def test_mp3_bytes_named_wav_still_decode(speech, tmp_path):
    src = tmp_path / "clip.wav"
    sf.write(src, speech(2.0), SAMPLE_RATE)
    fake = tmp_path / "really-mp3.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-f", "mp3", str(fake)],
                   check=True)
    assert abs(len(load_audio(fake, trim=False)) / SAMPLE_RATE - 2.0) < 0.1

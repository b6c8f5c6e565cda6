"""Decoding is bounded whatever comes in: memory, temporary files, and what errors reveal.

The attacker's file of issue 21: a 1.9 MB FLAC at 384 kHz with 8 channels, 360 s long (one
second of tone, then digital silence), which the whole-array decoder turned into 5.6 GB of
memory, and the same audio in Matroska, which ffmpeg turned into a 4.2 GB temporary WAV.
Peak memory is measured in a fresh process, so nothing else in the test run counts.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from benchmarks.flood import HEAVY_CHANNELS as BOMB_CHANNELS
from benchmarks.flood import HEAVY_RATE as BOMB_RATE
from benchmarks.flood import write_heavy_flac as write_bomb
from conftest import REPO
from voiceface.audio import (MAX_DECODED_SAMPLES, RESAMPLE_ROLLOFF, RESAMPLE_ZERO_CROSSINGS,
                             SAMPLE_RATE, AudioError, _kernel_elements, load_audio)

BOMB_SECONDS = 360  # s
MAX_GROWTH_MB = 200  # MB of peak RSS growth allowed for one decode

# Run in a fresh interpreter: decode argv[1], report peak RSS growth and peak temp bytes.
MEASURE = r"""
import json, resource, sys, tempfile, threading, time
from pathlib import Path
from voiceface.audio import AudioError, load_audio
tmp, peak_tmp, done = Path(tempfile.gettempdir()), [0], threading.Event()
def watch():
    while not done.is_set():
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        peak_tmp[0] = max(peak_tmp[0], size)
        time.sleep(0.005)
watcher = threading.Thread(target=watch)
watcher.start()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    max_seconds = None if sys.argv[2] == "none" else float(sys.argv[2])
    outcome = f"decoded {len(load_audio(sys.argv[1], max_seconds=max_seconds))}"
except AudioError as err:
    outcome = f"refused: {err}"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
done.set()
watcher.join()
print(json.dumps({"growth_mb": (after - before) / 1024, "peak_tmp_bytes": peak_tmp[0],
                  "outcome": outcome}))
"""


def to_matroska(flac: Path) -> Path:
    mka = flac.with_suffix(".mka")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(flac), "-c:a", "copy",
                    str(mka)], check=True)
    return mka


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return write_bomb(tmp_path_factory.mktemp("bomb") / "bomb.flac", BOMB_SECONDS)


def measure(path: Path, max_seconds: float | None, tmp: Path) -> dict:
    """Decode `path` in a fresh process with its own temporary directory `tmp`."""
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path),
                           "none" if max_seconds is None else str(max_seconds)],
                          capture_output=True, text=True, env=env, timeout=300, check=True)
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_the_attackers_flac_is_refused_from_its_header(bomb, tmp_path):
    assert bomb.stat().st_size < 3 * 2**20  # a small upload
    query = measure(bomb, 30.0, tmp_path / "query")
    assert query["outcome"].startswith("refused: bomb.flac is 360.0 s long; the limit is 30 s")
    enroll = measure(bomb, None, tmp_path / "enroll")
    assert "too many samples (8 channels at 384000 Hz" in enroll["outcome"]
    assert max(query["growth_mb"], enroll["growth_mb"]) < MAX_GROWTH_MB


@pytest.mark.slow
def test_a_large_flac_under_the_limits_is_decoded_in_bounded_memory(tmp_path):
    seconds = MAX_DECODED_SAMPLES // (BOMB_RATE * BOMB_CHANNELS)  # 75 s, 0.9 GB as float32
    flac = write_bomb(tmp_path / "large.flac", seconds)
    result = measure(flac, None, tmp_path / "tmp")
    assert result["outcome"].startswith("decoded")
    assert result["growth_mb"] < MAX_GROWTH_MB


@pytest.mark.slow
def test_the_attackers_matroska_goes_through_ffmpeg_bounded(bomb, tmp_path):
    mka = to_matroska(bomb)
    query = measure(mka, 30.0, tmp_path / "query")
    assert query["outcome"].startswith("refused: bomb.mka is more than 120 s long")
    enroll = measure(mka, None, tmp_path / "enroll")
    assert enroll["outcome"].startswith("decoded")
    assert max(query["growth_mb"], enroll["growth_mb"]) < MAX_GROWTH_MB
    # the only temporary file is ffmpeg's 16 kHz mono float output: 4 B x 16 kHz x seconds
    assert query["peak_tmp_bytes"] < 4 * SAMPLE_RATE * (120 + 2)
    assert enroll["peak_tmp_bytes"] < 4 * SAMPLE_RATE * (BOMB_SECONDS + 1)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [48_000, 44_100])
def test_block_resampling_equals_whole_array_resampling(speech, rate):
    seconds = 25.0  # several resampling steps and decoding blocks
    stereo = np.stack([speech(seconds, rate=rate), 0.5 * speech(seconds, rate=rate, seed=1)],
                      axis=1).astype(np.float32)
    mono = stereo.mean(axis=1)
    whole = torchaudio.functional.resample(torch.from_numpy(mono - mono.mean()), rate,
                                           SAMPLE_RATE).numpy()
    out = load_audio((rate, stereo), max_seconds=None, trim=False)
    assert out.shape == whole.shape
    assert np.max(np.abs(out - whole)) < 1e-6


def test_ffmpeg_downmix_is_the_channel_mean(speech, tmp_path):
    stereo = np.stack([speech(3.0, rate=48_000)] * 2, axis=1)
    src = tmp_path / "stereo.wav"
    sf.write(src, stereo, 48_000)
    m4a = tmp_path / "stereo.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-c:a", "aac",
                    "-b:a", "192k", str(m4a)], check=True)
    direct, decoded = load_audio(src), load_audio(m4a)
    n = min(len(direct), len(decoded))
    gain = float(np.dot(direct[:n], decoded[:n]) / np.dot(direct[:n], direct[:n]))
    assert abs(gain - 1.0) < 0.01


def test_long_silence_around_a_query_is_accepted_up_to_four_times_the_limit(speech):
    def padded(total_seconds: float) -> tuple[int, np.ndarray]:
        wav = np.zeros(int(total_seconds * SAMPLE_RATE), np.float32)
        wav[SAMPLE_RATE:6 * SAMPLE_RATE] = speech(5.0)
        return SAMPLE_RATE, wav

    assert 5.0 <= len(load_audio(padded(115.0), max_seconds=30.0)) / SAMPLE_RATE < 5.5
    with pytest.raises(AudioError, match=r"125\.0 s long; the limit is 30 s of speech \(with "
                                         r"silence around it, 120 s\)"):
        load_audio(padded(125.0), max_seconds=30.0)


def test_missing_files_and_folders_never_reveal_the_server_path(tmp_path):
    folder = tmp_path / "uploads" / "session"
    folder.mkdir(parents=True)
    for source, message in [(folder / "voice.wav", "Audio file 'voice.wav' not found"),
                            (folder, "'session' is a folder, not an audio file")]:
        with pytest.raises(AudioError, match=message) as info:
            load_audio(source)
        assert str(tmp_path) not in str(info.value) and "uploads" not in str(info.value)


def streamed_flac(path: Path, seconds: float) -> Path:
    """A FLAC written to a pipe, as recorders do: its header does not say how long it is."""
    with open(path, "wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                        f"sine=f=220:r=48000:d={min(seconds, 3)}", "-af", "apad", "-t",
                        str(seconds), "-c:a", "flac", "-f", "flac", "pipe:1"],
                       stdout=out, check=True)
    return path


@pytest.mark.slow
def test_streamed_flac_without_a_length_is_decoded_and_still_limited(tmp_path):
    assert abs(len(load_audio(streamed_flac(tmp_path / "short.flac", 3))) / SAMPLE_RATE - 3) < 0.1
    with pytest.raises(AudioError, match="more than 20 min"):
        load_audio(streamed_flac(tmp_path / "long.flac", 25 * 60), max_seconds=None)


def test_an_odd_sample_rate_is_refused_before_its_resampling_table_is_built(tmp_path):
    """At 8001 Hz torchaudio's sinc table for 16 kHz has 128 million elements (GBs of memory
    for a 32 kB upload); common rates need under 300 000."""
    samples = (0.3 * np.sin(np.arange(2 * 8001) * 0.1)).astype(np.float32)
    sf.write(tmp_path / "odd.wav", samples, 8001)
    with pytest.raises(AudioError, match="unusual sample rate of 8001 Hz.*16, 44.1 or 48 kHz"):
        load_audio(tmp_path / "odd.wav")
    for rate in (8000, 11025, 22050, 44100, 48000, 96000):  # the rates recorders use still work
        sf.write(tmp_path / f"{rate}.wav", (0.3 * np.sin(np.arange(2 * rate) * 0.1)), rate)
        assert len(load_audio(tmp_path / f"{rate}.wav", min_seconds=0.5)) > 0


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 6185, 24810])
def test_the_kernel_size_checked_is_the_one_torchaudio_builds(rate):
    """The memory guard counts the elements of the sinc table torchaudio will build (its own
    builder, for the rates recorders use and rates whose table is near the limit)."""
    gcd = math.gcd(rate, SAMPLE_RATE)
    kernel, _ = torchaudio.functional.functional._get_sinc_resample_kernel(
        rate, SAMPLE_RATE, gcd, RESAMPLE_ZERO_CROSSINGS, RESAMPLE_ROLLOFF)
    assert _kernel_elements(rate, SAMPLE_RATE) == kernel.numel()


def test_a_playlist_cannot_make_ffmpeg_read_other_files(tmp_path):
    """An HLS playlist (its text check dodged by one binary comment line) naming a file on the
    server: ffmpeg may open recordings only, so it is refused instead of decoding that file."""
    secret = tmp_path / "secret.wav"
    sf.write(secret, 0.3 * np.sin(np.arange(3 * SAMPLE_RATE) * 0.05), SAMPLE_RATE)
    playlist = (b"#EXTM3U\n#\x01\x02binary\n#EXTINF:10,\n" + str(secret).encode()
                + b"\n#EXT-X-ENDLIST\n")
    with pytest.raises(AudioError, match="could not be decoded"):
        load_audio(playlist)

"""Bad input through every door: the library, the CLI and the app's `/predict` API.

Every case of the generated corpus (tests/badaudio.py) is either accepted or refused with an
`AudioError` whose message says what was wrong and what to do, the same words at every door.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from badaudio import over_upload_limit, write_corpus
from conftest import REPO, serve_app
from voiceface import audio
from voiceface.audio import SAMPLE_RATE, AudioError, load_audio
from voiceface.cli import EXIT_BAD_INPUT
from voiceface.cli import main as cli_main
from voiceface.pipeline import VoiceFace

UPLOAD_LIMIT_BYTES = 20 * 1024 * 1024  # app.py's MAX_FILE_SIZE
MIN_CASES = 25


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def check_message(name: str, message: str, expect: tuple[str, ...]) -> list[str]:
    """The patterns of `expect` that `message` lacks, as readable failures."""
    return [f"{name}: {pattern!r} not in {message!r}" for pattern in expect
            if not re.search(pattern, message)]


def test_the_corpus_is_broad(corpus):
    assert len(corpus) >= MIN_CASES
    assert sum(c.expect is None for c in corpus.values()) >= 8  # and not only refusals


def test_library_accepts_or_explains_every_case(corpus):
    failures = []
    for name, case in corpus.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", audio.ClippingWarning)
                wav = load_audio(case.path)
        except AudioError as err:
            if case.expect is None:
                failures.append(f"{name}: refused: {err}")
            else:
                failures += check_message(name, str(err), case.expect)
            continue
        if case.expect is not None:
            failures.append(f"{name}: accepted, expected {case.expect}")
        elif not (wav.dtype.name == "float32" and wav.ndim == 1 and len(wav) >= SAMPLE_RATE):
            failures.append(f"{name}: bad result {wav.dtype} {wav.shape}")
    assert not failures, "\n".join(failures)


def test_decoding_stops_at_the_length_limit_through_ffmpeg(corpus, monkeypatch):
    # The FLAC case tests the in-process decoder; a WebM goes through ffmpeg, whose output is
    # cut at the limit. Lower the limit instead of encoding hours of Opus.
    monkeypatch.setattr(audio, "MAX_DECODED_SECONDS", 1)
    with pytest.raises(AudioError, match="more than 0 min"):
        load_audio(corpus["webm/opus"].path)


@pytest.fixture
def cli(dev_bundle, capsys, monkeypatch):
    """Run the CLI in process with the dev bundle loaded once; returns (exit code, stderr)."""
    vf = VoiceFace.from_pretrained(dev_bundle)  # the subprocess test below loads for real
    monkeypatch.setattr(VoiceFace, "from_pretrained", lambda *args, **kwargs: vf)
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str]:
        code = cli_main(["predict", *args, "--bundle", str(dev_bundle)])
        return code, capsys.readouterr().err

    return run


@pytest.mark.slow
def test_cli_exits_2_with_one_error_line(corpus, cli, tmp_path):
    failures = []
    for name, case in corpus.items():
        if case.expect is None:
            continue  # accepted audio: the library and app tests run it end to end
        out = tmp_path / f"{name}.png"
        code, stderr = cli(str(case.path), "--out", str(out))
        lines = stderr.splitlines()
        if code != EXIT_BAD_INPUT or len(lines) != 1 or not lines[0].startswith("error: "):
            failures.append(f"{name}: exit {code}, stderr {stderr!r}")
        else:
            failures += check_message(name, lines[0], case.expect)
        if out.exists():
            failures.append(f"{name}: wrote a face for refused audio")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_cli_warns_about_clipping_and_answers(corpus, cli, tmp_path):
    code, stderr = cli(str(corpus["clipping"].path), "--out", str(tmp_path / "face.png"))
    assert code == 0 and (tmp_path / "face.png").is_file()
    assert stderr.startswith("warning: ") and "clipped" in stderr and stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["text file", "2 h FLAC (decompression bomb)", "NaN samples"])
def test_cli_process_prints_no_traceback(corpus, dev_bundle, tmp_path, name):
    proc = subprocess.run([sys.executable, "-m", "voiceface", "predict", str(corpus[name].path),
                           "--bundle", str(dev_bundle), "--out", str(tmp_path / "face.png")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.fixture(scope="module")
def app(dev_bundle, tmp_path_factory):
    with serve_app(dev_bundle, tmp_path_factory.mktemp("app") / "app.log") as (url, _):
        yield url


@pytest.mark.slow
def test_app_refuses_each_bad_case_cleanly_and_keeps_serving(corpus, app, dev_bundle):
    client = Client(app, verbose=False)
    good = handle_file(str(dev_bundle / "voices" / "dev01.flac"))
    failures = []
    for name, case in corpus.items():
        if case.path.stat().st_size > UPLOAD_LIMIT_BYTES:
            continue  # the upload limit answers first: see the next test
        try:
            *_, summary = client.predict(handle_file(str(case.path)), api_name="/predict")
        except AppError as err:  # carries the gr.Error message
            if case.expect is None:
                failures.append(f"{name}: refused: {err}")
            else:
                failures += check_message(name, str(err), case.expect)
                if "Traceback" in str(err) or re.search(r"(^|\s)/\w", str(err)):
                    failures.append(f"{name}: message leaks internals: {err}")
            *_, after = client.predict(good, api_name="/predict")  # still serving
            if after["matches"][0]["id"] != "dev01":
                failures.append(f"{name}: the next good request failed: {after}")
            continue
        if case.expect is not None:
            failures.append(f"{name}: accepted, expected {case.expect}")
        elif len(summary["matches"]) != 5:
            failures.append(f"{name}: bad summary {summary}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_app_upload_limit_is_enforced_by_the_server(app, dev_bundle, tmp_path):
    big = over_upload_limit(tmp_path, UPLOAD_LIMIT_BYTES)
    with open(big, "rb") as f:  # past gradio_client's own check: the server must refuse too
        response = httpx.post(f"{app}gradio_api/upload", files={"files": ("big.wav", f)},
                              timeout=120)
    assert response.status_code == 413 and "maximum allowed size" in response.text
    client = Client(app, verbose=False)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), api_name="/predict")
    *_, summary = client.predict(handle_file(str(dev_bundle / "voices" / "dev02.flac")),
                                 api_name="/predict")
    assert summary["matches"][0]["id"] == "dev02"

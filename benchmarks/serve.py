"""app.py on 127.0.0.1, for the benchmarks that time it through its API (load, pipeline) and
for the tests (`tests/conftest.py` serves the app with it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own download does not work here
START_TIMEOUT = 300  # s for the app to answer its first page
LOG_TAIL = 3000  # characters of the app's log shown when it does not start


def chromium_args(mic: Path | None = None) -> list[str]:
    """Flags for headless Chromium here; with `mic`, a WAV file it loops as the microphone
    (permission granted without asking)."""
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"]
    if mic is not None:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={mic}"]
    return args


@contextmanager
def running_app(bundle: Path | None, log: Path | None = None,
                env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                timeout: float = START_TIMEOUT, port: int | None = None
                ) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run app.py (on `bundle`, else its default) on 127.0.0.1 (`port`, else a free one) with
    more `args` and `env`, its output in `log` (else discarded); yield (url, process) once it
    answers; stop it afterwards."""
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    command = [sys.executable, "app.py", *(["--bundle", str(bundle)] if bundle else []), *args,
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log or os.devnull, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    shown = (f"\n{log.read_text()[-LOG_TAIL:]}" if log
                             else "; run it by hand to see why")
                    raise RuntimeError(f"app did not start{shown}") from None
                time.sleep(0.2)
        yield url, proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """End a started app: asked to stop, killed if it has not within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

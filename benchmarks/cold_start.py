"""A fresh start of the app on its default bundle (the 48 personas): seconds from starting
`app.py` to its first served page, and to its first full `/predict` answer, with full-size
random models of the real shapes (wav2vec2-base x-vector, StyleGAN2 FFHQ 1024 config-f,
DINOv2-small, CLIP ViT-B/16; random weights cost what trained ones do) and an empty
VOICEFACE_CACHE, as on a Space after every restart. The models are written once into
`--models` (not timed: it stands for the download).

    python -m benchmarks.cold_start [--runs 2] [--cap 1800] [--models DIR] [--repo DIR]
                                    [--threads N]

`--repo` runs another checkout's app.py (e.g. an export of main) with the same models. The
first answer is asked for every `POLL` s once the page is served: before the gallery is
ready the app answers at once with how far it is (503 to programs), and that is retried.
A run is stopped after `--cap` s; what it had not reached by then is null, and the last
progress it showed (its last refusal, else the build's progress bar in its log) is printed. Prints each run with the load average before
it, then the medians of what every run reached.

With random weights the face-trait model reads every face alike, so the personas whose
voices read as the other sex try all `FACE_TRIES` candidate faces: the first full answer is
the build's worst case, slower than with the real CLIP.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import soundfile as sf

from benchmarks.face_traits import CLIP_B16
from benchmarks.invert import DINOV2_SMALL
from benchmarks.serve import stop
from voiceface.audio import SAMPLE_RATE
from voiceface.devbundle import synthetic_voice, write_random_backbone, write_random_encoder, \
    write_random_face_traits
from voiceface.stylegan2 import Generator, GeneratorConfig

REPO = Path(__file__).resolve().parents[1]
POLL = 2.0  # s between tries of the first answer
PAGE_POLL = 0.2  # s between tries of the first page
CAP = 1800.0  # s a run may take before it is stopped (default of --cap)
CLIP_SECONDS = 5.0  # the voice sent to /predict


def write_models(directory: Path) -> dict[str, Path]:
    """The four models' directories under `directory`, written unless already there."""
    paths = {name: directory / name for name in ("encoder", "generator", "backbone", "clip")}
    if not paths["encoder"].is_dir():
        write_random_encoder(paths["encoder"], config={})
    if not paths["generator"].is_dir():
        Generator(GeneratorConfig.ffhq(1024)).save_pretrained(paths["generator"])
    if not paths["backbone"].is_dir():
        write_random_backbone(paths["backbone"], config=DINOV2_SMALL)
    if not paths["clip"].is_dir():
        write_random_face_traits(paths["clip"], config=CLIP_B16)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def predict(http: httpx.Client, clip: Path) -> str | None:
    """One `/predict` call with `clip`: None when it answered with a face, else what it
    answered."""
    [path] = http.post("upload", files={"files": (clip.name, clip.read_bytes())}).json()
    posted = http.post("call/predict", json={"data": [
        {"path": path, "meta": {"_type": "gradio.FileData"}}]})
    if posted.status_code != 200:  # 503 while the gallery is being prepared
        return posted.text
    stream = http.get(f"call/predict/{posted.json()['event_id']}").text
    kinds = re.findall(r"^event: (\w+)$", stream, re.M)
    return None if kinds and kinds[-1] == "complete" else stream[-300:]


def run_once(repo: Path, models: dict[str, Path], clip: Path, work: Path,
             threads: int | None, cap: float = CAP) -> dict:
    """One fresh start: {"page_s", "first_answer_s", "load_before", "progress"}; a time not
    reached within `cap` s is None."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "VOICEFACE_CACHE": str(work / "cache"), "GRADIO_TEMP_DIR": str(work / "gradio")}
    command = [sys.executable, "app.py", "--encoder", str(models["encoder"]),
               "--generator", str(models["generator"]), "--backbone", str(models["backbone"]),
               "--face-traits", str(models["clip"]), "--host", "127.0.0.1",
               "--port", str(port), *(["--threads", str(threads)] if threads else [])]
    url = f"http://127.0.0.1:{port}/"
    load = os.getloadavg()[0]
    with open(work / "app.log", "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=repo, stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    try:
        page_s = answer_s = refused = None
        with httpx.Client(base_url=f"{url}gradio_api/", timeout=600) as http:
            while answer_s is None and time.perf_counter() - start < cap:
                if proc.poll() is not None:
                    raise RuntimeError(f"the app stopped; its log: "
                                       f"{(work / 'app.log').read_text()[-2000:]}")
                try:
                    if page_s is None:
                        if httpx.get(url, timeout=5).status_code == 200:
                            page_s = time.perf_counter() - start
                        else:
                            time.sleep(PAGE_POLL)
                        continue
                    refused = predict(http, clip)
                    if refused is None:
                        answer_s = time.perf_counter() - start
                    else:
                        time.sleep(POLL)
                except httpx.TransportError:  # not listening yet
                    time.sleep(PAGE_POLL)
    finally:
        stop(proc)
    progress = re.findall(r"personas: [^\r\n|]*\d+%\|[^\r\n]*?\| *\d+/\d+ \[[^\]]*\]",
                          (work / "app.log").read_text())
    return {"page_s": page_s and round(page_s, 1), "first_answer_s": answer_s and round(
        answer_s, 1), "load_before": round(load, 2), "cap_s": cap,
        "progress": refused or (progress[-1] if progress else None)}


def median(values: list[float | None]) -> float | None:
    """The median, None when any run did not reach it."""
    return None if None in values else statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) /
                        "voiceface-cold-start-models", help="where the random models are "
                        "written once and reused")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose app.py runs")
    parser.add_argument("--threads", type=int, default=None, help="the app's --threads")
    parser.add_argument("--cap", type=float, default=CAP, help="s after which a run stops")
    args = parser.parse_args(argv)
    models = write_models(args.models)
    runs = []
    with tempfile.TemporaryDirectory(prefix="voiceface-cold-") as tmp:
        clip = Path(tmp) / "voice.wav"
        sf.write(clip, synthetic_voice(CLIP_SECONDS, seed=7, f0=160.0), SAMPLE_RATE)
        for i in range(args.runs):
            work = Path(tmp) / f"run{i}"
            work.mkdir()
            runs.append(run_once(args.repo.resolve(), models, clip, work, args.threads,
                                 args.cap))
            print(json.dumps(runs[-1]), flush=True)
    print(json.dumps({"repo": str(args.repo), "runs": len(runs), "cpus": os.cpu_count(),
                      **{f"median_{key}": median([r[key] for r in runs])
                         for key in ("page_s", "first_answer_s")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

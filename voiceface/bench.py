"""How fast is voiceface on this machine: `python -m voiceface bench [--json] [--quick]`.

Builds a bundle of random-weight models of full size (a wav2vec2-base x-vector encoder and a
1024 px config-f StyleGAN2; random weights cost exactly what trained ones do) or, with
`quick`, the dev bundle's tiny ones, then measures
- per stage (decode, embed, search, map, synth) and end to end: median and p95 for 3, 5 and
  10 s utterances of the 128 px preview and of the full-size face, both from one
  `VoiceFace.stream` call as the app makes it (the full face continues the preview's render);
- cold start: a fresh Python process that imports voiceface and loads the bundle from disk,
  until it is ready to answer (then it answers once, at full size, for its peak RSS);
- peak RSS of that serving process and of this one (which also built the bundle);
- the thread settings (`threads` sets torch's intra-op threads here and in the cold-start
  process; on 2 busy cores 1 thread beat 2, see `benchmarks/encoder_options.py`).
`quantize` assembles the loaded pipeline anew with the int8 voice encoder (the gallery was embedded in fp32,
which changes timings nothing and scores little; a served bundle would be built with
`VoiceFace.from_pretrained(..., quantize=True)` so that the fingerprints agree).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .audio import SAMPLE_RATE
from .devbundle import synthetic_voice, write_dev_bundle
from .pipeline import PREVIEW_RESOLUTION
from .stylegan2 import GeneratorConfig

DURATIONS = (3.0, 5.0, 10.0)  # s of speech
STAGES = {"decode": "load_audio", "embed": "embed", "search": "search", "map": "map",
          "synth": "synthesise", "total": "total"}  # reported name -> VoiceFace timing key
REPEATS, QUICK_REPEATS = 5, 2  # timed calls per figure, after one warm-up
BUNDLE_PEOPLE = 4
TARGETS = {  # name: (seconds or MB, what it measures); medians on a 2-vCPU machine
    "preview_5s_s": 1.0, "full_5s_s": 2.0, "cold_start_s": 15.0, "peak_rss_mb": 3 * 1024}
READY = "ready"  # what the cold-start child prints once the bundle is loaded


def run(quick: bool = False, repeats: int | None = None,
        durations: tuple[float, ...] = DURATIONS, threads: int | None = None,
        quantize: bool = False) -> dict:
    """Measure and return one JSON-able dict (see `format_table` for what it holds)."""
    repeats = (QUICK_REPEATS if quick else REPEATS) if repeats is None else repeats
    if threads:
        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stderr for errors

    with tempfile.TemporaryDirectory(prefix="voiceface-bench-") as tmp:
        bundle, bundle_s, clips = write_inputs(Path(tmp), quick, durations)
        vf = _load(bundle, quantize)
        full = vf.generator.resolution
        preview = preview_size(full)
        runs = [stats | {"seconds": seconds, "px": px} for seconds, clip in clips.items()
                for px, stats in zip((preview, full),
                                     time_calls(vf, clip, (preview, full), repeats))]
        del vf
        cold = cold_start(bundle, clips[durations[len(durations) // 2]], threads, quantize)
    result = {
        "quick": quick,
        "models": ("tiny random (dev bundle)" if quick else
                   "wav2vec2-base x-vector + StyleGAN2 config-f 1024 px, random weights"),
        "repeats": repeats,
        "quantize": quantize,
        "threads": thread_settings(),
        "bundle_build_s": bundle_s,
        "runs": runs,
        "cold_start_s": cold["ready_s"],
        "first_answer_s": cold["answer_s"],
        "peak_rss_mb": cold["peak_rss_mb"],
        "bench_peak_rss_mb": _peak_rss_mb(),
    }
    result["targets"] = _targets(result, preview, full)
    return result


def write_inputs(directory: Path, quick: bool, durations: tuple[float, ...] = DURATIONS
                 ) -> tuple[Path, float, dict[float, Path]]:
    """In `directory`: a bundle of random-weight models (the dev bundle's tiny ones if `quick`,
    else full size) and one synthetic utterance per duration. Returns (bundle, seconds taken
    to write it, {duration: clip})."""
    sizes = {} if quick else {"encoder_config": {}, "generator_config": GeneratorConfig.ffhq(1024)}
    start = time.perf_counter()
    bundle = write_dev_bundle(directory / "bundle", n_people=BUNDLE_PEOPLE, progress=False,
                              **sizes)
    bundle_s = time.perf_counter() - start
    clips = {seconds: directory / f"clip{seconds:g}.wav" for seconds in durations}
    for seconds, clip in clips.items():
        sf.write(clip, synthetic_voice(seconds, seed=7, f0=160.0), SAMPLE_RATE)
    return bundle, bundle_s, clips


def preview_size(full: int) -> int:
    """px of the preview timed for a generator of `full` px (PREVIEW_RESOLUTION, or half of a
    small one)."""
    return min(PREVIEW_RESOLUTION, full // 2)


def time_calls(vf, clip: Path, resolutions: tuple[int, ...], repeats: int) -> list[dict]:
    """For each of `resolutions`, median and p95 seconds per stage up to that face, from
    `vf.stream(clip, resolutions=...)` calls after one warm-up."""
    calls = []  # per call: the timings of each face
    for i in range(repeats + 1):
        timings = [result.timings for result in vf.stream(clip, resolutions=resolutions)]
        if i:
            calls.append(timings)
    stats = (("median", np.median), ("p95", lambda x: np.percentile(x, 95)))
    return [{stat: {name: float(fn([c[j][key] for c in calls])) for name, key in STAGES.items()}
             for stat, fn in stats} for j in range(len(resolutions))]


def _load(bundle: Path, quantize: bool):
    """The pipeline as the app serves it (with its allocator setting)."""
    from .pipeline import VoiceFace
    from .stylegan2_ops import reuse_freed_memory
    from .voice import VoiceEncoder

    reuse_freed_memory()
    vf = VoiceFace.from_pretrained(bundle)
    if quantize:
        vf = VoiceFace(VoiceEncoder.from_pretrained(bundle / "encoder", quantize=True),
                       vf.generator, vf.state.enrolled, vf.mapper,
                       spec=vf.spec.with_models(quantize=True),
                       generator_fingerprint=vf.generator_fingerprint)
    return vf


def cold_start(bundle: Path, clip: Path, threads: int | None = None,
               quantize: bool = False) -> dict:
    """A fresh interpreter loads `bundle` (imports included): seconds until ready, seconds
    for its first full-size answer, and its peak RSS in MB (VmHWM: getrusage's maxrss would
    start from this process's, which Linux carries across fork and exec)."""
    code = ("import sys, time, pathlib, torch\n"
            f"if {threads or 0}: torch.set_num_threads({threads or 0})\n"
            "from voiceface.bench import _load\n"
            f"vf = _load(pathlib.Path(sys.argv[1]), {quantize})\n"
            f"print({READY!r}, flush=True)\n"
            "t = time.perf_counter(); vf(sys.argv[2])\n"
            "t = time.perf_counter() - t\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
            "print(t, hwm[0].split()[1])\n")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(bundle), str(clip)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    first = proc.stdout.readline()
    ready = time.perf_counter() - start
    out, err = proc.communicate(timeout=600)
    if first.strip() != READY or proc.returncode:
        raise RuntimeError(f"The cold-start process failed: {err.strip()[-500:]}")
    answer_s, rss_kb = out.split()
    return {"ready_s": ready, "answer_s": float(answer_s), "peak_rss_mb": int(rss_kb) / 1024}


def thread_settings() -> dict:
    """Thread settings that decide CPU speed."""
    import faiss

    return {"cpus": os.cpu_count(), "torch": torch.get_num_threads(),
            "torch_interop": torch.get_num_interop_threads(),
            "faiss_build": faiss.omp_get_max_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def _targets(result: dict, preview: int, full: int) -> dict:
    by = {(r["seconds"], r["px"]): r["median"]["total"] for r in result["runs"]}
    values = {"preview_5s_s": by.get((5.0, preview)), "full_5s_s": by.get((5.0, full)),
              "cold_start_s": result["cold_start_s"], "peak_rss_mb": result["peak_rss_mb"]}
    return {name: {"target": TARGETS[name], "value": value,
                   "met": None if value is None else bool(value <= TARGETS[name])}
            for name, value in values.items()}


def format_table(result: dict) -> str:
    """The result as the text table `python -m voiceface bench` prints."""
    t = result["threads"]
    lines = [(f"models: {result['models']}{', int8 encoder' if result.get('quantize') else ''}"
             f"; torch {torch.__version__}"),
             (f"threads: {t['cpus']} CPUs, torch {t['torch']} (interop {t['torch_interop']}), "
             f"faiss {t['faiss_build']}, OMP_NUM_THREADS={t['OMP_NUM_THREADS']}"),
             f"median (p95) seconds of {result['repeats']} calls after a warm-up",
             f"{'audio':>5} {'px':>5} " + " ".join(f"{s:>14}" for s in STAGES)]
    for r in result["runs"]:
        cells = " ".join(f"{r['median'][s]:>6.3f} ({r['p95'][s]:>5.3f})" for s in STAGES)
        lines.append(f"{r['seconds']:>4g}s {r['px']:>5} {cells}")
    lines += [f"bundle written in {result['bundle_build_s']:.1f} s",
              (f"cold start (new process: imports + load bundle): {result['cold_start_s']:.2f} s;"
              f" its first answer at full size {result['first_answer_s']:.2f} s"),
              (f"peak RSS: serving process {result['peak_rss_mb']:.0f} MB, this process "
              f"{result['bench_peak_rss_mb']:.0f} MB"), "targets:"]
    for name, tgt in result["targets"].items():
        state = "n/a" if tgt["met"] is None else ("met" if tgt["met"] else "MISSED")
        value = "-" if tgt["value"] is None else f"{tgt['value']:.2f}"
        lines.append(f"  {name:<14} {value:>8} <= {tgt['target']:g}  {state}")
    return "\n".join(lines)


def to_json(result: dict) -> str:
    return json.dumps(result)

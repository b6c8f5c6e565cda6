"""What the face-trait model costs, and whether CLIP could also be the backbone: random
full-size models of each architecture (random weights cost what trained ones do; their
answers mean nothing, so this measures cost, never quality).

    python -m benchmarks.face_traits [--repeats 10] [--threads 2]

Per model: load time from its safetensors directory, ms per 224 px image (batch 1, median),
parameters and the process's resident memory growth while loading it; then what choosing
a persona's face adds: one candidate (a 256 px render of the 1024 px FFHQ-sized generator
plus one reading) against the 512 px render every persona already costs.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.invert import DINOV2_SMALL
from voiceface.devbundle import write_random_backbone, write_random_face_traits
from voiceface.face_traits import FaceTraitModel
from voiceface.invert import Backbone
from voiceface.persona_cache import CANDIDATE_RESOLUTION, FACE_RESOLUTION
from voiceface.stylegan2 import Generator, GeneratorConfig, to_pil

CLIP_B32: dict = {}  # CLIPConfig's defaults are ViT-B/32's sizes
CLIP_B16 = {"vision_config": {"patch_size": 16}}


def rss_mb() -> float:
    """This process's resident memory, MB (Linux: /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("No VmRSS in /proc/self/status; this benchmark needs Linux.")


def timed(call, repeats: int) -> float:
    """Median ms of `call()` over `repeats` runs, after one warm-up run."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.rand(1, 3, 224, 224) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in (("CLIP ViT-B/32", CLIP_B32), ("CLIP ViT-B/16", CLIP_B16)):
            directory = write_random_face_traits(Path(tmp) / name.replace("/", ""), config=config)
            gc.collect()
            before, start = rss_mb(), time.perf_counter()
            model = FaceTraitModel.from_pretrained(directory, None)
            load = time.perf_counter() - start
            grown = rss_mb() - before
            face = to_pil(image)[0]
            whole = timed(lambda: model([face]), args.repeats)
            vision = model.model.vision_model
            with torch.inference_mode():
                tower = timed(lambda: vision(pixel_values=model.pixels([face])), args.repeats)
            params = sum(p.numel() for p in model.model.parameters()) / 1e6
            vparams = sum(p.numel() for p in vision.parameters()) / 1e6
            print(f"{name}: load {load:.1f} s, +{grown:.0f} MB RSS, {params:.0f} M parameters "
                  f"({vparams:.0f} M vision); traits {whole:.0f} ms/image; vision tower "
                  f"(CLS + patch tokens, what a backbone needs) {tower:.0f} ms/image")
            model = vision = None  # freed before the next load is measured
        directory = write_random_backbone(Path(tmp) / "dinov2", config=DINOV2_SMALL)
        gc.collect()
        before, start = rss_mb(), time.perf_counter()
        backbone = Backbone.from_pretrained(directory, None)
        load, grown = time.perf_counter() - start, rss_mb() - before
        with torch.inference_mode():
            per_image = timed(lambda: backbone(image), args.repeats)
        params = sum(p.numel() for p in backbone.parameters()) / 1e6
        print(f"DINOv2-small backbone: load {load:.1f} s, +{grown:.0f} MB RSS, {params:.0f} M "
              f"parameters; {per_image:.0f} ms/image")
    generator = Generator(GeneratorConfig.ffhq(1024), seed=0)
    w = generator.seed_latents([0], 1.0)
    with torch.inference_mode():
        small = timed(lambda: generator.synthesis(w, noise="const",
                                                  resolution=CANDIDATE_RESOLUTION), args.repeats)
        full = timed(lambda: generator.synthesis(w, noise="const", resolution=FACE_RESOLUTION),
                     args.repeats)
    print(f"FFHQ-sized generator: {small:.0f} ms per {CANDIDATE_RESOLUTION} px candidate, "
          f"{full:.0f} ms per {FACE_RESOLUTION} px face")


if __name__ == "__main__":
    main()

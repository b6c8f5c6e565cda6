"""Benchmark photo -> w inversion on the CPU at the default settings.

Usage (repository root): python -m benchmarks.invert [--photos 3] [--steps N]
                                                [--resolution PX] [--threads 2]

A config-f 1024 px generator and a DINOv2-small-sized backbone (hidden 384, 12 layers,
6 heads, patch 14, 224 px input), both with random weights: they cost exactly what trained
ones do. The "photos" are faces the generator renders from other seeds. Prints the
median seconds per photo, the start-up part (choosing the best of the random candidates)
and the seconds per optimisation step.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from voiceface.devbundle import write_random_backbone
from voiceface.invert import InversionConfig, Inverter
from voiceface.stylegan2 import Generator, GeneratorConfig, to_pil

DINOV2_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                    patch_size=14, image_size=518)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=3, help="inversions timed")
    parser.add_argument("--steps", type=int, default=InversionConfig.steps,
                        help="optimisation steps (default: the library default)")
    parser.add_argument("--resolution", type=int, default=InversionConfig.resolution,
                        help="px the generator renders at while optimising")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    generator = Generator(GeneratorConfig.ffhq(1024), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = write_random_backbone(Path(tmp), config=DINOV2_SMALL)
        config = InversionConfig(steps=args.steps, resolution=args.resolution,
                                 backbone=str(backbone), revision=None)
        inverter = Inverter.from_pretrained(config)
    start_only = Inverter(inverter.backbone, dataclasses.replace(config, steps=0))
    faces = to_pil(generator.sample(range(100, 100 + args.photos), resolution=config.resolution))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; generator config-f "
          f"1024 px rendered at {config.resolution} px; DINOv2-small-sized backbone at "
          f"{inverter.backbone.side} px; random weights")
    print(f"config: steps {config.steps}, n_init {config.n_init}, lr {config.lr}, "
          f"pixel_weight {config.pixel_weight}, w_avg_weight {config.w_avg_weight}")
    start_only.invert(generator, faces[0])  # warm-up
    starts = [start_only.invert(generator, face, seed=i).seconds for i, face in enumerate(faces)]
    results = [inverter.invert(generator, face, seed=i) for i, face in enumerate(faces)]
    for i, r in enumerate(results):
        print(f"photo {i}: {r.seconds:.1f} s, perceptual distance {r.init_distance:.3f} -> "
              f"{r.distance:.3f}, loss {r.loss:.3f}")
    per_photo, start = statistics.median(r.seconds for r in results), statistics.median(starts)
    per_step = (per_photo - start) / max(1, config.steps)
    print(f"median per photo: {per_photo:.1f} s (start {start:.1f} s + {config.steps} steps x "
          f"{per_step:.2f} s/step)")


if __name__ == "__main__":
    main()

"""Benchmark StyleGAN2 synthesis on the CPU: median time and achieved GFLOP/s.

Usage (repository root): python -m benchmarks.stylegan2 [--size 1024] [--preview 256]
                                                  [--repeats 5] [--threads 2]

A config-f generator with random weights, batch 1, "const" noise. Rows, slowest first:
- standard ops: the differentiable kernels with autograd on but nothing requiring grad,
  i.e. a straightforward implementation (modulated weight, direct conv, transposed conv
  then blur, out-of-place activations); the baseline the others are compared with;
- inference, no NNPACK: the inference kernels (autograd off) with direct convs;
- inference: the inference kernels as `sample` and the app run them (NNPACK Winograd);
- inference, reused memory: the same after `stylegan2_ops.reuse_freed_memory()` (glibc
  recycles freed blocks instead of unmapping them; process-wide, so measured last).
FLOPs are counted analytically (multiply-add = 2) over the convolutions: 3x3 styled
convs (the up-sampling ones as stride-2 transposed convs, i.e. at input resolution) and
1x1 to_rgb convs. Blur, noise and activations are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from voiceface.stylegan2 import Generator, GeneratorConfig, resolutions
from voiceface.stylegan2_ops import reuse_freed_memory

Context = Callable[[], contextlib.AbstractContextManager[object]]


def synthesis_flops(config: GeneratorConfig, resolution: int) -> float:
    """Convolution FLOPs of one image rendered up to `resolution` px."""
    ch = config.channels
    flops = 2 * 9 * ch[4] * ch[4] * 16 + 2 * ch[4] * 3 * 16  # conv1 + to_rgb1 at 4 px
    sides = [r for r in resolutions(config.size) if r <= resolution]
    for lower, res in itertools.pairwise(sides):
        flops += 2 * 9 * ch[lower] * ch[res] * lower * lower  # transposed conv, input side
        flops += 2 * 9 * ch[res] * ch[res] * res * res + 2 * ch[res] * 3 * res * res
    return float(flops)


def median_time(generator: Generator, w: torch.Tensor, resolution: int, repeats: int,
                context: Context) -> float:
    """Median wall time in seconds of synthesis(w, resolution) inside context(), after
    one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        with context():
            start = time.perf_counter()
            generator.synthesis(w, resolution=resolution)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


@contextlib.contextmanager
def inference_without_nnpack() -> Iterator[None]:
    """Autograd off and NNPACK disabled."""
    with torch.inference_mode(), torch.backends.nnpack.flags(enabled=False):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="generator size in px")
    parser.add_argument("--preview", type=int, default=256, help="preview resolution in px")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = GeneratorConfig.ffhq(args.size)
    generator = Generator(config, seed=0).requires_grad_(False)
    with torch.no_grad():
        w = generator.truncate(generator.mapping(torch.randn(1, config.style_dim)), 0.7)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"NNPACK available {torch.backends.nnpack.is_available()}")
    print(f"generator: config-f {args.size} px, random weights, batch 1, const noise, "
          f"median of {args.repeats} runs after a warm-up")

    rows: dict[str, Context] = {
        "standard ops": torch.enable_grad,
        "inference, no NNPACK": inference_without_nnpack,
        "inference": torch.inference_mode,
        "inference, reused memory": torch.inference_mode,
    }
    baseline: dict[int, float] = {}
    print(f"{'path':<26} {'px':>5} {'GFLOP':>6} {'median s':>9} {'GFLOP/s':>8} {'speed-up':>9}")
    for name, context in rows.items():
        if name == "inference, reused memory" and not reuse_freed_memory():
            print(f"{name:<26} (not available: needs glibc)")
            continue
        for res in (args.preview, args.size):
            seconds = median_time(generator, w, res, args.repeats, context)
            baseline.setdefault(res, seconds)
            gflop = synthesis_flops(config, res) / 1e9
            print(f"{name:<26} {res:>5} {gflop:>6.1f} {seconds:>9.3f} {gflop / seconds:>8.1f} "
                  f"{baseline[res] / seconds:>8.2f}x")


if __name__ == "__main__":
    main()

"""`python -m voiceface <command>`: one command per library call.

Bad input exits with status 2 and one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voiceface", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("predict", help="nearest enrolled people and a generated face for a recording")
    p.add_argument("audio", type=Path, help="a recording (wav, flac, ogg, mp3, m4a, webm)")
    p.add_argument("--bundle", help="bundle directory or Hub repo id (default: $VOICEFACE_BUNDLE or index/)")
    p.add_argument("--out", type=Path, default=Path("face.png"), help="where to write the generated face")
    p.add_argument("-k", type=int, default=5, help="number of matches")
    p.add_argument("--truncation", type=float, default=None, help="psi in [0, 1]; lower = more average face")
    p.add_argument("--resolution", type=int, default=None, help="render smaller than full size (preview)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=_predict)

    p = commands.add_parser("dev-bundle", help="write an offline bundle of tiny random test models")
    p.add_argument("directory", type=Path)
    p.add_argument("--people", type=int, default=8)
    p.set_defaults(run=_dev_bundle)

    p = commands.add_parser("convert-generator",
                            help="convert a rosinality StyleGAN2 .pt into safetensors + JSON")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("directory", type=Path)
    p.set_defaults(run=_convert_generator)

    p = commands.add_parser("bench", help="time every stage, cold start and memory on this machine")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="tiny dev models, few runs (a smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per figure")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quantize", action="store_true", help="int8 voice encoder")
    p.set_defaults(run=_bench)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _predict(args: argparse.Namespace) -> int:
    from .pipeline import VoiceFace

    vf = VoiceFace.from_pretrained(args.bundle)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = vf(args.audio, k=args.k, truncation=args.truncation, resolution=args.resolution)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.face.save(args.out)
    if args.json:
        print(json.dumps({
            "matches": [{"id": m.id, "name": m.name, "score": round(m.score, 6)}
                        for m in result.matches],
            "confident": result.confident,
            "method": result.method,
            "timings": {k: round(v, 4) for k, v in result.timings.items()},
            "face": str(args.out),
            "test_weights": vf.test_weights,
        }))
        return 0
    if vf.test_weights:
        print("NOTE: test weights (a dev bundle): these results mean nothing.")
    best = result.best
    print(f"nearest: {best.name} (similarity {best.score:.3f})" if best else
          f"no confident match (best similarity {result.matches[0].score:.3f} < "
          f"{vf.gallery.threshold:.2f})")
    for m in result.matches:
        print(f"  {m.rank}. {m.name:<24} {m.score:.3f}")
    print(f"generated face ({result.method}): {args.out}")
    return 0


def _dev_bundle(args: argparse.Namespace) -> int:
    from .devbundle import write_dev_bundle

    root = write_dev_bundle(args.directory, n_people=args.people)
    print(f"wrote a test bundle to {root} (tiny random models; example voices in "
          f"{root / 'voices'})")
    return 0


def _convert_generator(args: argparse.Namespace) -> int:
    from .stylegan2 import convert_checkpoint

    print(f"wrote {convert_checkpoint(args.checkpoint, args.directory)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run, to_json

    result = run(quick=args.quick, repeats=args.repeats, threads=args.threads,
                 quantize=args.quantize)
    print(to_json(result) if args.json else format_table(result))
    return 0

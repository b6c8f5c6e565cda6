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
EXIT_REJECTED = 1  # verify: the voice is not the claimed person's


class _Renamed(argparse.Action):
    """An option's old spelling: stores into the new option's destination and says on stderr
    which name to use."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def renamed(parser: argparse.ArgumentParser, old: str, new: str, **kwargs) -> None:
    """Accept `old` for one more release as a hidden, deprecated spelling of the option `new`
    (added before; give the same `type`)."""
    parser.add_argument(old, dest=new.removeprefix("--").replace("-", "_"), action=_Renamed,
                        new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voiceface", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("predict", help="nearest enrolled people and a generated face for a recording")
    p.add_argument("audio", type=Path, help="a recording (wav, flac, ogg, mp3, m4a, webm)")
    p.add_argument("--bundle", help="bundle directory or Hub repo id (default: $VOICEFACE_BUNDLE or index/)")
    p.add_argument("--out", type=Path, default=Path("face.png"), help="where to write the generated face")
    p.add_argument("-k", type=int, default=5, help="number of matches")
    p.add_argument("--truncation", type=float, default=None,
                   help="psi in [0, 1]; lower = nearer the centre (the gallery's population "
                   "centre unless the bundle says otherwise)")
    p.add_argument("--resolution", type=int, default=None, help="render smaller than full size (preview)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=_predict)

    p = commands.add_parser("verify", help="is a recording the voice of the person it claims "
                                           "to be? exits 0 accepted, 1 rejected, 2 bad input")
    p.add_argument("audio", type=Path, help="a recording (wav, flac, ogg, mp3, m4a, webm)")
    p.add_argument("--claim", required=True, help="the enrolled person's id")
    p.add_argument("--bundle", help="bundle directory or Hub repo id (default: "
                                    "$VOICEFACE_BUNDLE or index/)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=_verify)
    p = commands.add_parser("face2voice", help="the enrolled people whose voices best suit a "
                                               "face photo")
    p.add_argument("photo", type=Path, help="a photo of one person (JPEG, PNG or WebP)")
    p.add_argument("--bundle", help="bundle directory or Hub repo id (default: $VOICEFACE_BUNDLE or index/)")
    p.add_argument("-k", type=int, default=5, help="number of matches")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=_face2voice)

    p = commands.add_parser("traits", help="pitch and apparent sex of recordings, measured "
                                           "from the signal (no model weights)")
    p.add_argument("audio", type=Path, nargs="+", help="recordings (wav, flac, ogg, mp3, m4a, "
                                                       "webm)")
    p.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    p.set_defaults(run=_traits)

    p = commands.add_parser("dev-bundle", help="write an offline bundle of tiny random test models")
    p.add_argument("directory", type=Path)
    p.add_argument("--people", type=int, default=8)
    p.set_defaults(run=_dev_bundle)

    p = commands.add_parser("convert-generator",
                            help="convert a StyleGAN2 generator (rosinality .pt, or an NVIDIA "
                                 ".pkl read without running it) into safetensors + JSON")
    p.add_argument("checkpoint", type=Path,
                   help="rosinality .pt, or TensorFlow / stylegan2-ada-pytorch .pkl")
    p.add_argument("directory", type=Path)
    p.set_defaults(run=_convert_generator)

    p = commands.add_parser("build", help="build a bundle (gallery, latents, mapper) from a "
                                          "folder of consenting people")
    p.add_argument("people", type=Path, help="folder with one sub-folder per person")
    p.add_argument("--out", type=Path, default=Path("index"), help="bundle directory to write")
    p.add_argument("--encoder", default=None, help="voice encoder directory or Hub repo id")
    p.add_argument("--encoder-revision", default=None)
    p.add_argument("--generator", default=None,
                   help="StyleGAN2: saved directory, rosinality .pt or Hub repo id")
    p.add_argument("--generator-file", default=None)
    p.add_argument("--generator-revision", default=None)
    p.add_argument("--backbone", default=None,
                   help="image backbone for inversion (transformers; directory or Hub repo id)")
    p.add_argument("--backbone-revision", default=None)
    p.add_argument("--inversion-steps", type=int, default=None,
                   help="inversion steps per photo")
    renamed(p, "--steps", "--inversion-steps", type=int)
    p.add_argument("--inversion-resolution", type=int, default=None,
                   help="px the generator renders at while inverting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--far", type=float, default=None,
                   help="false-alarm rate the open-set threshold is calibrated at (default 0.01)")
    p.set_defaults(run=_build)

    p = commands.add_parser("eval", help="evaluate a built bundle: identification, open-set "
                                         "threshold, generation on unseen people")
    p.add_argument("people", type=Path, help="the people folder the bundle was built from")
    p.add_argument("--bundle", type=Path, default=Path("index"), help="the built bundle")
    renamed(p, "--index", "--bundle", type=Path)
    p.add_argument("--out", type=Path, default=None, help="report folder (default: BUNDLE/eval)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--far", type=float, default=0.01,
                   help="false-alarm rate of the open-set and verification thresholds "
                        "(default 0.01)")
    p.add_argument("--keep-threshold", action="store_true",
                   help="do not write the calibrated open-set threshold into the gallery (the "
                        "verification threshold is build's, never changed by eval)")
    p.add_argument("--face-traits", default=None,
                   help="face-trait model (CLIP; directory or Hub repo) the trait-agreement "
                        "section reads faces with, instead of the bundle's (default: the "
                        "bundle's; none named: the section says so)")
    p.set_defaults(run=_eval)

    p = commands.add_parser("dev-people", help="write a small people folder (espeak-ng voices, "
                                               "variants of one public-domain photo)")
    p.add_argument("directory", type=Path)
    p.add_argument("--people", type=int, default=6)
    p.set_defaults(run=_dev_people)

    p = commands.add_parser("persona-voices",
                            help="re-synthesise the default personas' recordings (needs espeak-ng, "
                                 "flite, festival and its voices, ffmpeg)")
    p.add_argument("directory", type=Path, nargs="?", default=Path("assets/personas"),
                   help="personas folder (default: assets/personas)")
    p.set_defaults(run=_persona_voices)

    p = commands.add_parser("publish", help="upload a bundle as a Hub model repo and/or the app "
                                            "as a Space")
    p.add_argument("bundle", type=Path, nargs="?", default=Path("index"),
                   help="bundle directory (default: index/)")
    p.add_argument("--repo", help="model repo USER/NAME for the bundle")
    p.add_argument("--space", help="Space USER/NAME for the app (uses --repo as its bundle)")
    p.add_argument("--public", action="store_true", help="make the repos public (default private)")
    p.add_argument("--include-voices", action="store_true",
                   help="also upload voice recordings (left out by default)")
    p.add_argument("--app-dir", type=Path, default=Path("."),
                   help="the app's folder (app.py, voiceface/, README.md ...) a Space gets "
                        "(default: the current directory)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be uploaded")
    p.set_defaults(run=_publish)

    p = commands.add_parser("publish-personas",
                            help="build (or reuse) a personas bundle's caches for its models and "
                                 "upload them to a Hub model repo; prints the commit to pin")
    p.add_argument("repo", nargs="?", help="model repo USER/NAME")
    p.add_argument("--bundle", type=Path, default=Path("index"),
                   help="the personas bundle (default: index/)")
    p.add_argument("--public", action="store_true", help="make the repo public (default private)")
    p.add_argument("--to-dir", type=Path, default=None,
                   help="write the files to this folder instead of the Hub (a local stand-in "
                        "a bundle can name as its persona_caches repo)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be uploaded")
    p.set_defaults(run=_publish_personas)

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
    from transformers.utils import logging as transformers_logging

    from .pipeline import VoiceFace
    from .provenance import save_png

    transformers_logging.disable_progress_bar()  # stderr carries only warnings and the error
    vf = VoiceFace.from_pretrained(args.bundle)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = vf(args.audio, k=args.k, truncation=args.truncation, resolution=args.resolution)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".png":
        save_png(result.face, args.out)  # with the text chunks saying it is AI-generated
    else:
        result.face.save(args.out)
    if args.json:
        print(json.dumps({**result.summary(vf.spec.test_weights), "face": str(args.out)}))
        return 0
    if vf.spec.test_weights:
        print("NOTE: test weights (a dev bundle): these results mean nothing.")
    best = result.best
    print(f"nearest: {best.name} (similarity {best.score:.3f})" if best else
          f"no confident match (best similarity {result.matches[0].score:.3f} < "
          f"{result.threshold:.4f})")
    for m in result.matches:
        print(f"  {m.rank}. {m.name:<24} {m.score:.3f}")
    print(f"generated face ({result.method}, truncated toward the {result.centre} centre): "
          f"{args.out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from .pipeline import VoiceFace

    transformers_logging.disable_progress_bar()  # stderr carries only warnings and the error
    vf = VoiceFace.from_pretrained(args.bundle)
    result = vf.verify(args.audio, args.claim)
    code = 0 if result.accepted else EXIT_REJECTED
    if args.json:
        print(json.dumps(result.summary(vf.spec.test_weights)))
        return code
    rates = ", ".join(f"{what} {rate:.1%} of {trials} trials" if rate is not None else
                      f"{what} unmeasured" for what, rate, trials in (
                          ("FAR", result.far, result.far_trials),
                          ("FRR", result.frr, result.frr_trials)))
    print(f"{'accepted' if result.accepted else 'rejected'}: {result.name} ({result.claim}), "
          f"{result.method} score {result.score:.3f} {'>=' if result.accepted else '<'} "
          f"threshold {result.threshold:.3f} ({rates})"
          + ("; TEST WEIGHTS: this means nothing" if vf.spec.test_weights else ""))
    return code


def _face2voice(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from .pipeline import VoiceFace

    transformers_logging.disable_progress_bar()  # stderr carries only the error
    vf = VoiceFace.from_pretrained(args.bundle)
    result = vf.face2voice(args.photo, k=args.k)
    if args.json:
        print(json.dumps(result.summary(vf.spec.test_weights)))
        return 0
    if vf.spec.test_weights:
        print("NOTE: test weights (a dev bundle): these results mean nothing.")
    print(f"voices that suit this face ({result.method}):")
    for m in result.matches:
        print(f"  {m.rank}. {m.name:<24} {m.score:.3f}")
    return 0


def _traits(args: argparse.Namespace) -> int:
    from .traits import voice_traits

    measured = [(path, voice_traits(path)) for path in args.audio]  # all, before printing
    if args.json:
        print(json.dumps([{"file": str(path), **t.summary()} for path, t in measured]))
        return 0
    for path, t in measured:
        sex = (f"apparent sex {t.apparent_sex}" if t.apparent_sex else "apparent sex unsure")
        print(f"{path}: pitch {t.pitch_hz:.0f} Hz (spread {t.pitch_spread_hz:.0f} Hz), "
              f"{sex} (confidence {t.confidence:.2f})")
    return 0


def _dev_bundle(args: argparse.Namespace) -> int:
    from .devbundle import write_dev_bundle

    root = write_dev_bundle(args.directory, n_people=args.people)
    print(f"wrote a test bundle to {root} (tiny random models; example voices in "
          f"{root / 'voices'})")
    return 0


def _convert_generator(args: argparse.Namespace) -> int:
    from .nvidia import convert_pickle
    from .stylegan2 import convert_checkpoint

    if args.checkpoint.suffix == ".pkl":  # the allowlist unpickler; nothing else opens a .pkl
        if not args.checkpoint.is_file():
            raise ValueError(f"Generator pickle not found: {args.checkpoint}")
        directory, found = convert_pickle(args.checkpoint, args.directory)
        print(found)
    else:
        directory = convert_checkpoint(args.checkpoint, args.directory)
    print(f"wrote {directory}")
    return 0


def _persona_voices(args: argparse.Namespace) -> int:
    from .persona_voices import write_voices

    written = write_voices(args.directory)
    print(f"wrote {len(written)} recordings to {written[0].parent}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .publish import plan_publish, publish

    plan = plan_publish(args.bundle, repo=args.repo, space=args.space,
                        private=not args.public, include_voices=args.include_voices,
                        app_dir=args.app_dir)
    print(plan.describe())
    if args.dry_run:
        print("dry run: nothing was uploaded")
        return 0
    for url in publish(plan):
        print(f"committed {url}")
    return 0


def _publish_personas(args: argparse.Namespace) -> int:
    from .bundle import BundleSpec
    from .loading import load_models, prepare_derived
    from .publish import (PublishError, plan_persona_caches, publish_persona_caches,
                          write_plan)

    if (args.repo is None) == (args.to_dir is None):
        raise PublishError("Give the model repo USER/NAME to upload to, or --to-dir DIR to "
                           "write the files to a folder (not both).")
    if args.repo is not None and (args.repo.count("/") != 1 or not all(args.repo.split("/"))):
        raise PublishError(f"{args.repo!r} is not a Hub repo id; write it as USER/NAME.")
    spec = BundleSpec.read(args.bundle)
    if spec.personas_dir is None:
        raise PublishError(f"{args.bundle} is not a personas bundle (its bundle.json names no "
                           '"personas"): its gallery is the bundle itself; publish it with '
                           "`python -m voiceface publish`.")
    encoder, generator, fingerprint = load_models(spec)
    cache = prepare_derived(spec, encoder, generator, fingerprint)
    plan = plan_persona_caches(cache, args.repo or str(args.to_dir), private=not args.public)
    print(plan.describe())
    if args.dry_run:
        print("dry run: nothing was uploaded")
    elif args.to_dir is not None:
        written = write_plan(plan, args.to_dir)
        print(f"wrote {len(written)} files to {args.to_dir}; a bundle names it with "
              f'"persona_caches": {{"repo": "{args.to_dir.resolve()}"}}')
    else:
        revision = publish_persona_caches(plan)
        print(f'revision {revision}; pin it in bundle.json: "persona_caches": '
              f'{{"repo": "{args.repo}", "revision": "{revision}"}}')
    return 0


def _build(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .build import BuildConfig, build

    config = BuildConfig()
    given = {k: v for k, v in {
        "encoder": args.encoder, "generator": args.generator,
        "generator_file": args.generator_file, "seed": args.seed,
        "far": args.far}.items() if v is not None}
    if args.encoder:  # a new encoder: its own revision (None = as found)
        given["encoder_revision"] = args.encoder_revision
    if args.generator:
        given["generator_revision"] = args.generator_revision
    inversion = {k: v for k, v in {"backbone": args.backbone, "steps": args.inversion_steps,
                                   "resolution": args.inversion_resolution}.items()
                 if v is not None}
    if args.backbone:
        inversion["revision"] = args.backbone_revision
    config = replace(config, **given, inversion=replace(config.inversion, **inversion))
    report = build(args.people, args.out, config)
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .build import REPORT_FILE
    from .calibration import Calibration
    from .evaluate import apply_threshold, evaluate, markdown, write_report

    built = args.bundle / REPORT_FILE
    built_from = json.loads(built.read_text()).get("people_dir") if built.is_file() else None
    if built_from != str(args.people.resolve()):
        raise ValueError(f"{args.bundle} was not built from {args.people}; run `python -m "
                         f"voiceface build {args.people} --out {args.bundle}` first.")
    report = evaluate(args.bundle, folds=args.folds, far=args.far,
                      face_traits=args.face_traits)
    report["people_dir"] = built_from
    out = args.out or args.bundle / "eval"
    write_report(report, out)
    print(markdown(report))
    calibration = report["identification"].get("calibration")
    if calibration is not None and not args.keep_threshold:
        apply_threshold(args.bundle, calibration)
        print(f"the gallery now uses this {Calibration.from_dict(calibration).describe()}")
    print(f"wrote {out}/report.json, report.md, report.png, det.png")
    return 0


def _dev_people(args: argparse.Namespace) -> int:
    from .devbundle import write_people_folder

    print(f"wrote {write_people_folder(args.directory, n_people=args.people)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run, to_json

    result = run(quick=args.quick, repeats=args.repeats, threads=args.threads,
                 quantize=args.quantize)
    print(to_json(result) if args.json else format_table(result))
    return 0

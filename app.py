"""voiceface's Gradio app: arguments, loading, launch; the interface is `voiceface.ui`.

    python app.py [--bundle DIR_OR_REPO] [--encoder DIR_OR_REPO] [--generator PATH_OR_REPO]
                  [--gallery-dir DIR] [--trusted-proxies CIDRS] [--precision auto]
                  [--host 127.0.0.1] [--port 7860] [--share]

With $VOICEFACE_ADMIN_PASSWORD set, an Enroll tab adds and deletes people (password checked
on every request) in the gallery directory; without it the app is read-only.

Models load once per process, at start-up; then the rest of the start (`voiceface.startup`):
the gallery (a personas bundle's caches: built on a fresh start, minutes with full-size
models), the live gallery, and the precision visitors' voices are embedded in
(`voiceface.precision.settle`: by default checked on the bundle's voices). A built bundle
does it before serving, as it takes seconds; a personas bundle serves the page as soon as
the models are loaded and does it in a background thread, the page saying how far it is.
On a ZeroGPU Space the model work runs inside `spaces.GPU`; elsewhere it runs on whatever
device the pipeline picked (CPU here).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from voiceface import ui
from voiceface.hub import WeightsNotFound
from voiceface.bundle import DEFAULT_BACKBONE, DEFAULT_BACKBONE_REVISION, DEFAULT_FACE_TRAITS
from voiceface.invert import InversionConfig
from voiceface.loading import cache_dir
from voiceface.memory import limit_arenas
from voiceface.pipeline import VoiceFace
from voiceface.precision import CHOICES, PRECISION_VAR
from voiceface.proxies import SPACE_PROXIES, TrustedProxies
from voiceface.startup import Startup
from voiceface.stylegan2_ops import reuse_freed_memory

ADMIN_PASSWORD_VAR = "VOICEFACE_ADMIN_PASSWORD"  # set it (a Space secret) to allow enrollment
BUNDLE = Path(__file__).resolve().parent / "index"  # the 48 personas (their files in assets/)


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="voiceface: a voice in; the nearest enrolled "
                                     "person and a generated face out.")
    add = parser.add_argument
    add("--bundle", default=env("VOICEFACE_BUNDLE") or str(BUNDLE), help="bundle directory or "
        f"Hub repo id (default: $VOICEFACE_BUNDLE, else {BUNDLE})")
    add("--encoder", default=env("VOICEFACE_ENCODER"), help="voice encoder directory or Hub "
        "repo id instead of the bundle's (default: $VOICEFACE_ENCODER)")
    add("--generator", default=env("VOICEFACE_GENERATOR"), help="StyleGAN2 generator (saved "
        "directory, rosinality .pt file, or Hub repo id) instead of the bundle's, e.g. one "
        "trained on faces the default does not draw well (default: $VOICEFACE_GENERATOR)")
    add("--generator-file", default=env("VOICEFACE_GENERATOR_FILE"),
        help="checkpoint file inside a --generator Hub repo")
    add("--threads", type=int, default=int(env("VOICEFACE_THREADS", "0")) or None,
        help="torch threads (default: $VOICEFACE_THREADS, else torch's choice); 1 is faster "
        "when other processes share the CPU cores")
    add("--quantize", action="store_true", default=env("VOICEFACE_QUANTIZE", "") in ("1", "true"),
        help="int8 voice encoder on the CPU for everything, the gallery included: its own "
        "fingerprint, so the persona caches are rebuilt for it ($VOICEFACE_QUANTIZE=1); "
        "--precision int8 instead keeps the fp32 gallery and embeds only visitors' voices in "
        "int8")
    add("--precision", default=env(PRECISION_VAR) or "auto",
        help="what visitors' voices are embedded in: auto (default: a faster bf16 or int8 "
        "encoder when it agrees with fp32 on the bundle's voices, checked at start), fp32, "
        f"bf16 or int8 (unchecked). Default: ${PRECISION_VAR}, else auto")
    add("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (0.0.0.0 for every interface)")
    add("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    add("--share", action="store_true", help="also open a public gradio.live link")
    add("--file-lifetime", type=int, default=int(env("VOICEFACE_FILE_LIFETIME",
                                                     ui.FILE_LIFETIME)),
        help="seconds an upload (recording, photo) or a generated image stays on the server "
        f"before it is deleted (default: $VOICEFACE_FILE_LIFETIME, else {ui.FILE_LIFETIME})")
    add("--visitors-per-address", type=int,
        default=int(env("VOICEFACE_VISITORS_PER_ADDRESS", "1")),
        help="how many visitors may share one address (a classroom behind one NAT): an "
        "address may have this many times one visitor's requests in the queue and uploads "
        "(default: $VOICEFACE_VISITORS_PER_ADDRESS, else 1)")
    add("--gallery-dir", default=env("VOICEFACE_GALLERY_DIR"), help="keep the gallery in this "
        "directory (e.g. /data/voiceface on a Space with persistent storage): loaded if it "
        "holds one, else the bundle's is copied there. Default: $VOICEFACE_GALLERY_DIR; with "
        f"${ADMIN_PASSWORD_VAR} set, {cache_dir() / 'gallery'}")
    add("--trusted-proxies", default=env("VOICEFACE_TRUSTED_PROXIES"),
        help="addresses or networks of the reverse proxies in front of the app, e.g. "
        "'10.0.0.0/8, 192.0.2.7': only from them is X-Forwarded-For believed, for the admin "
        "password's back-off (default: $VOICEFACE_TRUSTED_PROXIES; on a Hugging Face Space, "
        "its private networks; else none: the connecting address is the client)")
    add("--backbone", default=env("VOICEFACE_BACKBONE"), help="perceptual backbone "
        "(directory or Hub repo) instead of the bundle's: describes faces for face to voice "
        "in the personas' cache, and inverts enrolled faces into latents (default: "
        f"$VOICEFACE_BACKBONE, else the bundle's, else {DEFAULT_BACKBONE})")
    add("--face-traits", default=env("VOICEFACE_FACE_TRAITS"), help="face-trait model "
        "(CLIP; directory or Hub repo) instead of the bundle's: chooses the personas' faces "
        "that agree with their voices (default: $VOICEFACE_FACE_TRAITS, else the bundle's, "
        f"else {DEFAULT_FACE_TRAITS})")
    add("--inversion-steps", type=int, default=InversionConfig.steps,
        help="optimisation steps per enrolled face")
    add("--inversion-resolution", type=int, default=InversionConfig.resolution,
        help="px the generator renders at while inverting a face")
    args = parser.parse_args(argv)
    if args.precision not in CHOICES:
        parser.error(f"--precision (or ${PRECISION_VAR}) is {args.precision!r}; use one of "
                     f"{', '.join(CHOICES)}")
    if args.quantize and args.precision not in ("auto", "int8"):
        parser.error(f"--quantize runs the whole encoder in int8, so --precision "
                     f"{args.precision} cannot apply; drop one of them")
    if args.file_lifetime < 1:
        parser.error(f"--file-lifetime must be at least 1 s, got {args.file_lifetime}")
    space = env("SPACE_ID")
    try:
        proxies = TrustedProxies.parse(args.trusted_proxies if args.trusted_proxies is not None
                                       else SPACE_PROXIES if space else "")
    except ValueError as err:
        parser.error(str(err))
    if args.visitors_per_address < 1:
        parser.error(f"--visitors-per-address must be at least 1, got "
                     f"{args.visitors_per_address}")
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        level=logging.WARNING)
    logging.getLogger("voiceface.precision").setLevel(logging.INFO)  # the decision's figures
    admin_password = env(ADMIN_PASSWORD_VAR) or None
    gallery_dir = args.gallery_dir or (cache_dir() / "gallery" if admin_password else None)
    # A server renders again and again: keeping freed activation memory for reuse saves
    # faulting in fresh pages on every render; its threads share few arenas, so what one
    # request frees is there for the next instead of kept per thread (voiceface/memory.py).
    reuse_freed_memory()
    limit_arenas()
    if args.threads:
        torch.set_num_threads(args.threads)
    inversion = InversionConfig(
        steps=args.inversion_steps, resolution=args.inversion_resolution,
        backbone=args.backbone or DEFAULT_BACKBONE,
        revision=None if args.backbone else DEFAULT_BACKBONE_REVISION)
    try:
        vf = VoiceFace.from_pretrained(args.bundle, encoder=args.encoder,
                                       generator=args.generator,
                                       generator_file=args.generator_file,
                                       backbone=args.backbone, face_traits=args.face_traits,
                                       quantize=args.quantize or None, prepare=False)
        startup = Startup(vf, gallery_dir, inversion=inversion, precision=args.precision)
        behind = vf.spec.personas_dir is not None  # minutes on a fresh start: behind the page
        if not behind:
            startup.run()
    except (WeightsNotFound, ValueError) as err:
        print(f"voiceface cannot start: {err}", file=sys.stderr)
        return 2
    demo = ui.build(startup, admin_password, args.file_lifetime, proxies=proxies,
                    visitors_per_address=args.visitors_per_address)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                prevent_thread_lock=True,
                **ui.launch_options(demo, startup, args.file_lifetime, proxies=proxies,
                                    visitors_per_address=args.visitors_per_address))
    if behind:
        startup.start()
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())

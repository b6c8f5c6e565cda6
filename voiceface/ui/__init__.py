"""The Gradio interface over a loaded pipeline: the only part of voiceface that imports gradio.

Each tab is a module with a `tab(ctx, ...)` function that lays out its components and wires
its events from a `Context` (the pipeline, the live gallery, the model-call counter, the
shared queue). `build` assembles them; a new tab is a new module and one line here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from ..admin import AdminGate
from ..bundle import GALLERY_DIR
from ..gallery_files import FACES_DIR
from ..precision import PrecisionDecision
from ..proxies import TrustedProxies
from ..startup import Startup
from . import enroll, face2voice, gallery, identify, verify
from .common import (CONCURRENCY, FILE_LIFETIME, MAX_FILE_SIZE, MODEL_QUEUE, Context, i18n,
                     own_files, phone_galleries, preparing)
from .hardening import Preparing, SafeResponses, quiet_repeated_tracebacks
from .limits import QUEUE_SIZE, BodyLimits, VisitorQueue

__all__ = ["build", "launch_options", "FILE_LIFETIME"]

CLEANINGS_PER_LIFETIME = 5  # the cache is cleaned this often within one lifetime
STATUS_POLL = 2.0  # s between refreshes of the start's progress on a page served before it
UVICORN_TRUSTED_PROXIES = "FORWARDED_ALLOW_IPS"  # uvicorn (under Gradio) reads this at launch


def build(startup: Startup, admin_password: str | None = None,
          file_lifetime: int = FILE_LIFETIME, *, proxies: TrustedProxies | None = None,
          visitors_per_address: int = 1) -> gr.Blocks:
    """The app over the pipeline of `startup`, which may still be preparing its gallery
    (`voiceface.startup`): then a line at the top says how far it is (refreshed every
    `STATUS_POLL` s, gone once it is ready), and what needs the gallery says so when asked.
    With a live gallery and an `admin_password`, also the Enroll tab. A status line at the
    bottom says what the voice encoder runs in and why (`precision_note`; "checking" until
    the check is done). Visitors are told apart by address, read through `proxies` (by
    default none: the TCP peer): the admin password's back-off, and the model queue, which
    admits each visitor's events within `voiceface.ui.limits`' limits (an address's grow with
    `visitors_per_address`). Uploads and renders are deleted from Gradio's cache
    `file_lifetime` s after they were made (the example voices excepted); nothing else is
    (`own_files`). The app sends no telemetry."""
    proxies = proxies or TrustedProxies()
    vf = startup.vf
    with gr.Blocks(title="voiceface", analytics_enabled=False, delete_cache=(
            max(1, file_lifetime // CLEANINGS_PER_LIFETIME), file_lifetime)) as demo:
        ctx = Context(demo, startup)
        gr.Markdown(i18n("title"))
        progress = gr.Markdown(elem_id="preparing-status", visible=not startup.ready)
        if vf.spec.test_weights:
            gr.Markdown(i18n("test_banner"), elem_id="test-banner")
        if vf.spec.synthetic_personas:
            gr.Markdown(i18n("personas_note"), elem_id="personas-note")
        with gr.Tab(i18n("tab_main")):
            identify.tab(ctx)
        with gr.Tab(i18n("tab_face2voice")):
            face2voice.tab(ctx)
        with gr.Tab(i18n("tab_gallery")) as gallery_tab:
            people = gallery.tab(ctx, gallery_tab)
        with gr.Tab(i18n("tab_verify")):
            verify.tab(ctx)
        if startup.gallery_dir is not None and admin_password:
            with gr.Tab(i18n("tab_enroll")):
                enroll.tab(ctx, AdminGate(admin_password), proxies, people)
        status = gr.Markdown(elem_id="precision-status")

        def note(request: gr.Request) -> str:
            return startup_note(startup, ctx.text(request))

        def refresh(request: gr.Request) -> tuple:
            text = ctx.text(request)
            done = startup.decision is not None or startup.precision_error is not None \
                or vf.preparation.error is not None
            shown = gr.Markdown(visible=False) if startup.ready else \
                gr.Markdown(preparing(vf.preparation, text), visible=True)
            return shown, startup_note(startup, text), gr.Timer(active=not done)

        demo.load(note, outputs=[status], api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")
        if startup.decision is None:  # served before the start is done: watch it
            timer = gr.Timer(STATUS_POLL)
            gr.on([demo.load, timer.tick], refresh, outputs=[progress, status, timer],
                  api_visibility="private", concurrency_limit=None, show_progress="hidden")
    # api_open=False: the direct routes (/run/<name>) would skip the queue and its limits
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE, api_open=False)
    VisitorQueue(MODEL_QUEUE, proxies, visitors_per_address).install(demo)
    quiet_repeated_tracebacks()
    own_files(demo)
    return demo


def startup_note(startup: Startup, text: dict[str, str]) -> str:
    """The precision status line (`precision_note`), or that the check is still to come or
    failed, in the language of `text`."""
    if startup.decision is not None:
        return precision_note(startup.decision, text)
    return text["precision_failed" if startup.precision_error else "precision_checking"]


def precision_note(decision: PrecisionDecision, text: dict[str, str]) -> str:
    """The status line saying what the voice encoder runs in, in the language of `text`."""
    shown = decision.best
    if decision.how == "no voices":
        return text["precision_unchecked"]
    if shown is None:  # configured, or quantised with the gallery
        return text["precision_set"].format(precision=decision.precision)
    key = "precision_switched" if decision.chosen else "precision_kept"
    return text[key].format(precision=shown.precision, voices=shown.voices,
                            cosine=shown.lowest_cosine, required=shown.min_cosine,
                            agree=shown.agree, speedup=shown.speedup,
                            min_speedup=decision.min_speedup)


def launch_options(demo: gr.Blocks, startup: Startup, file_lifetime: int = FILE_LIFETIME, *,
                   proxies: TrustedProxies | None = None, visitors_per_address: int = 1
                   ) -> dict[str, Any]:
    """`Blocks.launch` keyword arguments that the interface needs for `demo` (built by `build`
    over `startup`): the gallery's photo folders served as files (those of a gallery prepared
    after the launch are added to `demo.allowed_paths` once it is ready; call `launch` before
    `startup.start`), the upload limits, the safe headers (and the refusal of programs' calls
    while the start is not ready: `Preparing`), the interface text, the phone layout.

    Also tells uvicorn, which Gradio starts with no say over its proxy settings, to trust
    no proxy (it would otherwise take the client's address from `X-Forwarded-For` on any
    request from 127.0.0.1): the request's client stays the TCP peer, and `proxies`
    (`voiceface.proxies`) alone decides whose forwarded addresses to believe."""
    os.environ[UVICORN_TRUSTED_PROXIES] = ""

    def allow_photos() -> None:  # the attribute Gradio reads on every file it serves
        demo.allowed_paths = sorted({*demo.allowed_paths, *photo_dirs(startup)})

    startup.when_ready(allow_photos)
    return {"allowed_paths": photo_dirs(startup), "max_file_size": MAX_FILE_SIZE, "i18n": i18n,
            "css": phone_galleries("top", "people"),
            "enable_monitoring": False,  # request counts of the admin endpoints are private
            "app_kwargs": {"middleware": [
                Middleware(SafeResponses),
                Middleware(Preparing, startup),
                Middleware(BodyLimits, file_lifetime, proxies or TrustedProxies(),
                           visitors_per_address)]}}


def photo_dirs(startup: Startup) -> list[str]:
    """The folders of the gallery's photos (none before it is ready) and of the live
    gallery's (known from the start)."""
    vf = startup.vf
    dirs = {str(Path(p.faces[0]).parent) for p in vf.gallery.people if p.faces} if vf.ready \
        else set()
    if startup.gallery_dir is not None:  # where enrolled people's photos will be
        dirs.add(str(startup.gallery_dir / GALLERY_DIR / FACES_DIR))
    return sorted(dirs)

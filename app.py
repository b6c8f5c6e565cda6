"""voiceface Gradio app: layout and event wiring over `voiceface.pipeline.VoiceFace`.

    python app.py [--bundle DIR_OR_REPO] [--encoder DIR_OR_REPO] [--generator PATH_OR_REPO]
                  [--gallery-dir DIR] [--host 127.0.0.1] [--port 7860] [--share]

With $VOICEFACE_ADMIN_PASSWORD set, an Enroll tab adds and deletes people (password checked
on every request) in the gallery directory; without it the app is read-only.

Models load once per process, at start-up. On a ZeroGPU Space the model work runs inside
`spaces.GPU`; elsewhere it runs on whatever device the pipeline picked (CPU here).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import string
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import gradio as gr
import pandas as pd
import torch

from voiceface.admin import AdminGate, AdminRefused
from voiceface.enroll import MAX_NAME_CHARS, LiveGallery, speech_seconds
from voiceface.hub import WeightsNotFound
from voiceface.ui_text import TEXT
from voiceface.invert import DEFAULT_BACKBONE, DEFAULT_BACKBONE_REVISION, InversionConfig
from voiceface.pipeline import VoiceFace, VoiceFaceResult, cache_dir, default_bundle
from voiceface.stylegan2_ops import reuse_freed_memory

PREVIEW_RESOLUTION = 256  # px, drawn first; the full-size face replaces it
TOP_K = 5  # people shown below the faces
FACE_HEIGHT = 320  # px of each face on the page
MAX_FILE_SIZE = "20mb"  # uploads larger than this are refused by the server
MODEL_QUEUE = "models"  # one queue for every event that decodes audio or runs a model ...
CONCURRENCY = 1  # ... computing one request at a time: on 2 CPU cores that is fastest
FILE_LIFETIME = 300  # s an upload or a render stays in Gradio's cache before it is deleted
CLEANINGS_PER_LIFETIME = 5  # the cache is cleaned this often within one lifetime
BROWSER_SAMPLE_RATE = 16_000  # Hz requested from the browser's recorder
STATUS_POLL = 2.0  # s between refreshes of the enrollment status
ADMIN_PASSWORD_VAR = "VOICEFACE_ADMIN_PASSWORD"  # set it (a Space secret) to allow enrollment

try:  # ZeroGPU Spaces provide `spaces`; everywhere else the work runs where it is
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn

i18n = gr.I18n(**TEXT)
log = logging.getLogger("voiceface.app")
MARKDOWN_SPECIAL = re.compile(f"([{re.escape(string.punctuation)}])")


def plain(text: str) -> str:
    """`text` (a person's name, anything a visitor chose) shown literally inside Markdown:
    every ASCII punctuation mark is backslash-escaped, so no link, image, HTML tag or
    autolinked address can form, whatever the name holds."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def public(err: Exception) -> str:
    """An error's message fit for a visitor: any absolute path in it is cut to its file name
    (the library's messages name files; the server's directories are nobody's business)."""
    return re.sub(r"(?:/[^\s/'\"]+)+/([^\s/'\"]+)", r"\1", str(err))


class ModelCalls:
    """Counts the model calls in flight. The shared queue makes overlap impossible; if it ever
    happens (a misconfigured event) it is logged as an error, which the load test watches."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running = 0

    @contextmanager
    def __call__(self):
        with self._lock:
            self.running += 1
            if self.running > 1:
                log.error("%d model calls overlap: an event is outside the shared queue",
                          self.running)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


def read_upload(path: str | None, missing: str, gone: str) -> bytes:
    """The bytes of a file a request names. Nothing is deleted here: Gradio stores uploads by
    content (two visitors who send the same bytes share one file) and a request may name any
    file the app serves, so deleting what a request names would let one visitor destroy
    another's files. Gradio's cache cleaning deletes uploads `FILE_LIFETIME` s after upload."""
    if not path:
        raise gr.Error(missing, print_exception=False)
    try:
        return Path(path).read_bytes()
    except OSError:  # cleaned away, a directory, unreadable: say so, never echo the path
        raise gr.Error(gone, print_exception=False) from None


def language(request: gr.Request | None) -> str:
    """"ja" when the browser prefers Japanese, else "en" (for text built per request)."""
    header = (request.headers.get("accept-language", "") if request is not None else "")
    first = header.split(",")[0].strip().lower()
    return "ja" if first.startswith("ja") else "en"


def build(vf: VoiceFace, live: LiveGallery | None = None, admin_password: str | None = None,
          file_lifetime: int = FILE_LIFETIME) -> gr.Blocks:
    """The app's layout and events over one loaded pipeline; with `live` and an
    `admin_password`, also the Enroll tab. Uploads and renders are deleted from Gradio's cache
    `file_lifetime` s after they were made (the example voices excepted)."""

    # Gallery photos are served as files (allowed in `launch`), not re-encoded per request.
    # Read per call: enrollment swaps the gallery.
    def people_gallery() -> list[tuple[str, str]]:
        return [(str(p.faces[0]), p.name) for p in vf.gallery.people if p.faces]

    full = vf.generator.resolution
    # the preview first, then the full face, from one render (see VoiceFace.stream)
    sizes = [PREVIEW_RESOLUTION, full] if full > PREVIEW_RESOLUTION else [full]
    model_call = ModelCalls()
    queue = {"concurrency_id": MODEL_QUEUE, "concurrency_limit": CONCURRENCY}

    @gpu
    def analyse(audio: bytes) -> Iterator[VoiceFaceResult]:
        yield from vf.stream(audio, k=TOP_K, resolutions=sizes)

    def outputs(result: VoiceFaceResult, lang: str, is_preview: bool):
        text = TEXT[lang]
        best = result.matches[0]
        caption = text["generated_caption"].format(
            method=text[f"method_{result.method}"], centre=text[f"centre_{result.centre}"]
        ) + (f" ({text['preview']})" if is_preview else "")
        if result.confident:
            match_text = text["match"].format(name=plain(best.name), score=best.score)
        else:
            match_text = text["no_match"].format(name=plain(best.name), score=best.score,
                                                 threshold=result.threshold)
        faces = {m.id: str(m.face) for m in result.matches  # each match carries its photo;
                 if m.face and m.id in vf.gallery}          # not if deleted meanwhile
        top = [(faces[m.id], f"{m.rank}. {m.name} ({m.score:.2f})")
               for m in result.matches if m.id in faces]
        chart = pd.DataFrame({"person": [f"{m.rank}. {m.name}" for m in result.matches],
                              "similarity": [round(m.score, 3) for m in result.matches]})
        nearest = faces.get(best.id) if result.confident else None
        summary = {
            "matches": [{"id": m.id, "name": m.name, "score": round(m.score, 4)}
                        for m in result.matches],
            "confident": result.confident, "method": result.method, "centre": result.centre,
            "threshold": result.threshold, "test_weights": vf.test_weights,
            "timings": {k: round(v, 3) for k, v in result.timings.items()},
        }
        return result.face, caption, nearest, match_text, top, chart, summary

    def threshold_note(request: gr.Request) -> str:
        """How the gallery's threshold was set, in the visitor's language (read per call:
        enrollment recalibrates it)."""
        text, gallery = TEXT[language(request)], vf.gallery
        record = gallery.calibration
        if record is None:
            return text["threshold_default"].format(threshold=gallery.threshold)
        note = text["threshold_measured"].format(
            threshold=record.threshold, trials=record.trials, accepted=record.accepted,
            achieved=record.far_achieved, target=record.far_target, date=record.date[:10])
        if not record.enough_trials:
            note += " " + text["threshold_few"].format(trials=record.trials,
                                                      target=record.far_target,
                                                      finest=1 / record.trials)
        return note

    def predict(audio: str | None, request: gr.Request) -> Iterator[tuple]:
        lang = language(request)
        recording = read_upload(audio, TEXT[lang]["no_audio"], TEXT[lang]["gone"])
        if live is not None:  # another process (a replica, an overlapping restart) may have
            live.refresh()    # enrolled or deleted someone: one manifest read when it did not
        results = analyse(recording)
        is_preview = len(sizes) > 1
        while True:
            try:
                with model_call():  # the voice is analysed at the first step, faces drawn after
                    result = next(results, None)
            except ValueError as err:  # AudioError and the library's other input errors
                raise gr.Error(public(err), print_exception=False) from None  # the user's
            if result is None:
                return
            yield outputs(result, lang, is_preview)
            is_preview = False

    with gr.Blocks(title="voiceface", delete_cache=(
            max(1, file_lifetime // CLEANINGS_PER_LIFETIME), file_lifetime)) as demo:
        gr.Markdown(i18n("title"))
        if vf.test_weights:
            gr.Markdown(i18n("test_banner"), elem_id="test-banner")
        if vf.synthetic_personas:
            gr.Markdown(i18n("personas_note"), elem_id="personas-note")
        with gr.Tab(i18n("tab_main")):
            gr.Markdown(i18n("intro"))
            audio = gr.Audio(sources=["microphone", "upload"], type="filepath",
                             label=i18n("voice"), elem_id="voice",
                             waveform_options=gr.WaveformOptions(
                                 sample_rate=BROWSER_SAMPLE_RATE))
            submit = gr.Button(i18n("submit"), variant="primary", elem_id="submit")
            with gr.Row(equal_height=True):
                with gr.Column():
                    generated = gr.Image(label=i18n("generated"), elem_id="generated",
                                         type="pil", format="png", interactive=False,
                                         height=FACE_HEIGHT)
                    generated_caption = gr.Markdown(elem_id="generated-caption")
                with gr.Column():
                    nearest = gr.Image(label=i18n("nearest"), elem_id="nearest", type="pil",
                                       format="png", interactive=False, height=FACE_HEIGHT)
                    nearest_caption = gr.Markdown(elem_id="nearest-caption",
                                                  latex_delimiters=[])
            gr.Markdown(i18n("note"))
            top = gr.Gallery(label=i18n("top"), columns=TOP_K, rows=1, height=200,
                             object_fit="contain", elem_id="top")
            chart = gr.BarPlot(x="person", y="similarity", label=i18n("chart"), sort="-y",
                               y_lim=[0, 1], elem_id="chart")
            summary = gr.JSON(visible=False)
            examples = sorted(vf.example_voices())
            if examples:
                shown = gr.Examples([[str(e)] for e in examples], inputs=[audio],
                                    label=i18n("examples"))
                # Gradio copies them into its cache once, when the app is built, and hands
                # out those copies on every click: they must outlive the cache cleaning
                # (which spares what a rendered component lists in `keep_in_cache`).
                audio.keep_in_cache.update(value["path"] for example in
                                           shown.non_none_processed_examples.values()
                                           for value in example)
            submit.click(predict, inputs=[audio],
                         outputs=[generated, generated_caption, nearest, nearest_caption, top,
                                  chart, summary],
                         api_name="predict_ui", api_visibility="undocumented", **queue)
        with gr.Tab(i18n("tab_gallery")) as gallery_tab:
            gr.Markdown(i18n("gallery_intro"))
            threshold = gr.Markdown(elem_id="threshold-note")
            people = gr.Gallery(people_gallery, label=i18n("people"), columns=6,
                                height="auto", elem_id="people")
        for event in (demo.load, gallery_tab.select):  # enrollment may have recalibrated it
            event(threshold_note, outputs=[threshold], api_visibility="private",
                  concurrency_limit=None, show_progress="hidden")
        if live is not None and admin_password:

            def forget_copies(names: set[str]) -> None:
                """Delete the copies of these photos Gradio made in its cache to serve them."""
                for files in demo.temp_file_sets:
                    for copy in [f for f in list(files) if Path(f).name in names]:
                        Path(copy).unlink(missing_ok=True)
                        files.discard(copy)

            with gr.Tab(i18n("tab_enroll")):
                enroll_tab(live, AdminGate(admin_password), people, people_gallery,
                           forget_copies, model_call, queue)
        # The programmatic endpoint: audio file in; generated face, nearest face, summary out.
        api_faces = [gr.Image(type="pil", format="png", visible=False) for _ in range(2)]

        def api_predict(audio: str, request: gr.Request):
            *_, (face, _, near, _, _, _, report) = predict(audio, request)
            return face, near, report

        gr.Button(visible=False).click(api_predict, inputs=[audio],
                                       outputs=[*api_faces, summary], api_name="predict",
                                       **queue)
    demo.queue(default_concurrency_limit=CONCURRENCY)
    return demo


def enroll_tab(live: LiveGallery, gate: AdminGate, people: gr.Gallery, people_gallery,
               forget_copies, model_call: ModelCalls, queue: dict) -> None:
    """The Enroll tab's layout and events (inside a `gr.Tab`): enroll, latent status, delete.
    `forget_copies(names)` deletes the served copies of a deleted person's photos;
    `model_call` counts model work; `queue` puts an event in the shared model queue."""

    def check_password(password: str | None, request: gr.Request, lang: str) -> None:
        client = request.client.host if request.client else "unknown"
        try:
            gate.check(password, client)
        except AdminRefused as err:
            text = TEXT[lang]
            message = (text["password_wait"].format(seconds=math.ceil(err.retry_after))
                       if err.retry_after else text["bad_password"])
            raise gr.Error(message, print_exception=False) from None

    def person_choices() -> list[tuple[str, str]]:
        return [(f"{p.name} ({p.id})", p.id) for p in live.vf.gallery.people]

    def choices() -> gr.Dropdown:
        return gr.Dropdown(choices=person_choices(), value=None)

    def enroll(password, voice, photo, name, consent, request: gr.Request):
        lang = language(request)
        text = TEXT[lang]
        check_password(password, request, lang)
        voice_bytes = read_upload(voice, text["no_voice"], text["gone"])
        photo_bytes = read_upload(photo, text["no_photo"], text["gone"])
        try:  # consent goes through as sent: the library takes only a real True
            with model_call():
                person_id = live.enroll(name, voice_bytes, photo_bytes, consent)
        except ValueError as err:  # the library's message says what to fix
            raise gr.Error(public(err), print_exception=False) from None
        done = text["enrolled"].format(name=plain(live.vf.gallery.person(person_id).name),
                                       id=person_id)
        return done, people_gallery(), choices(), None, None, "", False

    def delete(password, person_id, confirm, request: gr.Request):
        lang = language(request)
        check_password(password, request, lang)
        if not isinstance(person_id, str) or person_id not in live.vf.gallery:
            raise gr.Error(TEXT[lang]["no_person"], print_exception=False)
        if confirm is not True:
            raise gr.Error(TEXT[lang]["not_confirmed"], print_exception=False)
        person = live.vf.gallery.person(person_id)
        with model_call():
            live.delete(person_id)
        forget_copies({Path(face).name for face in person.faces})
        return (TEXT[lang]["deleted"].format(name=plain(person.name), id=person_id),
                people_gallery(), choices(), False)

    def duration(voice: str | None, request: gr.Request) -> str:
        if not voice:
            return ""
        text = TEXT[language(request)]
        try:
            with model_call():
                return text["duration"].format(seconds=speech_seconds(
                    read_upload(voice, text["no_voice"], text["gone"])))
        except ValueError as err:
            return public(err)

    def latent_status(request: gr.Request) -> str:
        text = TEXT[language(request)]  # a failure's reason is in the server log, not here
        shown = [f"{plain(p.name)}: {text.get('st_' + live.status(p.id), text['st_failed'])}"
                 for p in live.vf.gallery.people if p.extra.get("live_enrolled")]
        return text["latents"].format(people=" · ".join(shown)) if shown else ""

    gr.Markdown(i18n("enroll_intro"))
    password = gr.Textbox(type="password", label=i18n("password"), elem_id="password")
    with gr.Row():
        with gr.Column():
            voice = gr.Audio(sources=["microphone", "upload"], type="filepath",
                             label=i18n("enroll_voice"), elem_id="enroll-voice",
                             waveform_options=gr.WaveformOptions(
                                 sample_rate=BROWSER_SAMPLE_RATE))
            gr.Markdown(i18n("voice_hint"))
            seconds = gr.Markdown(elem_id="enroll-duration", latex_delimiters=[])
        # image_mode=None: Gradio hands over the upload as it is, unconverted (no decoding
        # before the password check, and no converted copy outside the cache cleaning)
        photo = gr.Image(sources=["webcam", "upload"], type="filepath", label=i18n("photo"),
                         elem_id="enroll-photo", height=FACE_HEIGHT, image_mode=None)
    name = gr.Textbox(label=i18n("name"), max_length=MAX_NAME_CHARS, elem_id="enroll-name")
    consent = gr.Checkbox(value=False, label=i18n("consent"), elem_id="consent")
    enroll_button = gr.Button(i18n("enroll"), variant="primary", elem_id="enroll")
    enroll_status = gr.Markdown(elem_id="enroll-status", latex_delimiters=[])
    status = gr.Markdown(elem_id="latent-status", latex_delimiters=[])
    gr.Markdown(i18n("delete_title"))
    person = gr.Dropdown(choices=person_choices(), label=i18n("person"),
                         allow_custom_value=True, elem_id="delete-person")
    confirm = gr.Checkbox(value=False, label=i18n("confirm_delete"), elem_id="confirm-delete")
    delete_button = gr.Button(i18n("delete"), variant="stop", elem_id="delete")
    delete_status = gr.Markdown(elem_id="delete-status", latex_delimiters=[])

    for event in (voice.stop_recording, voice.upload):
        event(duration, inputs=[voice], outputs=[seconds], api_visibility="private", **queue)
    gr.Timer(STATUS_POLL).tick(latent_status, outputs=[status], api_visibility="private",
                               concurrency_limit=None, show_progress="hidden")
    enroll_button.click(enroll, inputs=[password, voice, photo, name, consent],
                        outputs=[enroll_status, people, person, voice, photo, name, consent],
                        api_name="enroll", **queue)
    delete_button.click(delete, inputs=[password, person, confirm],
                        outputs=[delete_status, people, person, confirm], api_name="delete",
                        **queue)
    person.focus(choices, outputs=[person], api_visibility="private", concurrency_limit=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="voiceface: a voice in; the nearest enrolled "
                                     "person and a generated face out.")
    parser.add_argument("--bundle", default=None,
                        help="bundle directory or Hub repo id (default: $VOICEFACE_BUNDLE, "
                             f"else {default_bundle()})")
    parser.add_argument("--encoder", default=os.environ.get("VOICEFACE_ENCODER"),
                        help="voice encoder directory or Hub repo id instead of the bundle's "
                             "(default: $VOICEFACE_ENCODER)")
    parser.add_argument("--generator", default=os.environ.get("VOICEFACE_GENERATOR"),
                        help="StyleGAN2 generator (saved directory, rosinality .pt file, or Hub "
                             "repo id) instead of the bundle's, e.g. one trained on faces the "
                             "default does not draw well (default: $VOICEFACE_GENERATOR)")
    parser.add_argument("--generator-file", default=os.environ.get("VOICEFACE_GENERATOR_FILE"),
                        help="checkpoint file inside a --generator Hub repo")
    parser.add_argument("--threads", type=int,
                        default=int(os.environ.get("VOICEFACE_THREADS", "0")) or None,
                        help="torch threads (default: $VOICEFACE_THREADS, else torch's choice); "
                             "1 is faster when other processes share the CPU cores")
    parser.add_argument("--quantize", action="store_true",
                        default=os.environ.get("VOICEFACE_QUANTIZE", "") in ("1", "true"),
                        help="int8 voice encoder on the CPU (faster; $VOICEFACE_QUANTIZE=1)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--file-lifetime", type=int,
                        default=int(os.environ.get("VOICEFACE_FILE_LIFETIME", FILE_LIFETIME)),
                        help="seconds an upload (recording, photo) or a generated image stays "
                             "on the server before it is deleted (default: "
                             f"$VOICEFACE_FILE_LIFETIME, else {FILE_LIFETIME})")
    parser.add_argument("--gallery-dir", default=os.environ.get("VOICEFACE_GALLERY_DIR"),
                        help="keep the gallery in this directory (e.g. /data/voiceface on a "
                             "Space with persistent storage): loaded if it holds one, else the "
                             "bundle's is copied there. Default: $VOICEFACE_GALLERY_DIR; with "
                             f"${ADMIN_PASSWORD_VAR} set, {cache_dir() / 'gallery'}")
    parser.add_argument("--backbone", default=os.environ.get("VOICEFACE_BACKBONE"),
                        help="perceptual backbone for enrolled faces' latents (directory or Hub "
                             f"repo; default {DEFAULT_BACKBONE})")
    parser.add_argument("--inversion-steps", type=int, default=InversionConfig.steps,
                        help="optimisation steps per enrolled face")
    parser.add_argument("--inversion-resolution", type=int, default=InversionConfig.resolution,
                        help="px the generator renders at while inverting a face")
    args = parser.parse_args(argv)
    if args.file_lifetime < 1:
        parser.error(f"--file-lifetime must be at least 1 s, got {args.file_lifetime}")
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        level=logging.WARNING)
    admin_password = os.environ.get(ADMIN_PASSWORD_VAR) or None
    gallery_dir = args.gallery_dir or (cache_dir() / "gallery" if admin_password else None)
    # A server renders again and again: keep freed activation memory for reuse instead of
    # faulting in fresh pages each time (about 20 % of a 1024 px render on 2 vCPUs).
    reuse_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        vf = VoiceFace.from_pretrained(args.bundle, encoder=args.encoder,
                                       generator=args.generator,
                                       generator_file=args.generator_file,
                                       quantize=args.quantize or None)
        live = None
        if gallery_dir:
            inversion = InversionConfig(
                steps=args.inversion_steps, resolution=args.inversion_resolution,
                backbone=args.backbone or DEFAULT_BACKBONE,
                revision=None if args.backbone else DEFAULT_BACKBONE_REVISION)
            live = LiveGallery.open(vf, gallery_dir, inversion=inversion)
    except (WeightsNotFound, ValueError) as err:
        print(f"voiceface cannot start: {err}", file=sys.stderr)
        return 2
    photo_dirs = {str(Path(p.faces[0]).parent) for p in vf.gallery.people if p.faces}
    if live is not None:
        photo_dirs.add(str(live.photo_dir))  # where enrolled people's photos will be
    build(vf, live, admin_password, args.file_lifetime).launch(
        server_name=args.host, server_port=args.port, share=args.share,
        allowed_paths=sorted(photo_dirs), max_file_size=MAX_FILE_SIZE, i18n=i18n,
        enable_monitoring=False)  # request counts of the admin endpoints are no one's business
    return 0


if __name__ == "__main__":
    sys.exit(main())

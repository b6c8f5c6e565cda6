"""The Enroll tab: add a consenting person, watch their face latent being computed, delete a
person. Every request that reads an upload or changes the gallery checks the admin password
first (the recording's length too); `/enroll` and `/delete` are API endpoints."""

from __future__ import annotations

import html
import math
from pathlib import Path

import gradio as gr

from ..admin import AdminGate, AdminRefused
from ..enroll import speech_seconds
from ..names import MAX_NAME_CHARS
from ..proxies import TrustedProxies
from .common import (BROWSER_SAMPLE_RATE, FACE_HEIGHT, Context, forget_copies, i18n, plain,
                     person_choices, public, read_upload, refreshed_people)
from .gallery import photos

STATUS_POLL = 2.0  # s between refreshes of the enrollment status


def tab(ctx: Context, gate: AdminGate, proxies: TrustedProxies, people: gr.Gallery) -> None:
    """Lay out the Enroll tab and wire its events over the live gallery (`ctx.opened_live`:
    until it is open, they say how far the start is), guarded by `gate` (clients told apart
    by their address, read through `proxies`); enrolling and deleting update the Gallery
    tab's `people`."""
    vf = ctx.vf

    def refusal(password: str | None, request: gr.Request) -> str | None:
        """None if `password` is the admin's, else why it is refused, for the visitor."""
        try:
            gate.check(password, proxies.address(request))
        except AdminRefused as err:
            text = ctx.text(request)
            return (text["password_wait"].format(seconds=math.ceil(err.retry_after))
                    if err.retry_after else text["bad_password"])
        return None

    def check_password(password: str | None, request: gr.Request) -> None:
        if (refused := refusal(password, request)) is not None:
            raise gr.Error(refused, print_exception=False)

    def choices() -> gr.Dropdown:
        return refreshed_people(vf)

    def enroll(password, voice, photo, name, consent, request: gr.Request):
        text = ctx.text(request)
        check_password(password, request)
        live = ctx.opened_live(request)
        voice_bytes = read_upload(voice, text["no_voice"], text["gone"])
        photo_bytes = read_upload(photo, text["no_photo"], text["gone"])
        try:  # consent goes through as sent: the library takes only a real True
            with ctx.model_call():
                person_id = live.enroll(name, voice_bytes, photo_bytes, consent)
        except ValueError as err:  # the library's message says what to fix; it may quote
            # names, and Gradio renders an error's message as HTML: shown as typed
            raise gr.Error(html.escape(public(err, request), quote=False),
                           print_exception=False) from None
        done = text["enrolled"].format(name=plain(vf.gallery.person(person_id).name),
                                       id=person_id)
        return done, photos(vf), choices(), None, None, "", False

    def delete(password, person_id, confirm, request: gr.Request):
        text = ctx.text(request)
        check_password(password, request)
        live = ctx.opened_live(request)
        if not isinstance(person_id, str) or person_id not in vf.gallery:
            raise gr.Error(text["no_person"], print_exception=False)
        if confirm is not True:
            raise gr.Error(text["not_confirmed"], print_exception=False)
        person = vf.gallery.person(person_id)
        with ctx.model_call():
            live.delete(person_id)
        forget_copies(ctx.demo, {Path(face).name for face in person.faces})
        return (text["deleted"].format(name=plain(person.name), id=person_id),
                photos(vf), choices(), False)

    def duration(password: str | None, voice: str | None, request: gr.Request) -> str:
        if not voice:
            return ""
        text = ctx.text(request)
        if not password:  # a hint, not a failed guess
            return text["duration_password"]
        if (refused := refusal(password, request)) is not None:
            return refused
        try:
            voice_bytes = read_upload(voice, text["no_voice"], text["gone"])
        except gr.Error as err:  # its str() is the message's repr, quotes and all
            return err.message
        try:
            with ctx.model_call():
                return text["duration"].format(seconds=speech_seconds(voice_bytes))
        except ValueError as err:
            return public(err, request)

    def latent_status(request: gr.Request) -> str:
        text = ctx.text(request)  # a failure's reason is in the server log, not here
        live = ctx.live
        if live is None:  # not opened yet: nobody enrolled to show
            return ""
        shown = [f"{plain(p.name)}: {text.get('st_' + live.status(p.id), text['st_failed'])}"
                 for p in vf.gallery.people if p.extra.get("live_enrolled")]
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
    person = gr.Dropdown(choices=person_choices(vf), label=i18n("person"),
                         allow_custom_value=True, elem_id="delete-person")
    confirm = gr.Checkbox(value=False, label=i18n("confirm_delete"), elem_id="confirm-delete")
    delete_button = gr.Button(i18n("delete"), variant="stop", elem_id="delete")
    delete_status = gr.Markdown(elem_id="delete-status", latex_delimiters=[])

    for event in (voice.stop_recording, voice.upload):
        event(duration, inputs=[password, voice], outputs=[seconds], api_visibility="private",
              **ctx.queue)
    gr.Timer(STATUS_POLL).tick(latent_status, outputs=[status], api_visibility="private",
                               concurrency_limit=None, show_progress="hidden")
    # no preprocessing: Gradio would open the photo before the password is checked; each
    # value arrives as sent and is checked here (`read_upload`) or by the library
    enroll_button.click(enroll, inputs=[password, voice, photo, name, consent],
                        outputs=[enroll_status, people, person, voice, photo, name, consent],
                        api_name="enroll", preprocess=False, **ctx.queue)
    delete_button.click(delete, inputs=[password, person, confirm],
                        outputs=[delete_status, people, person, confirm], api_name="delete",
                        **ctx.queue)
    person.focus(choices, outputs=[person], api_visibility="private", concurrency_limit=None)

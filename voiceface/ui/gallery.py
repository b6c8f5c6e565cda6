"""The Gallery tab: the enrolled people, and how the gallery's match threshold was set."""

from __future__ import annotations

import gradio as gr

from ..pipeline import VoiceFace
from .common import Context, i18n, preparing


def photos(vf: VoiceFace) -> list[tuple[str, str]]:
    """(photo path, name) of every enrolled person with a photo. Photos are served as files
    (allowed in `launch`), not re-encoded per request; read per call, as enrollment swaps
    the gallery. None before the gallery is ready."""
    return [(str(p.faces[0]), p.name) for p in vf.gallery.people if p.faces] if vf.ready \
        else []


def threshold_note(vf: VoiceFace, text: dict[str, str]) -> str:
    """How the gallery's threshold was set, in the language of `text`."""
    state = vf.state  # one version: the threshold with its record
    gallery, record = state.gallery, state.enrolled.calibrations.open_set
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


def tab(ctx: Context, selected: gr.Tab) -> gr.Gallery:
    """Lay out the Gallery tab (inside the `gr.Tab` `selected`); the note is rewritten on
    every page load and every time the tab is selected, since enrollment recalibrates the
    threshold, and so are the people (a page served while they were being prepared shows
    them once they are). Returns the people's gallery, which enrollment updates."""

    def note(request: gr.Request) -> str:
        text = ctx.text(request)
        return threshold_note(ctx.vf, text) if ctx.vf.ready else \
            preparing(ctx.vf.preparation, text)

    gr.Markdown(i18n("gallery_intro"))
    threshold = gr.Markdown(elem_id="threshold-note")
    people = gr.Gallery(lambda: photos(ctx.vf), label=i18n("people"), columns=6,
                        height="auto", elem_id="people")
    gr.on([ctx.demo.load, selected.select], note, outputs=[threshold],
          api_visibility="private", concurrency_limit=None, show_progress="hidden")
    selected.select(lambda: photos(ctx.vf), outputs=[people], api_visibility="private",
                    concurrency_limit=None, show_progress="hidden")
    return people

"""The Face to voice tab: a photo in (upload or webcam); the enrolled people whose voices suit
that face best, with scores and a play button for those the bundle has a recording of. Also
the `/face2voice` API endpoint."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr

from ..gallery import Match
from .common import FACE_HEIGHT, Context, gpu, i18n, public, read_upload, served_url
from .identify import BARS_CSS, similarity_bars

if TYPE_CHECKING:  # face2voice loads OpenCV and the backbone: only at the first face query
    from ..face2voice import FaceToVoiceResult

TOP_K = 5  # voices shown

# The bars of the main tab with a fourth column: a play button, or nothing, on every row.
VOICES_CSS = BARS_CSS + """
.bars { grid-template-columns: fit-content(40%) minmax(3em, 1fr) auto 2.25em; }
.play { width: 2.25em; height: 2.25em; padding: 0; border-radius: 50%; cursor: pointer;
        display: inline-flex; align-items: center; justify-content: center; line-height: 1;
        border: 1px solid var(--border-color-primary); color: var(--body-text-color);
        background: var(--background-fill-secondary); }
.play::before { content: "▶"; }
.play[aria-pressed="true"] { background: var(--color-accent); color: white; }
.play[aria-pressed="true"]::before { content: "■"; }
"""

# One player for the tab: a play button starts its recording (stopping any other), pressed
# again it stops. Listening on the component's element survives each new answer's HTML.
PLAYER_JS = """
const player = new Audio();
const release = () => element.querySelectorAll('.play')
    .forEach(b => b.setAttribute('aria-pressed', 'false'));
player.addEventListener('ended', release);
element.addEventListener('click', event => {
  const button = event.target.closest('.play');
  if (!button) return;
  const wasPlaying = button.getAttribute('aria-pressed') === 'true';
  player.pause();
  release();
  if (wasPlaying) return;
  player.src = button.dataset.src;
  button.setAttribute('aria-pressed', 'true');
  player.play().catch(release);
});
"""


def traits_text(result: FaceToVoiceResult, text: dict[str, str]) -> str:
    """What the photo's face showed (apparent sex, age band) and the suggested voices'
    apparent sex, in a sentence (Markdown); "" when no face-trait model read it."""
    traits = result.face_traits
    if traits is None:
        return ""
    sex = text[f"face_sex_{traits.apparent_sex or 'unsure'}"].format(
        confidence=f"{traits.sex_confidence:.0%}")
    age = text[f"face_age_{(traits.age_band or 'unsure').replace(' ', '_')}"].format(
        confidence=f"{traits.age_confidence:.0%}")
    voices = ""
    if any(result.voice_sexes):  # nothing to count when no suggested voice's is known
        voices = text["f2v_voice_sexes"].format(
            female=result.voice_sexes.count("female"), male=result.voice_sexes.count("male"),
            unsure=result.voice_sexes.count(None))
    return text["face_traits"].format(sex=sex, age=age, voices=voices)


def tab(ctx: Context) -> None:
    """Lay out the Face to voice tab and wire its events: `/face2voice_ui` (the page's
    button) and `/face2voice` (programs: a JSON summary)."""
    vf = ctx.vf
    samples = vf.spec.voice_samples()  # person id -> a recording of them that the bundle ships

    @gpu
    def analyse(photo: bytes) -> FaceToVoiceResult:
        return vf.face2voice(photo, k=TOP_K)

    def answer(photo: Any, request: gr.Request) -> tuple[FaceToVoiceResult, dict[str, str]]:
        text = ctx.text(request)
        # the events skip Gradio's preprocessing, which opens the image first and fails on a
        # file that is not one with a message naming its path: the library says what is wrong
        data = read_upload(photo, text["f2v_no_photo"], text["gone"])
        if ctx.live is not None:  # another process may have enrolled or deleted someone
            ctx.live.refresh()
        try:
            with ctx.model_call():
                result = analyse(data)
        except FileNotFoundError:  # a bundle built before face to voice
            raise gr.Error(text["f2v_unavailable"], print_exception=False) from None
        except ValueError as err:  # FaceError: no face, several faces, not an image
            raise gr.Error(public(err, request), print_exception=False) from None
        return result, text

    def show(photo: Any, request: gr.Request) -> tuple[str, str, str]:
        result, text = answer(photo, request)

        def play(m: Match) -> str:
            if m.id not in samples:  # enrolled live: no recording of theirs is kept
                return "<span></span>"
            label = html.escape(text["f2v_play"].format(name=m.name))
            src = html.escape(served_url(voices, samples[m.id]))
            return (f'<button type="button" class="play" aria-pressed="false" '
                    f'aria-label="{label}" title="{label}" data-src="{src}"></button>')

        return (similarity_bars(result.matches, play),
                text["f2v_method"].format(method=text[f"f2v_method_{result.method}"]),
                traits_text(result, text))

    def face2voice(photo: Any, request: gr.Request) -> dict[str, Any]:
        """A face photo in; the nearest voices (`matches`: id, name, score), how the voice
        was predicted (`method`), seconds per stage (`timings`) and the face's apparent sex
        and age band (`face_traits`, null without a face-trait model) out."""
        result, _ = answer(photo, request)
        return result.summary(vf.spec.test_weights)

    gr.Markdown(i18n("f2v_intro"))
    # image_mode=None with no preprocessing: the upload reaches the library as it was sent
    photo = gr.Image(sources=["upload", "webcam"], type="filepath", image_mode=None,
                     label=i18n("f2v_photo"), elem_id="f2v-photo", height=FACE_HEIGHT)
    submit = gr.Button(i18n("f2v_submit"), variant="primary", elem_id="f2v-submit")
    voices = gr.HTML(label=i18n("f2v_voices"), show_label=True, container=True,
                     css_template=VOICES_CSS, js_on_load=PLAYER_JS, elem_id="f2v-voices")
    method = gr.Markdown(elem_id="f2v-method")
    traits = gr.Markdown(elem_id="f2v-traits")
    gr.Markdown(i18n("f2v_note"))
    summary = gr.JSON(visible=False)
    submit.click(show, inputs=[photo], outputs=[voices, method, traits],
                 api_name="face2voice_ui", api_visibility="undocumented", preprocess=False,
                 **ctx.queue)
    # no trigger on the page: programs call it (see the main tab's `/predict`)
    gr.on([], face2voice, inputs=[photo], outputs=[summary], api_name="face2voice",
          preprocess=False, **ctx.queue)

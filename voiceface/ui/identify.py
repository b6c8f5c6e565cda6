"""The main tab: a voice in (microphone or upload); the generated face, the nearest enrolled
person, the nearest people and their similarities out. Also the `/predict` API endpoint."""

from __future__ import annotations

import html
from typing import Callable, Iterator, Sequence

import gradio as gr

from ..gallery import Match
from ..pipeline import PREVIEW_RESOLUTION, VoiceFaceResult
from ..traits import VoiceTraits
from .common import (BROWSER_SAMPLE_RATE, FACE_HEIGHT, Context, gpu, i18n, keep_example_copies,
                     plain, png_copy, public, read_upload)

TOP_K = 5  # people shown below the faces
REGISTERS = ((145.0, "lower"), (185.0, "middle"))  # Hz: median pitch below each bound ...
# ... is that register, above the last "higher" (adult speaking voices: ~85-155 Hz heard as
# male, ~165-255 Hz as female; the middle band is where the two overlap)

# Horizontal bars with the name beside each bar: five names stay readable at 390 px, where
# names under vertical bars overlap. Long names wrap inside their column.
BARS_CSS = """
.bars { display: grid; grid-template-columns: fit-content(45%) minmax(3em, 1fr) auto;
        gap: 0.5em 0.75em; align-items: center; padding: 2.6em 0.75em 0.75em; }
.name { overflow-wrap: anywhere; }
.track { display: block; height: 1em; border-radius: 3px;
         background: var(--background-fill-secondary); }
.fill { display: block; height: 100%; border-radius: 3px; background: var(--color-accent); }
.score { font-variant-numeric: tabular-nums; }
"""


def similarity_bars(matches: Sequence[Match], cell: Callable[[Match], str] | None = None
                    ) -> str:
    """The matches as rows of name, bar and similarity (HTML; names escaped). A bar's length
    is the cosine similarity, clipped to [0, 1]. With `cell`, each row ends with one more
    cell: `cell(match)`, HTML (a fourth grid column, which the caller's CSS lays out)."""
    rows = "".join(
        f'<span class="name">{html.escape(f"{m.rank}. {m.name}")}</span>'
        f'<span class="track"><span class="fill" style="width: {min(max(m.score, 0), 1):.1%}">'
        f'</span></span><span class="score">{m.score:.3f}</span>' + (cell(m) if cell else "")
        for m in matches)
    return f'<div class="bars">{rows}</div>'


def traits_text(traits: VoiceTraits | None, text: dict[str, str]) -> str:
    """The visitor's voice traits in a sentence (Markdown), or "" when none were measured."""
    if traits is None:
        return ""
    register = next((name for bound, name in REGISTERS if traits.pitch_hz < bound), "higher")
    sex = text[f"sex_{traits.apparent_sex or 'unsure'}"].format(
        confidence=f"{traits.confidence:.0%}")
    return text["voice_traits"].format(pitch=f"{traits.pitch_hz:.0f}",
                                       register=text[f"register_{register}"], sex=sex)


def tab(ctx: Context) -> None:
    """Lay out the main tab and wire its events: `/predict_ui` (the page's button, streaming
    the preview then the full face) and `/predict` (programs: the final answer only)."""
    vf = ctx.vf
    full = vf.generator.resolution
    # the preview first, then the full face, from one render (see VoiceFace.stream)
    sizes = [PREVIEW_RESOLUTION, full] if full > PREVIEW_RESOLUTION else [full]

    @gpu
    def analyse(audio: bytes) -> Iterator[VoiceFaceResult]:
        yield from vf.stream(audio, k=TOP_K, resolutions=sizes, matches_first=True)

    def nearest_photo(result: VoiceFaceResult) -> str | None:
        best = result.matches[0]  # its photo; none below the threshold or if deleted meanwhile
        return str(best.face) if result.confident and best.face and best.id in vf.gallery \
            else None

    def answers(audio: str | dict | None, request: gr.Request) -> Iterator[VoiceFaceResult]:
        """The results of one request: the matches (face None), then each face."""
        text = ctx.text(request)
        recording = read_upload(audio, text["no_audio"], text["gone"])
        if ctx.live is not None:  # another process (a replica, an overlapping restart) may
            ctx.live.refresh()    # have enrolled or deleted someone: one manifest read if not
        results = analyse(recording)
        while True:
            try:
                with ctx.model_call():  # the voice is analysed at the first step, faces after
                    result = next(results, None)
            except ValueError as err:  # AudioError and the library's other input errors
                raise gr.Error(public(err, request), print_exception=False) from None  # the user's
            if result is None:
                return
            yield result

    def predict(audio: str | None, request: gr.Request) -> Iterator[tuple]:
        """The page's answer in steps, each as soon as it is ready: the nearest people (only
        the voice is needed), the preview face, the full face, then its PNG for download.
        Parts that do not change are skipped (but the face: see below), so they are not
        sent or copied again."""
        text = ctx.text(request)
        keep = gr.skip()
        told = False  # the voice's traits are said once, with the first result carrying them
        for result in answers(audio, request):
            traits = keep if told or result.voice_traits is None else traits_text(
                result.voice_traits, text)
            told = told or result.voice_traits is not None
            if result.face is None:
                best = result.matches[0]
                if result.confident:
                    match_text = text["match"].format(name=plain(best.name), score=best.score)
                else:
                    match_text = text["no_match"].format(
                        name=plain(best.name), score=best.score, threshold=result.threshold)
                top = [(str(m.face), f"{m.rank}. {m.name} ({m.score:.2f})")
                       for m in result.matches if m.face and m.id in vf.gallery]
                yield (None, text["drawing"], nearest_photo(result), match_text, top,
                       similarity_bars(result.matches), result.summary(vf.spec.test_weights),
                       gr.DownloadButton(value=None, visible=False),
                       "" if traits is keep else traits)
                continue
            caption = text["generated_caption"].format(
                method=text[f"method_{result.method}"], centre=text[f"centre_{result.centre}"])
            if result.face.width < full:
                caption += f" ({text['preview']})"
            yield (result.face, caption, keep, keep, keep, keep,
                   result.summary(vf.spec.test_weights), keep, traits)
        # the face again, not skipped: Gradio 6.31's page sometimes dropped an image whose
        # update was followed at once by a skip (2 of 10 answers); the same file, no new copy
        yield (result.face,) + (keep,) * 6 + (
            gr.DownloadButton(value=png_copy(download, result.face), visible=True), keep)

    def predict_final(audio: str, request: gr.Request):
        """Audio file in; the generated face, the nearest enrolled person's face (None below
        the threshold) and a summary of the matches out."""
        *_, result = answers(audio, request)
        return result.face, nearest_photo(result), result.summary(vf.spec.test_weights)

    gr.Markdown(i18n("intro"))
    audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label=i18n("voice"),
                     elem_id="voice",
                     waveform_options=gr.WaveformOptions(sample_rate=BROWSER_SAMPLE_RATE))
    submit = gr.Button(i18n("submit"), variant="primary", elem_id="submit")
    with gr.Row(equal_height=True):
        with gr.Column():
            # JPEG on the page (a 1024 px face: 3 ms to encode, a fifth of the PNG's bytes),
            # marked in EXIF; the PNG with its text chunks behind the download button
            generated = gr.Image(label=i18n("generated"), elem_id="generated", type="pil",
                                 format="jpeg", interactive=False, height=FACE_HEIGHT)
            generated_caption = gr.Markdown(elem_id="generated-caption")
            voice_traits = gr.Markdown(elem_id="voice-traits")
            download = gr.DownloadButton(i18n("download_png"), visible=False, size="sm",
                                         elem_id="download")
        with gr.Column():
            nearest = gr.Image(label=i18n("nearest"), elem_id="nearest", type="pil",
                               format="png", interactive=False, height=FACE_HEIGHT)
            nearest_caption = gr.Markdown(elem_id="nearest-caption", latex_delimiters=[])
    gr.Markdown(i18n("note"))
    top = gr.Gallery(label=i18n("top"), columns=TOP_K, rows=1, height=200,
                     object_fit="contain", elem_id="top")
    chart = gr.HTML(label=i18n("chart"), show_label=True, container=True, css_template=BARS_CSS,
                    elem_id="chart")
    details = gr.JSON(visible=False)
    examples = sorted(vf.example_voices())
    if examples:
        keep_example_copies(audio, gr.Examples([[str(e)] for e in examples], inputs=[audio],
                                               label=i18n("examples")))
    png_face = gr.Image(type="pil", format="png", visible=False)  # /predict's face
    answer = [generated, generated_caption, nearest, nearest_caption, top, chart, details,
              download, voice_traits]
    submit.click(predict, inputs=[audio], outputs=answer, api_name="predict_ui",
                 api_visibility="undocumented", **ctx.queue)
    # A recording is answered as soon as it stops: no button between speaking and the face
    audio.stop_recording(predict, inputs=[audio], outputs=answer, api_name="predict_recording",
                         api_visibility="private", **ctx.queue)  # named: not "predict"
    # An API endpoint with no trigger on the page: programs call it; its outputs go back to
    # the caller only, so naming the page's components as outputs shows nothing on a page.
    gr.on([], predict_final, inputs=[audio], outputs=[png_face, nearest, details],
          api_name="predict", **ctx.queue)

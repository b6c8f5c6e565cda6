"""The Verify tab: choose who you claim to be, speak, and see the voice accepted or rejected,
its score against the threshold on a gauge, and the error rates measured there. Also the
`/verify` API endpoint."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..personas import load_personas
from ..pipeline import VoiceFace
from ..verification import AS_NORM, RAW, VerifyResult
from .common import (BROWSER_SAMPLE_RATE, Context, gpu, i18n, keep_example_copies,
                     person_choices, plain, public, read_upload, refreshed_people)

EXAMPLE_PEOPLE = 3  # people whose example recording is offered with their own claim

# Half the gauge's width in score units: the threshold sits in the middle, so a fixed scale
# puts a score at the same place every time; scores beyond the ends fill the bar or none of it.
GAUGE_HALF_SPAN = {AS_NORM: 5.0, RAW: 0.25}  # cohort standard deviations; cosine

GAUGE_CSS = """
.gauge { padding: 2.6em 0.75em 0.75em; font-variant-numeric: tabular-nums; }
.labels, .sides { display: grid; grid-template-columns: 1fr auto 1fr; gap: 0.5em; }
.labels { margin-bottom: 0.4em; }
.limit { text-align: center; }
.track { position: relative; display: block; height: 1.25em; border-radius: 4px;
         background: var(--background-fill-secondary); }
.fill { display: block; height: 100%; border-radius: 4px; background: #dc2626; }
.accepted .fill { background: #16a34a; }
.mark { position: absolute; top: -0.35em; bottom: -0.35em; left: 50%; width: 3px;
        margin-left: -1.5px; background: var(--body-text-color); }
.sides, .kind { font-size: var(--text-sm); }
.sides { margin-top: 0.3em; color: var(--body-text-color-subdued); }
.sides :last-child { grid-column: 3; text-align: right; }
.kind { margin-top: 0.6em; }
.rates { margin: 0.8em 0 0.2em; }
.gauge ul { margin: 0; padding-left: 1.2em; }
"""


def gauge(result: VerifyResult, text: dict[str, str]) -> str:
    """The score against the threshold as a bar, and the error rates measured there (HTML of
    numbers and interface text only). The threshold is the line in the middle of a fixed
    scale; the bar reaches the score."""
    half = GAUGE_HALF_SPAN[result.method]
    low, high = result.threshold - half, result.threshold + half
    filled = min(max((result.score - low) / (high - low), 0.0), 1.0)
    rates = "".join(
        f"<li>{text[label]}: " + (text["verify_unmeasured"] if rate is None else
                                  text["verify_rate"].format(rate=rate, trials=trials))
        + "</li>" for label, rate, trials in (("verify_far", result.far, result.far_trials),
                                              ("verify_frr", result.frr, result.frr_trials)))
    return (f'<div class="gauge {"accepted" if result.accepted else "rejected"}">'
            f'<div class="labels"><span class="score">'
            f'{text["verify_score"].format(score=result.score)}</span><span class="limit">'
            f'{text["verify_threshold"].format(threshold=result.threshold)}</span></div>'
            f'<span class="track" role="meter" aria-valuemin="{low:.4f}" '
            f'aria-valuemax="{high:.4f}" aria-valuenow="{result.score:.4f}" '
            f'aria-label="{text["verify_score_label"]}">'
            f'<span class="fill" style="width: {filled:.1%}"></span><span class="mark"></span>'
            f'</span><div class="sides"><span>{text["verify_side_rejected"]}</span>'
            f'<span>{text["verify_side_accepted"]}</span></div>'
            f'<div class="kind">{text["verify_kind_" + result.method]}</div>'
            f'<p class="rates">{text["verify_rates"]}</p><ul>{rates}</ul></div>')


def verdict(result: VerifyResult, text: dict[str, str]) -> str:
    """The decision, naming the claimed person (Markdown; name and id escaped)."""
    return text["verify_accepted" if result.accepted else "verify_rejected"].format(
        name=plain(result.name), id=plain(result.claim))


def summary(result: VerifyResult, test_weights: bool) -> dict:
    """The result for programs: the keys of `python -m voiceface verify --json`, and the
    claimed person's name."""
    return {**result.summary(test_weights), "name": result.name}


def example_claims(vf: VoiceFace) -> list[list[str]]:
    """Example rows [recording, claimed id] for visitors without a microphone: a few enrolled
    people's example recordings, each claiming its own person, and the first of them claiming
    the second person (a claim that should fail). Before the gallery is ready, every
    example recording named after a person counts (a personas bundle enrolls them all)."""
    examples = set(vf.example_voices())
    rows = [[str(path), pid] for pid, path in sorted(vf.spec.voice_samples().items())
            if path in examples and (not vf.ready or pid in vf.gallery)][:EXAMPLE_PEOPLE]
    return rows + [[rows[0][0], rows[1][1]]] if len(rows) > 1 else rows


def claim_labels(vf: VoiceFace) -> dict[str, str]:
    """"Name (id)" of every person an example may claim, by id: the gallery's people, or,
    before a personas bundle's gallery is ready, its personas' list (the examples' labels
    are written once, when the page is built)."""
    if vf.ready or vf.spec.personas_dir is None:
        return {pid: label for label, pid in person_choices(vf)}
    return {p["id"]: f"{p['name']} ({p['id']})" for p in load_personas(vf.spec.personas_dir)}


def tab(ctx: Context) -> None:
    """Lay out the Verify tab and wire its events; its button is the `/verify` endpoint
    (audio file and claimed id in; the decision, the gauge and a JSON summary out)."""
    vf = ctx.vf

    @gpu
    def check(audio: bytes, claim: str) -> VerifyResult:
        return vf.verify(audio, claim)

    def choices() -> gr.Dropdown:
        return refreshed_people(vf)

    def chosen(claim: object) -> bool:  # a person was chosen (the API may send anything)
        return isinstance(claim, str) and bool(claim)

    def verify(audio: str | None, claim: str | None, request: gr.Request):
        text = ctx.text(request)
        if not chosen(claim):
            raise gr.Error(text["no_claim"], print_exception=False)
        recording = read_upload(audio, text["no_audio"], text["gone"])
        if ctx.live is not None:  # another process may have enrolled or deleted someone
            ctx.live.refresh()
        try:
            with ctx.model_call():
                result = check(recording, claim)
        except ValueError as err:  # AudioError, UnknownClaim: the library's message
            raise gr.Error(public(err, request), print_exception=False) from None
        return (verdict(result, text), gauge(result, text),
                summary(result, vf.spec.test_weights))

    def verify_recording(audio: str | None, claim: str | None, request: gr.Request):
        """A recording is checked as soon as it stops, once a person is chosen; before, the
        page says to choose one and press the button (the recording stays; an earlier gauge
        goes)."""
        if not chosen(claim):
            return ctx.text(request)["verify_then_choose"], "", gr.skip()
        return verify(audio, claim, request)

    gr.Markdown(i18n("verify_intro"))
    claim = gr.Dropdown(choices=person_choices(vf), value=None, label=i18n("verify_claim"),
                        allow_custom_value=True, elem_id="verify-claim")
    audio = gr.Audio(sources=["microphone", "upload"], type="filepath",
                     label=i18n("verify_voice"), elem_id="verify-voice",
                     waveform_options=gr.WaveformOptions(sample_rate=BROWSER_SAMPLE_RATE))
    button = gr.Button(i18n("verify_submit"), variant="primary", elem_id="verify-submit")
    decision = gr.Markdown(elem_id="verify-verdict", latex_delimiters=[])
    meter = gr.HTML(label=i18n("verify_gauge"), show_label=True, container=True,
                    css_template=GAUGE_CSS, elem_id="verify-gauge")
    gr.Markdown(i18n("verify_warning"), elem_id="verify-warning")
    result = gr.JSON(visible=False)
    rows = example_claims(vf)
    if rows:  # labelled (a table's headers would be the inputs' labels, which Gradio 6.31
        # shows as raw i18n data): "dev00.flac: Test person 2 (dev01)"
        people = claim_labels(vf)
        labels = [f"{Path(voice).name}: {people.get(pid, pid)}" for voice, pid in rows]
        keep_example_copies(audio, gr.Examples(rows, inputs=[audio, claim],
                                               example_labels=labels,
                                               label=i18n("verify_examples"),
                                               elem_id="verify-examples"))
    button.click(verify, inputs=[audio, claim], outputs=[decision, meter, result],
                 api_name="verify", **ctx.queue)
    audio.stop_recording(verify_recording, inputs=[audio, claim],
                         outputs=[decision, meter, result], api_name="verify_recording",
                         api_visibility="private", **ctx.queue)
    claim.focus(choices, outputs=[claim], api_visibility="private",
                concurrency_limit=None)

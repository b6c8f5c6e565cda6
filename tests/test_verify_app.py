"""The Verify tab and the `/verify` endpoint, as programs (gradio_client) and people (a phone
browser) use them, on the app serving the dev bundle."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import expect

from browser import browser_page, open_tab
from conftest import serve_with_cache
from test_app import CLIPPED, SCREENSHOTS
from voiceface.enrolled import Enrolled
from voiceface.pipeline import VoiceFace
from voiceface.ui.verify import example_claims

CLAIM, NAME = "dev01", "Test person 2"  # whose example voice the dev bundle's threshold accepts


@pytest.fixture(scope="module")
def server(dev_bundle, tmp_path_factory):
    with serve_with_cache(dev_bundle, tmp_path_factory.mktemp("verify-app")) as app:
        yield app


def event_answer(url: str, elem_id: str, trigger: str = "focus") -> list:
    """What the page gets back when `trigger` happens on the component `elem_id` with
    nothing chosen or given (the event the page sends over Gradio's queue, as a browser
    does): one update per output."""
    with httpx.Client(base_url=f"{url}gradio_api/", timeout=60) as http:
        config = http.get(f"{url}config").json()
        [target] = [c["id"] for c in config["components"]
                    if c.get("props", {}).get("elem_id") == elem_id]
        [event] = [d for d in config["dependencies"] if [target, trigger] in d["targets"]]
        http.post("queue/join", json={"data": [None] * len(event["inputs"]),
                                      "fn_index": event["id"], "trigger_id": target,
                                      "session_hash": f"{trigger}-test"}).raise_for_status()
        stream = http.get("queue/data", params={"session_hash": f"{trigger}-test"}).text
    [done] = [json.loads(line[len("data: "):]) for line in stream.splitlines()
              if line.startswith("data: ") and '"process_completed"' in line]
    assert done["success"], done
    return done["output"]["data"]


def focus_answer(url: str, elem_id: str) -> dict:
    """What the page gets back when the dropdown `elem_id` is focused."""
    return event_answer(url, elem_id)[0]


@pytest.mark.slow
def test_refreshing_the_claim_list_keeps_a_choice_made_meanwhile(server):
    """The list is refreshed when the dropdown is focused; on a busy server the answer comes
    after the visitor has chosen, so it carries the choices and no value to undo it."""
    update = focus_answer(server["url"], "verify-claim")
    assert "value" not in update and ["Test person 2 (dev01)", "dev01"] in update["choices"]


@pytest.mark.slow
def test_a_recording_stopped_before_anyone_is_chosen_asks_for_a_choice(server):
    """The stop event checks the recording only once a person is chosen; before, it says what
    to do (no error) and clears an earlier gauge, and the summary is left alone."""
    decision, meter, result = event_answer(server["url"], "verify-voice", "stop_recording")
    assert decision == "Now choose who you claim to be and press **Check my voice**."
    assert meter == "" and result == {"__type__": "update"}  # cleared; left alone


def voice(dev_bundle, person: str):
    return handle_file(str(dev_bundle / "voices" / f"{person}.flac"))


@pytest.mark.slow
def test_the_claimed_persons_own_voice_is_accepted(server, dev_bundle):
    record = Enrolled.load(dev_bundle / "gallery").calibrations.verification
    client = Client(server["url"], verbose=False)
    verdict, gauge, summary = client.predict(voice(dev_bundle, CLAIM), CLAIM,
                                             api_name="/verify")
    assert {"claim", "score", "threshold", "accepted", "far", "frr", "timings"} <= set(summary)
    assert summary["claim"] == CLAIM and summary["name"] == NAME
    assert summary["accepted"] is True and summary["score"] >= summary["threshold"]
    assert summary["threshold"] == pytest.approx(record.threshold, abs=1e-6)
    assert (summary["far"], summary["far_trials"]) == (record.far_achieved,
                                                       record.non_mated_trials)
    assert (summary["frr"], summary["frr_trials"]) == (record.frr, record.mated_trials)
    assert summary["test_weights"] is True and summary["timings"]["total"] > 0
    assert verdict.startswith("### Accepted") and f"**{NAME}** ({CLAIM})" in verdict
    assert 'class="gauge accepted"' in gauge and f"threshold {record.threshold:.2f}" in gauge
    assert f"{record.far_achieved:.1%} of {record.non_mated_trials} trials" in gauge
    assert f"{record.frr:.1%} of {record.mated_trials} trials" in gauge


@pytest.mark.slow
def test_another_persons_voice_is_rejected(server, dev_bundle):
    client = Client(server["url"], verbose=False)
    verdict, gauge, summary = client.predict(voice(dev_bundle, CLAIM), "dev00",
                                             api_name="/verify")
    assert summary["claim"] == "dev00" and summary["accepted"] is False
    assert summary["score"] < summary["threshold"]
    assert verdict.startswith("### Rejected") and 'class="gauge rejected"' in gauge


@pytest.mark.slow
def test_unknown_or_missing_claims_and_bad_audio_are_refused_without_paths(server, dev_bundle,
                                                                          tmp_path):
    png = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(png)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.int16), 16000)
    client = Client(server["url"], verbose=False)
    cases = [(voice(dev_bundle, CLAIM), "nobody", r"No enrolled person has the id 'nobody'; "
                                                  r"claim one of the 6 enrolled ids: dev00"),
             (voice(dev_bundle, CLAIM), None, "Choose who you claim to be first"),
             (voice(dev_bundle, CLAIM), "", "Choose who you claim to be first"),
             (voice(dev_bundle, CLAIM), ["dev01"], "Choose who you claim to be first"),
             (None, CLAIM, "Record or upload your voice first"),
             (handle_file(str(png)), CLAIM, "PNG image, not audio"),
             (handle_file(str(silent)), CLAIM, "silent")]
    for audio, claim, expected in cases:
        with pytest.raises(Exception, match=expected) as err:
            client.predict(audio, claim, api_name="/verify")
        message = str(err.value)
        assert str(tmp_path) not in message and str(server["cache"]) not in message
        assert str(dev_bundle) not in message


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
def test_a_phone_chooses_a_person_uploads_and_sees_the_decision(server, dev_bundle, locale):
    """At 390 px: choose who you claim to be, upload their voice, and read the decision, the
    gauge and the measured error rates, none of them cut off."""
    en = locale == "en-US"
    with browser_page(server["url"], locale=locale) as page:
        open_tab(page, "Verify" if en else "本人確認")
        page.locator("#verify-claim input").click()
        page.get_by_role("option", name=f"{NAME} ({CLAIM})").click()
        page.locator("#verify-voice").get_by_role(
            "button", name=re.compile("Upload file|アップロード")).click(timeout=30_000)
        with page.expect_response(lambda r: "/gradio_api/upload" in r.url, timeout=30_000):
            page.locator("#verify-voice input[type=file]").set_input_files(
                str(dev_bundle / "voices" / f"{CLAIM}.flac"))
        page.locator("#verify-submit").click()
        verdict = page.locator("#verify-verdict")
        verdict.filter(has_text="Accepted" if en else "受け入れ").wait_for(timeout=60_000)
        assert NAME in verdict.inner_text()
        assert page.locator("#verify-gauge .gauge.accepted .fill").is_visible()
        assert ("can be fooled" if en else "だませる") in page.locator(
            "#verify-warning").inner_text()
        shown = page.locator("#verify-verdict, #verify-gauge span, #verify-gauge li, "
                             "#verify-warning p")
        assert shown.evaluate_all(CLIPPED) == []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"phone-verify-{locale}.png"), full_page=True)


def test_examples_claim_their_own_people_and_one_claims_another(dev_bundle):
    vf = VoiceFace.from_pretrained(dev_bundle)
    voices = dev_bundle / "voices"
    assert example_claims(vf) == [[str(voices / f"{p}.flac"), p] for p in
                                  ("dev00", "dev01", "dev02")] + [[str(voices / "dev00.flac"),
                                                                   "dev01"]]


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
def test_a_phone_without_a_microphone_tries_an_example_claim(server, locale):
    """At 390 px: an example fills in the recording and the claim; the button decides."""
    en = locale == "en-US"
    with browser_page(server["url"], locale=locale) as page:
        open_tab(page, "Verify" if en else "本人確認")
        examples = page.locator("#verify-examples")
        for label in ("dev00.flac: Test person 1 (dev00)", "dev02.flac: Test person 3 (dev02)"):
            assert examples.get_by_text(label, exact=True).is_visible()
        examples.get_by_text(f"dev00.flac: {NAME} ({CLAIM})", exact=True).click()
        expect(page.locator("#verify-claim input")).to_have_value(f"{NAME} ({CLAIM})",
                                                                  timeout=30_000)
        page.locator("#verify-voice audio[src]").wait_for(state="attached", timeout=30_000)
        page.locator("#verify-submit").click()
        heading = page.locator("#verify-verdict h3")
        heading.wait_for(timeout=60_000)
        decision = {"受け入れ": "accepted", "拒否": "rejected"}.get(
            heading.inner_text().strip(), heading.inner_text().strip().lower())
        assert decision in ("accepted", "rejected")  # (a bar of 0 % is not "visible")
        assert page.locator(f"#verify-gauge .gauge.{decision} .track").is_visible()
        assert NAME in page.locator("#verify-verdict").inner_text()
        page.screenshot(path=str(SCREENSHOTS / f"phone-verify-example-{locale}.png"),
                        full_page=True)


@pytest.mark.browser
@pytest.mark.slow
def test_a_browser_claims_a_person_by_microphone(server, dev_bundle, tmp_path):
    """Checking before choosing anyone is refused; then the claimed person is chosen, the
    fake microphone plays a recording and, when it stops, with no button pressed, the page
    shows a decision that agrees with its gauge."""
    samples, rate = sf.read(dev_bundle / "voices" / f"{CLAIM}.flac", dtype="int16")
    mic = tmp_path / "mic.wav"  # Chromium loops this file as the microphone
    sf.write(mic, samples, rate)
    with browser_page(server["url"], (1280, 900), mic=mic) as page:
        open_tab(page, "Verify")
        page.locator("#verify-submit").click()
        page.get_by_text("Choose who you claim to be first.").wait_for(timeout=30_000)
        page.locator("#verify-claim input").click()
        page.get_by_role("option", name=f"{NAME} ({CLAIM})").click()
        page.locator("#verify-voice button.record-button").click(timeout=30_000)
        page.wait_for_timeout(3000)
        page.locator("#verify-voice button.stop-button").first.click()
        heading = page.locator("#verify-verdict h3")
        heading.wait_for(timeout=60_000)
        decision = heading.inner_text().strip().lower()
        assert decision in ("accepted", "rejected")
        assert page.locator(f"#verify-gauge .gauge.{decision} .fill").is_visible()
        assert NAME in page.locator("#verify-verdict").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "desktop-verify-microphone.png"), full_page=True)

"""What counts as consent and as a name when enrolling: only `True`, and visible plain text."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from test_enroll import PHOTO, inversion, open_live, voice  # noqa: F401 - fixtures
from voiceface.enroll import MAX_NAME_CHARS, LiveGallery, clean_name, require_consent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("consent", ["true", "false", "True", "0", "1", "", "yes", 1, 1.0,
                                     [True], (True,), {"consent": True}, np.bool_(True)])
def test_only_the_boolean_true_is_consent(consent, tmp_path):
    with pytest.raises(ValueError, match=r"Consent is required.*Tick the consent box\. Consent "
                                         r"must be the boolean true, not a \w+\."):
        require_consent(consent)
    live = LiveGallery(None, tmp_path)  # refused before anything touches the pipeline
    with pytest.raises(ValueError, match="Consent is required"):
        live.enroll("Aiko", voice(1), PHOTO, consent=consent)


@pytest.mark.parametrize("consent", [False, None])
def test_no_consent_is_asked_for(consent, tmp_path):
    with pytest.raises(ValueError, match=r"Consent is required.*Tick the consent box\.$"):
        require_consent(consent)
    with pytest.raises(ValueError, match=r"Consent is required.*Tick the consent box\.$"):
        LiveGallery(None, tmp_path).enroll("Aiko", voice(1), PHOTO, consent=consent)


def test_consent_true_passes():
    require_consent(True)


@pytest.mark.parametrize("raw, clean", [
    ("Aiko Sato", "Aiko Sato"),
    ("  Aiko   Sato\n", "Aiko Sato"),
    ("\uff21\uff49\uff4b\uff4f", "Aiko"),  # full width
    ("Aiko\u3000Sato", "Aiko Sato"),  # ideographic space
    ("Aiko\u00a0Sato", "Aiko Sato"),  # no-break space
    ("Jose\u0301", "Jos\u00e9"),  # combining accent composed
    ("\ufb01ona", "fiona"),  # ligature
    ("佐藤 愛子", "佐藤 愛子"),
    ("Zoë O'Brien-Núñez", "Zoë O'Brien-Núñez"),
    ("<b>Aiko</b>", "<b>Aiko</b>"),  # plain text: the app escapes where it renders
])
def test_names_are_normalised(raw, clean):
    assert clean_name(raw) == clean


@pytest.mark.parametrize("char", [
    "\x00", "\x07", "\t", "\n", "\x1b", "\x7f", "\x85",  # controls
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",  # bidi embeddings and overrides
    "\u2066", "\u2067", "\u2068", "\u2069",  # bidi isolates
    "\u200e", "\u200f", "\u061c",  # bidi marks
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",  # zero width
    "\u00ad", "\u2028", "\u2029", "\ue000",  # soft hyphen, separators, private use
    "\u3164", "\u115f", "\u034f",  # letters that draw nothing
])
def test_names_with_invisible_or_control_characters_are_refused(char):
    shown = ord(unicodedata.normalize("NFKC", char))  # the Hangul filler U+3164 is U+1160
    with pytest.raises(ValueError, match=rf"invisible or control character \(U\+{shown:04X}"
                                         r".*type the name again"):
        clean_name(f"Ai{char}ko")


@pytest.mark.parametrize("name, message", [
    ("", "display name"), ("   ", "display name"), (None, "display name"),
    ("\u3000", "display name"), ("x" * (MAX_NAME_CHARS + 1), "at most 80"),
    (42, "must be text, not a int"), (b"Aiko", "must be text, not a bytes"),
])
def test_empty_long_and_non_text_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        clean_name(name)


@pytest.mark.slow
def test_enroll_stores_the_normalised_name_and_refuses_bidi(open_live):  # noqa: F811
    live = open_live()
    with pytest.raises(ValueError, match="U\\+202E"):
        live.enroll("Aiko\u202eotaS", voice(1), PHOTO, consent=True)
    person_id = live.enroll("\uff21\uff49\uff4b\uff4f", voice(1), PHOTO, consent=True)
    assert live.vf.gallery.person(person_id).name == "Aiko"
    assert person_id.startswith("aiko-")

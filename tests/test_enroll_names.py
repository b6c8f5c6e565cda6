"""What counts as consent and as a name when enrolling: only `True`, and visible plain text
in one script that looks like no one else's name."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import regex

from conftest import REPO
from test_enroll import PHOTO, inversion, open_live, voice  # noqa: F401 - fixtures
from voiceface.enroll import LiveGallery, require_consent
from voiceface.errors import InputError
from voiceface.enrolled import Enrolled
from voiceface.names import (DEFAULT_IGNORABLE, MAX_NAME_CHARS, check_distinct, clean_name,
                             invisible, skeleton)

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
    "\ufe0f", "\ufe00", "\U000e0100", "\U000e01ef",  # variation selectors
    "\u17b4", "\u17b5", "\u180b", "\u180f",  # Khmer inherent vowels, Mongolian selectors
    "\u2800", "\u1160", "\uffa0",  # Braille blank, Hangul fillers
    "\U000e0001", "\U000e0041", "\U000e007f",  # tags
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


@pytest.mark.parametrize("name", [
    "Aiko", "山田 太郎", "やまだ たろう", "José", "Ólafur", "O'Brien", "Anne-Marie", "김민수",
    "Ελένη", "Дмитрий", "山田 Taro", "ヤマダ・タロウ", "佐々木 ユーキ", "王小明", "Aiko Sato 2",
])
def test_real_names_in_any_script_are_valid(name):
    assert clean_name(name) == name


def test_the_bundles_names_are_valid_and_distinct(dev_bundle):
    personas = json.loads((REPO / "assets" / "personas" / "personas.json").read_text())
    for names in ([p["name"] for p in personas["personas"]],
                  [p.name for p in Enrolled.load(dev_bundle / "gallery").gallery.people]):
        assert [clean_name(n) for n in names] == names
        assert len({skeleton(n) for n in names}) == len(names)


@pytest.mark.parametrize("name", ["\u2800", "Aiko\ufe0f", "Ai\U000e0100ko", "Ai\u17b4ko",
                                  "Ai\u180bko", "\u2800\u2800 \u2800"])
def test_names_that_show_blank_or_hide_a_character_are_refused(name):
    with pytest.raises(InputError, match=r"invisible or control character \(U\+") as refused:
        clean_name(name)
    assert refused.value.reason == "name_invisible"


@pytest.mark.parametrize("name", ["\u2605", "!!!", "\u0301", "\u2605 \u2606", "-"])
def test_names_without_a_letter_or_digit_are_refused(name):
    with pytest.raises(InputError, match="no letter or digit") as refused:
        clean_name(name)
    assert refused.value.reason == "name_no_letters"


@pytest.mark.parametrize("name, scripts, char", [
    ("\u0410iko", "Cyrillic and Latin", "\u0410"),  # a Cyrillic A among Latin letters
    ("Aik\u043e", "Latin and Cyrillic", "\u043e"),  # a Cyrillic o
    ("\u0391iko", "Greek and Latin", "\u0391"),  # a Greek Alpha
    ("Aiko \u0421\u0430\u0442\u043e\u0432\u0430", "Latin and Cyrillic", "A"),
    ("\u0110\u0391\u0418", "Latin, Greek and Cyrillic", "\u0418"),  # one each: the last
    ("\u0414\u043c\u0438\u0442\u0440\u0438\u0439 \u5c71", "Cyrillic and Han", "\u5c71"),
])
def test_names_mixing_scripts_to_deceive_are_refused(name, scripts, char):
    with pytest.raises(InputError) as refused:
        clean_name(name)
    error = refused.value
    assert error.reason == "name_mixed_scripts"
    assert (error.values["scripts"], error.values["char"]) == (scripts, char)
    assert str(error).startswith(f"The name mixes {scripts} letters (\"{char}\" is U+")


def test_the_default_ignorable_table_is_unicodes_property():
    """voiceface.names.DEFAULT_IGNORABLE is Default_Ignorable_Code_Point, code point by code
    point, as the `regex` module's Unicode data has it."""
    ignorable = regex.compile(r"\p{Default_Ignorable_Code_Point}")
    unicode = {p for p in range(0x110000) if ignorable.match(chr(p))}
    table = {p for first, last in DEFAULT_IGNORABLE for p in range(first, last + 1)}
    assert sorted(map(hex, unicode ^ table)) == []
    assert all(invisible(chr(p)) for p in table)


EXISTING = [("p0007", "Aiko"), ("dev00", "Joe"), ("x1", "Tom"), ("x2", "Jose"),
            ("old", "Ann\u200b\ufe0f")]  # saved before invisible characters were refused


@pytest.mark.parametrize("name, reason, message", [
    ("Aiko", "name_taken", "Aiko is already enrolled (id p0007); add a family name or initial "
                           "to tell them apart."),
    ("AIKO", "name_lookalike", "AIKO looks the same as Aiko, already enrolled (id p0007); add "
                               "a family name or initial to tell them apart."),
    ("\u0408\u043e\u0435", "name_lookalike", "\u0408\u043e\u0435 looks the same as Joe"),  # Cyrillic
    ("\u03a4\u039f\u039c", "name_lookalike", "\u03a4\u039f\u039c looks the same as Tom"),  # Greek
    ("JOSE", "name_lookalike", "JOSE looks the same as Jose"),
    ("Ann", "name_lookalike", "Ann looks the same as Ann\u200b\ufe0f, already enrolled (id old)"),
])
def test_a_name_that_looks_like_an_enrolled_one_is_refused(name, reason, message):
    with pytest.raises(InputError) as refused:
        check_distinct(clean_name(name), EXISTING)
    assert refused.value.reason == reason and str(refused.value).startswith(message)


@pytest.mark.parametrize("name", ["Aiko Sato", "José", "Aiko T.", "Tomás", "\u0422\u043e\u043c\u0430"])
def test_names_that_look_different_pass(name):
    check_distinct(clean_name(name), EXISTING)


def test_enroll_refuses_a_lookalike_before_reading_the_recording(open_live):  # noqa: F811
    live = open_live()
    with pytest.raises(InputError, match=r"Test person 1 is already enrolled \(id dev00\)"):
        live.enroll("Test person 1", b"not a recording", PHOTO, consent=True)
    with pytest.raises(InputError, match=r"looks the same as Test person 2, already enrolled "
                                         r"\(id dev01\)"):
        live.enroll("TEST PERSON 2", b"not a recording", PHOTO, consent=True)


def test_two_galleries_on_one_directory_cannot_enroll_the_same_name(open_live):  # noqa: F811
    """The second process's pipeline has not seen the first one's enrollment: the check made
    while adding, under the directory's lock, refuses the name."""
    first, second = open_live(), open_live()
    aiko = first.enroll("Aiko", voice(1), PHOTO, consent=True)
    with pytest.raises(InputError, match=rf"Aiko is already enrolled \(id {aiko}\)"):
        second.enroll("Aiko", voice(2), PHOTO, consent=True)
    names = [p.name for p in Enrolled.load(first.root / "gallery").gallery.people]
    assert names.count("Aiko") == 1

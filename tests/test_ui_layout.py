"""The interface is a package apart: only voiceface/ui/ imports gradio, and app.py reaches
the interface through it."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

from conftest import REPO


def imported(path: Path) -> set[str]:
    """The top-level names of the modules `path` imports (relative imports excluded)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def fields(text: str) -> set[str]:
    """The names of the `{placeholders}` in `text`."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_only_the_ui_package_imports_gradio():
    package = REPO / "voiceface"
    importers = {str(p.relative_to(package)) for p in package.rglob("*.py")
                 if "gradio" in imported(p)}
    assert importers and all(name.startswith("ui/") for name in importers), importers
    assert "gradio" not in imported(REPO / "app.py")


def test_every_language_has_every_text_with_the_same_placeholders():
    """A key or a `{placeholder}` missing in one language would fail only on that
    language's page, and only when that text is shown (e.g. an error)."""
    from voiceface.ui.text import TEXT

    english = TEXT["en"]
    assert set(TEXT) == {"en", "ja"}
    for language, table in TEXT.items():
        assert table.keys() == english.keys(), (language, table.keys() ^ english.keys())
        for key, text in table.items():
            assert fields(text) == fields(english[key]), (language, key)


def test_every_reason_the_input_errors_name_is_worded_in_every_other_language():
    """LIBRARY_ERRORS has words for each reason an `AudioError`, a `FaceError` or an
    `InputError` (a name's) is raised with in voiceface/ (and for no other), using only
    figures every such error carries."""
    from voiceface.ui.text import LIBRARY_ERRORS

    given: dict[str, set[str]] = {}  # reason -> the values every error of it carries
    for path in (REPO / "voiceface").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and len(node.args) == 2
                    and getattr(node.func, "id", None) in ("AudioError", "FaceError",
                                                           "InputError")):
                values = {k.arg for k in node.keywords}
                reason = node.args[1].value
                given[reason] = given.get(reason, values) & values
    assert {"too_short", "silent", "not_audio", "no_face", "several_faces",
            "name_mixed_scripts", "name_taken"} <= set(given)
    for language, words in LIBRARY_ERRORS.items():
        assert set(words) == set(given), language
        for reason, text in words.items():
            assert fields(text) <= given[reason], (language, reason)


def test_worded_errors_reach_the_visitor_whole_and_name_every_format():
    """`public` gives a Japanese visitor each worded error exactly as worded (the path
    stripping once cut "OGG/Opus、MP3、M4A/AAC" to "OGGAAC"); a list of formats names them all."""
    from types import SimpleNamespace

    from voiceface.audio import SUPPORTED_FORMATS, AudioError
    from voiceface.ui.common import public
    from voiceface.ui.text import LIBRARY_ERRORS

    japanese = SimpleNamespace(headers={"accept-language": "ja"})
    formats = re.split(r", | or ", SUPPORTED_FORMATS)
    for reason, words in LIBRARY_ERRORS["ja"].items():
        values = dict.fromkeys(fields(words), 12)
        shown = public(AudioError("the English message", reason, **values), japanese)
        assert shown == words.format(**values), reason
        if "WAV" in words:
            assert all(f in words for f in formats), (reason, formats)
    english = SimpleNamespace(headers={"accept-language": "en-US"})
    error = AudioError("/srv/uploads/x/clip.wav is silent.", "silent")
    assert public(error, english) == "clip.wav is silent."


def test_the_voice_traits_sentence_names_the_register_the_apparent_sex_and_its_limits():
    from voiceface.traits import VoiceTraits
    from voiceface.ui.identify import traits_text
    from voiceface.ui.text import TEXT

    def said(pitch, sex, confidence=0.9, language="en"):
        return traits_text(VoiceTraits(pitch, 10.0, sex, confidence, 0.5), TEXT[language])

    low = said(118.4, "male", 0.934)
    assert "pitch about 118 Hz, a lower register; it sounds male (93% sure)" in low
    assert "not your likeness" in low and "not a statement about anyone's identity" in low
    assert "a middle register" in said(145.0, None) and "apparent sex is unclear" in said(
        145.0, None)
    assert "a middle register" in said(184.9, "female") and "a higher register" in said(
        185.0, "female")
    assert "it sounds female (90% sure)" in said(210.0, "female")
    ja = said(230.2, "female", 0.8, "ja")
    assert "高さ約230 Hz（高め）、女性の声に聞こえます（確信度80%）" in ja and "アイデンティティ" in ja
    assert traits_text(None, TEXT["en"]) == ""

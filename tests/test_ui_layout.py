"""The interface is a package apart: only voiceface/ui/ imports gradio, and app.py reaches
the interface through it."""

from __future__ import annotations

import ast
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
    """LIBRARY_ERRORS has words for each reason an `AudioError` or `FaceError` is raised with
    in voiceface/ (and for no other), using only figures every such error carries."""
    from voiceface.ui.text import LIBRARY_ERRORS

    given: dict[str, set[str]] = {}  # reason -> the values every error of it carries
    for path in (REPO / "voiceface").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and len(node.args) == 2
                    and getattr(node.func, "id", None) in ("AudioError", "FaceError")):
                values = {k.arg for k in node.keywords}
                reason = node.args[1].value
                given[reason] = given.get(reason, values) & values
    assert {"too_short", "silent", "not_audio", "no_face", "several_faces"} <= set(given)
    for language, words in LIBRARY_ERRORS.items():
        assert set(words) == set(given), language
        for reason, text in words.items():
            assert fields(text) <= given[reason], (language, reason)

"""People's display names: normalised, visible, in one script, and told apart.

The gallery, the captions and the similarity chart show names without ids, so two enrolled
people must never look the same. `clean_name` normalises a name (NFKC: full-width "Ａｉｋｏ" is
"Aiko"; spaces collapsed) and refuses, with a reason (`InputError.reason`) and what to change:
- characters that draw nothing or control the text: the general categories in
  REFUSED_CATEGORIES, Unicode's default-ignorable code points (DEFAULT_IGNORABLE: variation
  selectors, fillers, tags, joiners) and BLANKS;
- a name without a letter or digit (symbols or blanks only);
- letters of several scripts where UTS #39's "highly restrictive" level does not allow the
  mix: "Аiko" with a Cyrillic "А" is refused, Japanese "山田 たろう" or "山田 Taro" is not.
`check_distinct` refuses a name whose `skeleton` (what it looks like) is an enrolled person's.

Scripts come from Unicode's Scripts.txt and ScriptExtensions.txt as fontTools ships them
(`fontTools.unicodedata`, in requirements.txt); the rest from Python's `unicodedata`.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

from fontTools import unicodedata as scripts

from .errors import InputError

MAX_NAME_CHARS = 80  # characters, after normalisation
# Categories refused in names: control, format (bidi overrides and isolates, marks, zero-width
# spaces and joiners, BOM), surrogate, private use, unassigned, line and paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt, 18.0): what
# renderers draw as nothing. tests/test_enroll_names.py checks the table against the property
# as the `regex` module knows it, code point by code point.
DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors, vowel separator
    (0x200B, 0x200F),  # zero-width space, non-joiner, joiner; left-to-right, right-to-left mark
    (0x202A, 0x202E),  # bidirectional embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated formats
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors 1-16
    (0xFEFF, 0xFEFF),  # zero-width no-break space (byte order mark)
    (0xFFA0, 0xFFA0),  # half-width Hangul filler
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol beams, ties, slurs, phrases
    (0xE0000, 0xE0FFF),  # tags, variation selectors 17-256, reserved
)
# Not default-ignorable, yet drawn blank in most fonts (a name of it alone shows nothing)
BLANKS = frozenset("\u2800")  # Braille pattern blank
IGNORED_SCRIPTS = frozenset({"Zyyy", "Zinh"})  # Common and Inherited go with any script
# UTS #39 5.1: Han and kana stand for the writing systems they belong to, so that they mix
AUGMENTED = {"Hani": {"Hanb", "Jpan", "Kore"}, "Hira": {"Jpan"}, "Kana": {"Jpan"},
             "Hang": {"Kore"}, "Bopo": {"Hanb"}}
# UTS #39 5.2 "highly restrictive": one script, or Latin with one of these writing systems
HIGHLY_RESTRICTIVE = (frozenset({"Latn", "Hani", "Hira", "Kana"}),
                      frozenset({"Latn", "Hani", "Bopo"}), frozenset({"Latn", "Hani", "Hang"}))
# Letters that look like Latin ones (Unicode's confusables.txt, the common Cyrillic and Greek
# ones) and apostrophes and hyphens that look alike: a name's skeleton reads them as one
LOOKALIKES = str.maketrans(
    "АВЕКМНОРСТУХЅІЈԚԜҮаеорсухѕіјԁһԛԝӏү" "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαονρ" "‘’ʼ′‐‒–−",
    "ABEKMHOPCTYXSIJQWYaeopcyxsijdhqwly" "ABEZHIKMNOPTYXaovp" "''''----")


def clean_name(name: object) -> str:
    """A display name as it is stored and shown: NFKC-normalised, spaces collapsed, at most
    `MAX_NAME_CHARS`. Raises `InputError` saying what to change for a name that is not text,
    is empty or too long, holds an invisible or control character, has no letter or digit,
    or mixes scripts (see the module doc). Plain text: the caller escapes it where it
    renders."""
    if name is None:
        name = ""
    if not isinstance(name, str):
        kind = type(name).__name__
        raise InputError(f"The name must be text, not a {kind}; give the person's display "
                         "name.", "name_not_text", kind=kind)
    name = unicodedata.normalize("NFKC", name).strip()
    for ch in name:
        if invisible(ch):
            code, what = f"U+{ord(ch):04X}", unicodedata.name(ch, "a control character")
            raise InputError(f"The name contains an invisible or control character ({code} "
                             f"{what}); type the name again on one line, without copying it "
                             "from formatted text.", "name_invisible", code=code, what=what)
    name = " ".join(name.split())
    if not name:
        raise InputError("Give the person's display name.", "name_empty")
    if len(name) > MAX_NAME_CHARS:
        raise InputError(f"The name is {len(name)} characters long; use at most "
                         f"{MAX_NAME_CHARS}.", "name_too_long", chars=len(name),
                         max_chars=MAX_NAME_CHARS)
    if not any(unicodedata.category(ch)[0] in "LN" for ch in name):
        raise InputError("The name has no letter or digit, so it would show as symbols or "
                         "nothing; type the person's name in letters.", "name_no_letters")
    _check_scripts(name)
    return name


def invisible(ch: str) -> bool:
    """Whether the character draws nothing or controls the text (see the module doc)."""
    point = ord(ch)
    return (unicodedata.category(ch) in REFUSED_CATEGORIES or ch in BLANKS
            or any(first <= point <= last for first, last in DEFAULT_IGNORABLE))


def _check_scripts(name: str) -> None:
    """Raise `InputError` unless `name` is "highly restrictive" (UTS #39 5.2): its letters
    share a script (Han and kana count as Japanese, Han and Hangul as Korean, Han and
    Bopomofo as Chinese), or they are Latin with one of those writing systems."""
    sets = {ch: set(scripts.script_extension(ch)) for ch in name}
    sets = {ch: s for ch, s in sets.items() if not s & IGNORED_SCRIPTS}
    shared = None
    for s in sets.values():
        augmented = s.union(*(AUGMENTED.get(code, ()) for code in s))
        shared = augmented if shared is None else shared & augmented
    if shared is None or shared or any(all(s & allowed for s in sets.values())
                                       for allowed in HIGHLY_RESTRICTIVE):
        return
    primary = {ch: _primary(ch, s) for ch, s in sets.items()}
    counts = Counter(primary[ch] for ch in name if ch in primary)
    rarest = min(counts, key=lambda code: (counts[code], -list(counts).index(code)))
    char = next(ch for ch in name if primary.get(ch) == rarest)  # the first of the fewest
    names = [scripts.script_name(code) for code in counts]
    listed = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    code, what = f"U+{ord(char):04X}", unicodedata.name(char, "")
    raise InputError(f"The name mixes {listed} letters (\"{char}\" is {code} {what}), which "
                     "lets one name pass for another; write it in one script (kanji, kana "
                     "and Latin letters may be mixed, as in Japanese names).",
                     "name_mixed_scripts", scripts=listed, char=char, code=code, what=what)


def _primary(ch: str, extensions: set[str]) -> str:
    """The script a character is drawn in (of its extensions, for a shared one such as "・")."""
    script = scripts.script(ch)
    return min(extensions) if script in IGNORED_SCRIPTS else script


def skeleton(name: str) -> str:
    """What a name looks like, for telling names apart: NFKC, invisible characters dropped
    (a name saved before they were refused may hold some), lookalike Cyrillic and Greek
    letters read as Latin ones (accents kept), case folded, spaces collapsed. "Joe", "JOE"
    and "Јое" (Cyrillic) have one skeleton; "José" and "Jose" do not."""
    visible = "".join(ch for ch in unicodedata.normalize("NFKC", name) if not invisible(ch))
    decomposed = unicodedata.normalize("NFD", visible)
    folded = unicodedata.normalize("NFC", decomposed.translate(LOOKALIKES).casefold())
    return " ".join(folded.split())


def check_distinct(name: str, people: Iterable[tuple[str, str]]) -> None:
    """Raise `InputError` when `name` looks the same (`skeleton`) as the name of one of
    `people`, given as (id, name): the message names that person and their id."""
    mine = skeleton(name)
    for person_id, other in people:
        if skeleton(other) != mine:
            continue
        if other == name:
            raise InputError(f"{name} is already enrolled (id {person_id}); add a family name "
                             "or initial to tell them apart.", "name_taken", name=name,
                             id=person_id)
        raise InputError(f"{name} looks the same as {other}, already enrolled (id "
                         f"{person_id}); add a family name or initial to tell them apart.",
                         "name_lookalike", name=name, existing=other, id=person_id)

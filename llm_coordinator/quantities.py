"""Quantities with units in work orders: "5 l", "500 ml", "0,5 l", "twenty-five litres", "une douzaine".

Number words are read by text2num's ``alpha2digit`` in the order's language (guessed among the languages
text2num knows, or given); units are whatever pint knows, matched case-insensitively. Spans always refer to
the original text. pint is imported lazily, on the first conversion or unit look-up, so importing this
module stays cheap.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pint

__all__ = [
    "LANGUAGES",
    "Quantity",
    "QuantityError",
    "check_range",
    "describe_conversion",
    "find_quantities",
    "is_times",
    "parse_quantity",
]

# Languages tried, in order of preference on ties, when the caller does not name one.
LANGUAGES: tuple[str, ...] = ("en", "fr", "de", "es", "it", "pt", "nl")

# Multiplier nouns by language ("a dozen", "deux paires"). German and Dutch "paar" are left out on
# purpose: "ein paar" / "een paar" mean "a few", not "a pair".
_MULTIPLIERS: dict[str, dict[str, int]] = {
    "en": {"dozen": 12, "dozens": 12, "pair": 2, "pairs": 2},
    "fr": {"douzaine": 12, "douzaines": 12, "paire": 2, "paires": 2},
    "de": {"dutzend": 12, "dutzende": 12},
    "es": {"docena": 12, "docenas": 12, "par": 2, "pares": 2},
    "it": {"dozzina": 12, "dozzine": 12, "paio": 2, "paia": 2},
    "pt": {"dúzia": 12, "dúzias": 12, "par": 2, "pares": 2},
    "nl": {"dozijn": 12, "dozijnen": 12},
}
# Adverbs that are a count of times on their own ("prime it twice"), counted only where they end
# a clause: "twice as fast", "twice the volume" and "twice-filtered" are no count. Not "once",
# which as often means "as soon as".
_TIMES: dict[str, int] = {"twice": 2, "thrice": 3}
_CLAUSE_END = re.compile(r"\s*(?:[.,;:!?)]|$)")
# Words for a half that may stand before a multiplier noun, or before its article ("half a dozen").
_HALVES = frozenset({"half", "halve", "demi", "halb", "halbe", "halbes", "halben", "media", "mezza", "meia"})
# Indefinite articles that may stand before a multiplier noun instead of a number ("a dozen").
_ARTICLES = frozenset({"a", "an", "un", "une", "una", "uno", "ein", "eine", "einen", "um", "uma", "een"})

# Short function words (and ordinal suffixes, and "pcs" for pieces) that pint would read as units:
# "in" (inch), "are" (100 m²), "a" (year), "at" (atmosphere), "de" (deci-elementary charge), "pcs" (parsec).
_NOT_UNITS = frozenset(
    [
        "a",
        "an",
        "in",
        "at",
        "are",
        "as",
        "am",
        "us",
        "he",
        "me",
        "on",
        "or",
        "by",
        "be",
        "do",
        "no",
        "so",
        "it",
        "is",
        "if",
        "of",
        "to",
        "up",
        "we",
        "my",
        "de",
        "du",
        "da",
        "des",
        "le",
        "la",
        "les",
        "et",
        "en",
        "un",
        "une",
        "au",
        "aux",
        "à",
        "ce",
        "se",
        "sa",
        "ne",
        "das",
        "zu",
        "um",
        "im",
        "ab",
        "es",
        "er",
        "ob",
        "al",
        "el",
        "lo",
        "y",
        "o",
        "il",
        "di",
        "ed",
        "ao",
        "do",
        "em",
        "os",
        "uma",
        "het",
        "een",
        "op",
        "te",
        "van",
        "om",
        "pc",
        "pcs",
        "st",
        "nd",
        "rd",
        "th",
        "re",
        "e",
        "eme",
        "ème",
        "te",
        "ste",
        "ter",
    ]
)

_NUMBER = re.compile(
    r"(?:(?<![\w.,)\]])(?P<sign>[-+−]))?(?<![\w.,])(?P<num>\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?)(?![.,]?\d)"
)
_UNIT_PART = r"(?:[°º][^\W\d_]*|[^\W\d_]+(?:[²³]|\^-?\d)?|%)"
_UNIT = re.compile(rf"{_UNIT_PART}(?:\s?/\s?{_UNIT_PART})?(?![\w°º%])")
_SIMPLE_UNIT = re.compile(rf"{_UNIT_PART}(?![\w°º%])")
_WORD = re.compile(r"[^\W\d_]+")
_TRIM = ",.;:!?()[]{}\"'«»"


class QuantityError(ValueError):
    """A quantity that cannot be read, converted or accepted, with the reason."""


@dataclass(frozen=True)
class Quantity:
    """A number with its unit ("" for a bare count) and where it stands in the original text."""

    value: float
    unit: str
    text: str
    start: int
    end: int

    def __str__(self) -> str:
        return f"{_fmt(self.value)} {self.unit}" if self.unit else _fmt(self.value)

    def to(self, unit: str) -> float:
        """This value in ``unit``; raises QuantityError naming the quantity, the target and why."""
        if not self.unit:
            if not unit.strip():
                return self.value
            raise QuantityError(f"cannot convert {self} to {unit!r}: {self} is a bare number without a unit")
        source = _resolve_unit(self.unit)
        if source is None:
            raise QuantityError(f"cannot convert {self} to {unit!r}: unknown unit {self.unit!r}")
        target = _resolve_unit(unit)
        if target is None:
            raise QuantityError(f"cannot convert {self} to {unit!r}: unknown unit {unit!r}")
        import pint

        ureg = _registry()
        try:
            converted = ureg.Quantity(self.value, source).to(target)
        except pint.DimensionalityError:
            have = ureg.parse_units(source).dimensionality
            want = ureg.parse_units(target).dimensionality
            raise QuantityError(
                f"cannot convert {self} to {unit!r}: incompatible dimensions ({have} vs {want})"
            ) from None
        except pint.PintError as exc:
            raise QuantityError(f"cannot convert {self} to {unit!r}: {exc}") from None
        return float(converted.magnitude)


@functools.cache
def _registry() -> pint.UnitRegistry[Any]:
    import pint

    return pint.UnitRegistry()


@functools.lru_cache(maxsize=1024)
def _resolve_unit(word: str) -> str | None:
    """The pint-readable spelling of ``word`` if it names a unit (case-insensitive), else None."""
    word = word.strip().replace("º", "°")
    if not word or word.casefold() in _NOT_UNITS:
        return None
    import pint

    ureg = _registry()
    for candidate in dict.fromkeys((word, word.lower())):
        try:
            ureg.parse_units(candidate)
        except (pint.PintError, AttributeError, TypeError, ValueError, SyntaxError, KeyError, AssertionError):
            continue
        return candidate
    return None


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.12g}"


def _parse_number(digits: str, lang: str) -> float | None:
    """A number written with digits, "." or "," as decimal or thousands separator; None if ambiguous."""
    mantissa, _, exponent = digits.lower().partition("e")
    seps = [c for c in mantissa if c in ".,"]
    if not seps:
        number = mantissa
    else:
        decimal = seps[-1]
        groups = re.split(r"[.,]", mantissa)
        if len(set(seps)) == 2:
            if seps.count(decimal) != 1 or any(len(g) != 3 for g in groups[1:-1]) or len(groups[0]) > 3:
                return None
            number = "".join(groups[:-1]) + "." + groups[-1]
        elif len(seps) > 1:  # 1.500.000 or 1,500,000
            if len(groups[0]) > 3 or any(len(g) != 3 for g in groups[1:]):
                return None
            number = "".join(groups)
        elif decimal == "," and lang == "en" and len(groups[1]) == 3 and groups[0] != "0":
            number = "".join(groups)  # English thousands: 1,500
        else:
            number = groups[0] + "." + groups[1]
    if exponent:
        number += "e" + exponent
    try:
        value = float(number)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _alpha2digit(text: str, lang: str) -> str | None:
    from text_to_num import alpha2digit  # type: ignore[import-untyped]

    try:
        return str(alpha2digit(text, lang, threshold=0))
    except Exception:  # an unsupported language or an input text2num chokes on
        return None


@functools.cache
def function_words(lang: str) -> frozenset[str]:
    """The common function words of the language ``lang`` (a code of :data:`LANGUAGES`), case-folded:
    the ``stop-words`` package's list, which counts common verbs and nouns among them ("run", "part")."""
    from stop_words import get_stop_words

    return frozenset(w.casefold() for w in get_stop_words(lang))


def is_times(q: Quantity) -> bool:
    """Whether ``q`` is a count of times said in one word ("twice"): how often something is done,
    which need not be how many parts it is done to."""
    return q.text.casefold() in _TIMES


def _guess_language(text: str) -> tuple[str, str]:
    """The language (and converted text) whose function words and number words, as text2num
    reads them, the text has the most of (each counts one; a unit after a number is no function
    word); ties go to the first. A number word of another language alone does not outweigh the
    text's own function words ("machine a blank once" is no Spanish eleven)."""
    best: tuple[str, str] = ("en", text)
    best_score = 0
    base = len(re.findall(r"\d+", text))
    # Words of two letters or more not right after a number (a unit: "0,5 l", "500 ml").
    words = [
        m.group().casefold() for m in _WORD.finditer(text) if len(m.group()) > 1 and not _after_number(text, m.start())
    ]
    for lang in LANGUAGES:
        converted = _alpha2digit(text, lang)
        if converted is None:
            continue
        numbers = max(len(re.findall(r"\d+", converted)) - base, int(converted != text))
        score = numbers + sum(w in function_words(lang) for w in words)
        if score > best_score:
            best, best_score = (lang, converted), score
    return best


def language_of(text: str) -> str:
    """The code (of :data:`LANGUAGES`) of the language ``text`` is most likely written in."""
    return _guess_language(text)[0]


def is_unit(word: str) -> bool:
    """Whether ``word`` names a unit pint knows ("litre", "ml")."""
    return _resolve_unit(word) is not None


def _after_number(text: str, pos: int) -> bool:
    """Whether a digit comes before ``pos``, spaces aside."""
    while pos > 0 and text[pos - 1].isspace():
        pos -= 1
    return pos > 0 and text[pos - 1].isdigit()


def _aligner(original: str, converted: str, lang: str) -> Callable[[int], tuple[int, int, bool]]:
    """Map a position in ``converted`` to (start, end, exact) in ``original``.

    Tokens left alone by text2num map exactly; a token that replaced number words maps to the span of
    those words (exact is False).
    """
    orig = [(m.start(), m.end()) for m in re.finditer(r"\S+", original)]
    conv = [(m.start(), m.end()) for m in re.finditer(r"\S+", converted)]
    owords = [original[a:b] for a, b in orig]
    cwords = [converted[a:b] for a, b in conv]
    mapping: list[tuple[int, int, bool] | None] = [None] * len(conv)
    matcher = difflib.SequenceMatcher(None, owords, cwords, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for k in range(j2 - j1):
                mapping[j1 + k] = (orig[i1 + k][0], orig[i1 + k][1], True)
        elif op == "replace":
            if i2 - i1 == j2 - j1:
                for k in range(j2 - j1):
                    mapping[j1 + k] = (orig[i1 + k][0], orig[i1 + k][1], False)
                continue
            cur = i1
            for j in range(j1, j2):
                end = i2
                if j < j2 - 1:  # the longest run of words that text2num turns into this one token
                    for k in range(i2 - (j2 - j - 1), cur, -1):
                        if (_alpha2digit(" ".join(owords[cur:k]), lang) or "").split() == [cwords[j]]:
                            end = k
                            break
                    else:
                        end = min(cur + 1, i2)
                mapping[j] = (orig[min(cur, i2 - 1)][0], orig[max(end, cur + 1) - 1][1], False)
                cur = min(end, i2 - 1) if end < i2 else i2 - 1
        # "delete" and "insert" leave nothing to map (insert tokens stay None: never read)

    def locate(pos: int) -> tuple[int, int, bool]:
        for (a, b), m in zip(conv, mapping, strict=True):
            if a <= pos < b:
                if m is None:
                    return (-1, -1, False)
                if m[2]:
                    return (m[0] + pos - a, m[0] + pos - a, True)
                return m
        return (-1, -1, False)

    return locate


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _TRIM:
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end


def _read_unit(text: str, pos: int) -> tuple[str, int] | None:
    """The unit starting exactly at ``pos`` (compound "m/s" first), with its end."""
    for pattern in (_UNIT, _SIMPLE_UNIT):
        m = pattern.match(text, pos)
        if m and _resolve_unit(m.group()) is not None:
            return m.group(), m.end()
    return None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\u00a0\u202f":
        pos += 1
    return pos


def _multiplier_at(text: str, pos: int, lang: str) -> tuple[int, int] | None:
    m = _WORD.match(text, pos)
    if not m:
        return None
    table = _MULTIPLIERS.get(lang, {})
    factor = table.get(m.group().casefold()) or _MULTIPLIERS["en"].get(m.group().casefold())
    return (factor, m.end()) if factor else None


def _is_half(word: re.Match[str]) -> bool:
    return word.group().casefold() in _HALVES


def _joined(text: str, word: re.Match[str], pos: int, hyphen: bool = False) -> bool:
    """Whether ``word`` directly precedes position ``pos``: spaces between, or (``hyphen``) a hyphen."""
    gap = text[word.end() : pos]
    return not gap.strip() or (hyphen and gap.strip() == "-")


def _unit_after(text: str, pos: int) -> tuple[str, int] | None:
    nxt = _skip_space(text, pos)
    if nxt == pos or nxt >= len(text):
        return None
    return _read_unit(text, nxt)


def _scan(text: str, lang: str | None, whole: bool) -> Iterator[Quantity]:
    if lang is None:
        lang, converted = _guess_language(text)
    else:
        converted = _alpha2digit(text, lang) or text
    locate = _aligner(text, converted, lang)
    found: list[Quantity] = []
    last_end = 0
    for m in _NUMBER.finditer(converted):
        cs, ce = m.span("num")
        # A number after a hyphen glued to a name ("cell-2") is part of that name.
        if cs >= 2 and converted[cs - 1] == "-" and (converted[cs - 2].isalpha() or converted[cs - 2] == "_"):
            continue
        os_, _, exact = locate(cs)
        if os_ < 0:
            continue
        if exact:
            start, end = os_, os_ + (ce - cs)
        else:
            start, end = _trim(text, *locate(cs)[:2])
        sign_start = m.start("sign") if m.group("sign") else None
        if sign_start is not None:
            s_orig = locate(sign_start)
            if s_orig[2]:
                start = s_orig[0]
        if start < last_end:
            continue
        glued = ce < len(converted) and (converted[ce].isalpha() or converted[ce] in "_°º%µ")
        if glued and not exact:
            continue  # "25th" from "twenty-fifth": an ordinal
        value = _parse_number(m.group("num"), lang)
        if value is None:
            continue
        if m.group("sign") in ("-", "−"):
            value = -value
        unit = ""
        multiplied = False
        if glued:  # "5L", "2.5kg"; "5axis", "1st" are names or ordinals, not quantities
            tail = re.match(r"\S*", text[end:])
            tail_text = tail.group() if tail else ""
            u_start, u_end = _trim(text, end, end + len(tail_text))
            if u_start != end or _resolve_unit(text[u_start:u_end]) is None:
                continue
            unit, end = text[u_start:u_end], u_end
        else:
            nxt = _skip_space(text, end)
            mult = _multiplier_at(text, nxt, lang) if nxt > end else None
            if mult:
                value *= mult[0]
                end = mult[1]
                multiplied = True
            after = _unit_after(text, end)
            if after:
                unit, end = after
        if not whole and not exact and value == 1 and not unit and not multiplied:
            continue  # "one", "un", "ein": as often an article or pronoun as a count
        if not whole and not exact and value == 0 and not unit and _article_next(text, end):
            continue  # "zero the scale", "remettre à zéro la balance": a verb, not a count
        found.append(Quantity(value, unit, text[start:end], start, end))
        last_end = end
    # Multiplier nouns after an article ("a dozen", "a pair of gloves") or a half ("half a dozen",
    # "une demi-douzaine", "ein halbes Dutzend", "media docena").
    for w in _WORD.finditer(text):
        mult = _multiplier_at(text, w.start(), lang)
        if not mult or any(q.start <= w.start() < q.end for q in found):
            continue
        before = list(_WORD.finditer(text[: w.start()]))
        value, start = float(mult[0]), -1
        prev = before[-1] if before else None
        if prev is not None and _joined(text, prev, w.start(), hyphen=_is_half(prev)):
            word = prev.group().casefold()
            if _is_half(prev):
                value, start = value / 2, prev.start()
                if len(before) > 1 and before[-2].group().casefold() in _ARTICLES and _joined(text, before[-2], start):
                    start = before[-2].start()
            elif word in _ARTICLES:
                start = prev.start()
                if len(before) > 1 and _is_half(before[-2]) and _joined(text, before[-2], start):
                    value, start = value / 2, before[-2].start()
        if start < 0:
            continue
        end = mult[1]
        if any(q.start < end and start < q.end for q in found):
            continue
        unit = ""
        after = _unit_after(text, end)
        if after:
            unit, end = after
        found.append(Quantity(value, unit, text[start:end], start, end))
    # A count of times said in one word, at the end of a clause ("prime it twice, then ...").
    for w in _WORD.finditer(text):
        times = _TIMES.get(w.group().casefold())
        if not times or not _CLAUSE_END.match(text, w.end()):
            continue
        if not any(q.start < w.end() and w.start() < q.end for q in found):
            found.append(Quantity(float(times), "", w.group(), w.start(), w.end()))
    yield from sorted(found, key=lambda q: q.start)


#: Definite articles of the languages ("zero the scale": a verb and its object, never a count;
#: "all the robots").
DEFINITE_ARTICLES = frozenset(
    {
        *("the", "le", "la", "les", "l", "der", "die", "das", "den", "dem", "el", "los", "las"),
        *("il", "lo", "gli", "os", "as", "het", "de"),
    }
)


def _article_next(text: str, pos: int) -> bool:
    """Whether the word after ``pos`` is an article ("the", "la", "a"): what follows a verb,
    never a count ("zero parts", "program zero on the CNC" are counts)."""
    word = _WORD.match(text, _skip_space(text, pos))
    return word is not None and word.group().casefold() in DEFINITE_ARTICLES | _ARTICLES


def find_quantities(text: str, lang: str | None = None) -> list[Quantity]:
    """Every number in ``text`` with the unit that directly follows it, if that word is a unit.

    ``lang`` is a text2num language code; by default the language reading the most number words wins.
    Digits glued to letters or underscores ("press_2", "arm3", "plan27") are names, not numbers; ordinals
    ("first", "3rd") are not quantities; a lone "one" (or "un", "ein", ...) counts only before a unit
    or a multiplier noun, since it is as often an article or a pronoun; a lone "zero" before an
    article ("zero the scale") is a verb.
    """
    return list(_scan(text, lang, whole=False))


def parse_quantity(text: str, lang: str | None = None) -> Quantity:
    """Read one value as given in a form or a model's structured output: "500 ml", "0.5", "five litres"."""
    stripped = text.strip()
    if not stripped:
        raise QuantityError("empty quantity: expected a number, optionally followed by a unit")
    if re.search(r"\b(?:nan|inf|infinity)\b|∞", stripped, re.IGNORECASE):
        raise QuantityError(f"{stripped!r} is not a finite number")
    offset = text.index(stripped)
    found = list(_scan(stripped, lang, whole=True))
    if len(found) > 1:
        listed = ", ".join(repr(q.text) for q in found)
        raise QuantityError(f"{stripped!r} holds several numbers ({listed}); expected one")
    if not found:
        raise QuantityError(f"{stripped!r} is not a number (malformed or missing)")
    q = found[0]
    if q.start != 0:
        raise QuantityError(f"{stripped!r}: unexpected {stripped[: q.start].strip()!r} before the number")
    rest = stripped[q.end :].strip()
    if rest:
        if re.match(r"[\d.,]", rest) or re.match(r"[\d.,]", stripped[q.end : q.end + 1]):
            raise QuantityError(f"{stripped!r} is not a well-formed number")
        raise QuantityError(f"{stripped!r}: unknown unit {rest!r}")
    if not math.isfinite(q.value):
        raise QuantityError(f"{stripped!r} is not a finite number")
    return Quantity(q.value, q.unit, q.text, q.start + offset, q.end + offset)


def _same_unit(a: str, b: str) -> bool:
    if a.strip() == b.strip():
        return True
    ra, rb = _resolve_unit(a), _resolve_unit(b)
    if ra is None or rb is None:
        return False
    ureg = _registry()
    return bool(ureg.parse_units(ra) == ureg.parse_units(rb))


def describe_conversion(q: Quantity, unit: str) -> str:
    """ "500 ml = 0.5 l" for a plan's notes; just "5 l" when nothing needs converting."""
    if not q.unit or _same_unit(q.unit, unit):
        return f"{_fmt(q.value)} {unit}".strip()
    return f"{q} = {_fmt(q.to(unit))} {unit}"


def check_range(q: Quantity, *, unit: str, min: float | None, max: float | None, name: str) -> float:
    """``q`` in ``unit`` (a bare number is taken as already in ``unit``), within [min, max].

    Raises QuantityError naming the argument, the value as given, the converted value and the broken limit.
    """
    if not math.isfinite(q.value):
        raise QuantityError(f"{name}: {q} is not a finite number")
    try:
        value = q.value if not q.unit else q.to(unit)
    except QuantityError as exc:
        raise QuantityError(f"{name}: {exc}") from None
    shown = describe_conversion(q, unit)

    def _beyond(limit: float) -> bool:
        return not math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12)

    if max is not None and value > max and _beyond(max):
        raise QuantityError(f"{name}: {shown} is above the maximum {_fmt(max)} {unit}".rstrip())
    if min is not None and value < min and _beyond(min):
        raise QuantityError(f"{name}: {shown} is below the minimum {_fmt(min)} {unit}".rstrip())
    return value

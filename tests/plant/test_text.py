"""safe_text: outside text made safe for a terminal, for every input."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from plant.text import safe_text

_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def _unsafe(ch: str, newlines: bool) -> bool:
    if ch == "\n" and newlines:
        return False
    return unicodedata.category(ch) == "Cc" or ch in _BIDI


def test_escapes_and_marker() -> None:
    assert safe_text("spindle\x1b[2J\x1b]0;owned\x07 fault\x00") == "spindle\\x1b[2J\\x1b]0;owned\\x07 fault\\x00"
    assert safe_text("a\nb\tc\rd\x7f\x9b") == "a\\nb\\tc\\rd\\x7f\\x9b"
    assert safe_text("a\nb", newlines=True) == "a\nb"
    assert safe_text("right\u202eleft") == "right\\u202eleft"
    assert safe_text("C:\\plants\\cell.yaml [hazardous]") == "C:\\plants\\cell.yaml [hazardous]"
    assert safe_text(42) == "42"
    out = safe_text("x" * 200_000, 500)
    assert len(out) <= 500 and out.endswith("characters]") and "of 200,000 characters" in out
    cut = int(out.split("[cut ")[1].split(" of")[0].replace(",", ""))
    assert cut + out.index("…") == 200_000


def test_escapes_are_never_split_by_the_cut() -> None:
    out = safe_text("\x1b" * 1000, 100)
    body = out.split("…")[0]
    assert body == "\\x1b" * (len(body) // 4)


@given(st.text(), st.integers(min_value=0, max_value=3000), st.booleans())
def test_any_text_comes_out_safe_and_bounded(s: str, limit: int, newlines: bool) -> None:
    out = safe_text(s, limit, newlines=newlines)
    assert len(out) <= max(40, limit)
    assert not any(_unsafe(ch, newlines) for ch in out)
    if len(s) <= max(40, limit) and not any(_unsafe(ch, newlines) for ch in s):
        assert out == s


def test_log_lines_are_escaped_and_capped() -> None:
    import io
    import logging

    from plant.text import SafeLogFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeLogFormatter("%(levelname)s %(message)s", limit=200))
    log = logging.getLogger("test_safe_log")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("fault %s", "\x1b[2Jspindle\nERROR forged line" + "x" * 10_000)
        try:
            raise ValueError("bad\x1b[31m")
        except ValueError:
            log.exception("with a traceback")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("WARNING fault \\x1b[2Jspindle\\nERROR forged line") and len(lines[0]) <= 200
    assert "\x1b" not in stream.getvalue()
    assert lines[1] == "ERROR with a traceback" and lines[2].startswith("Traceback")
    assert lines[-1] == "ValueError: bad\\x1b[31m"

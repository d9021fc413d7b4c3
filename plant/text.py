"""Text from outside, made safe to show on a terminal or in a log line.

Machines, models, plans and people send text that ends up printed: fault texts, model output,
plan notes, work orders, rejection reasons, audit payloads. Any of it may hold an ESC sequence
(which a terminal obeys: it can hide lines, retitle the window, fake a prompt), a NUL, or a
200,000-character string. :func:`safe_text` is the one gate such text passes before it is shown.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: Default number of characters shown, the cut marker included.
DEFAULT_LIMIT = 2000

# C0 controls and DEL, C1 controls (ESC-free CSI is U+009B), the Unicode direction overrides
# and isolates (they reorder what the reader sees), and the line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_UNSAFE_KEEP_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(value: object, limit: int = DEFAULT_LIMIT, *, newlines: bool = False) -> str:
    """``value`` as text that a terminal shows verbatim: pure, never raises, never blocks.

    Control characters (C0 including NUL, TAB and CR, DEL, C1 including ESC's 8-bit forms,
    Unicode direction overrides and line separators) become visible escapes such as ``\\x1b``,
    ``\\x00``, ``\\n``. A newline stays a newline only when ``newlines`` is true (multi-line
    fields the caller indents itself). Backslashes are left alone, so a path reads as a path.

    The result is at most ``limit`` characters (``limit`` below 40 counts as 40): when the
    text is longer, it ends with a marker saying how many characters of the original were cut,
    for example ``… [cut 198,050 of 200,000 characters]``. Non-strings go through ``str()``.
    """
    s = value if isinstance(value, str) else str(value)
    limit = max(40, limit)
    unsafe = _UNSAFE_KEEP_NL if newlines else _UNSAFE
    if len(s) <= limit and unsafe.search(s) is None:
        return s
    # Escaping only lengthens, so no more than ``limit`` characters of the input can be shown.
    head = s[:limit]
    shown = unsafe.sub(lambda m: _escape(m.group()), head)
    if len(shown) <= limit and len(s) <= limit:
        return shown
    marker_room = len(f"… [cut {len(s):,} of {len(s):,} characters]")
    budget = limit - marker_room
    out: list[str] = []
    used = 0
    taken = 0
    for ch in head:
        piece = _escape(ch) if unsafe.match(ch) else ch
        if used + len(piece) > budget:
            break
        out.append(piece)
        used += len(piece)
        taken += 1
    return "".join(out) + f"… [cut {len(s) - taken:,} of {len(s):,} characters]"


class SafeLogFormatter(logging.Formatter):
    """A log formatter that passes each record's line through :func:`safe_text`: control
    characters escaped (a newline in a message cannot forge a second log line) and the line
    capped at ``limit`` characters. Tracebacks keep their newlines, with the rest escaped."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, *, limit: int = 4000) -> None:
        super().__init__(fmt, datefmt)
        self.limit = limit

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe_text(super().formatMessage(record), self.limit)

    def formatException(self, ei: Any) -> str:
        return safe_text(super().formatException(ei), 20 * self.limit, newlines=True)

    def formatStack(self, stack_info: str) -> str:
        return safe_text(super().formatStack(stack_info), 20 * self.limit, newlines=True)

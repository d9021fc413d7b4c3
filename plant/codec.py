"""Tag values between engineering units, raw PLC values and Modbus registers.

Pure functions, shared by both machine agents (``plant.opcua``, ``plant.modbus``) and both twin
servers (``sim.serve``), so a value means the same thing on either end of the wire:

- :func:`check_write` decides whether a value may be written to a tag (access, type, range,
  length) and returns the raw value to send. It raises :class:`~plant.interface.TagError`
  naming the machine, the tag and the reason; nothing is sent when it raises.
- :func:`to_raw` / :func:`from_raw` apply the tag's ``scale`` and ``offset``
  (engineering = raw * scale + offset) and its data type.
- :func:`encode_registers` / :func:`decode_registers` lay a raw value out in 16-bit Modbus
  registers in the tag's byte and word order.
- :func:`reading_alarm` / :func:`tag_alarms` decide whether a value *read* from a machine is one
  the tag map declares impossible (the alarm rule, below).

The alarm rule. A tag's ``min``/``max`` is its declared range, for what is read as much as for
what is written: a reading outside it (by more than the tag's resolution), or a number that is
not finite, is an alarm. A wrapped integer is recognised from the declared range and the data
type: a raw value with its sign bit set (0x8000.. in 16 bits, 0x80000000.. in 32) in a tag whose
range needs no sign bit (``min`` >= 0) is a value that wrapped below zero, or a register nobody
set (0xFFFF): it lies outside the range, and the reason says it wrapped and what it reads as
in the other signedness (65535 is -1 as an int16). The same holds for a signed value that the
map declares unsigned (a negative ``min`` on a ``uint16``). A tag without ``min``/``max`` has
its data type's whole range: nothing it can hold is an alarm (counters and sequence numbers
legitimately reach the top of their type), so declare the range of every quantity where a
wrong reading matters.

Conventions of the register layout (they are the common ones of PLC vendors):

- ``word_order`` "big" puts the most significant 16-bit word first (Modicon order);
  "little" puts the least significant word first. It applies to 32- and 64-bit types.
- ``byte_order`` "big" puts the more significant byte of each 16-bit word in the high byte of
  the register; "little" swaps the two bytes inside every register.
- A string is UTF-8, two bytes per register, the first byte in the high byte ("big") or the
  low byte ("little"), padded with NUL bytes. Trailing NULs are padding, so they do not survive
  a round trip. Decoding never fails: bytes that are not UTF-8 become U+FFFD, because a string
  read from a machine is data from outside and must never stop the reader.
"""

from __future__ import annotations

import math
import struct
import unicodedata
from collections.abc import Callable, Mapping, Sequence

from plant.config import ModbusTag, TagBase
from plant.interface import TagAlarm, TagError, TagValue

#: Raw range of each integer data type (inclusive).
INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}
#: Longest string (UTF-8 bytes) an OPC-UA string tag may be written with; Modbus tags hold
#: ``2 * length_registers`` bytes.
MAX_STRING_BYTES = 4096
_FLOAT32_MAX = 3.4028234663852886e38

RawValue = bool | int | float | str


class CodecError(ValueError):
    """A value that does not fit a tag; ``str(exc)`` is the reason a person reads."""


# --------------------------------------------------------------------------- engineering <-> raw


def is_scaled(tag: TagBase) -> bool:
    """True when the tag's engineering value differs from its raw value (scale or offset set)."""
    return tag.scale != 1.0 or tag.offset != 0.0


def from_raw(tag: TagBase, raw: RawValue) -> TagValue:
    """The engineering value of a raw value: typed (bool, int, float or str) and scaled.

    Integer tags without scale or offset stay ``int``; scaled numeric tags become ``float``.
    Raises :class:`CodecError` when the raw value is not of the tag's kind (a server that
    serves a different type than the tag map declares).
    """
    dt = tag.data_type
    if dt == "string":
        if not isinstance(raw, str):
            raise CodecError(f"expected a string from the machine, got {type(raw).__name__}")
        return raw
    if dt == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int):
            return raw != 0
        raise CodecError(f"expected a bool from the machine, got {type(raw).__name__}")
    if isinstance(raw, str | bool):
        raise CodecError(f"expected a number from the machine, got {type(raw).__name__}")
    if dt in INT_RANGES:
        if isinstance(raw, float):
            if not raw.is_integer():
                raise CodecError(f"expected an integer from the machine, got {raw!r}")
            raw = int(raw)
        if not is_scaled(tag):
            return int(raw)
        return raw * tag.scale + tag.offset
    value = float(raw)
    return value * tag.scale + tag.offset if is_scaled(tag) else value


def to_raw(tag: TagBase, value: TagValue) -> RawValue:
    """The raw value of an engineering value, rounded to the type's resolution.

    Raises :class:`CodecError` if the value has the wrong type, is not finite, or does not fit
    the raw type (for example 70000 in a uint16, or a negative number in a uint32).
    """
    dt = tag.data_type
    if dt == "string":
        if not isinstance(value, str):
            raise CodecError(f"a string tag takes text, not {type(value).__name__}")
        return value
    if dt == "bool":
        if not isinstance(value, bool):
            raise CodecError(f"a bool tag takes True or False, not {type(value).__name__} {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"a {dt} tag takes a number, not {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"{value!r} is not a finite number")
    if dt in INT_RANGES:
        if is_scaled(tag):
            raw_f = (value - tag.offset) / tag.scale
            if not math.isfinite(raw_f):
                raise CodecError(f"{value!r} does not fit a {dt}")
            raw_i = round(raw_f)
        else:
            if isinstance(value, float) and not value.is_integer():
                raise CodecError(f"a {dt} tag takes a whole number, not {value!r}")
            raw_i = int(value)
        lo, hi = INT_RANGES[dt]
        if not lo <= raw_i <= hi:
            what = f"{value!r} (raw {raw_i})" if is_scaled(tag) else repr(value)
            raise CodecError(f"{what} does not fit a {dt} ({lo}..{hi})")
        return raw_i
    raw = (value - tag.offset) / tag.scale if is_scaled(tag) else float(value)
    if not math.isfinite(raw) or (dt == "float32" and abs(raw) > _FLOAT32_MAX):
        raise CodecError(f"{value!r} does not fit a {dt}")
    return float(raw)


def resolution(tag: TagBase) -> float:
    """How far a written engineering value may differ from its read-back (half a raw step)."""
    if tag.data_type in INT_RANGES:
        return abs(tag.scale) / 2 + 1e-9
    if tag.data_type == "float32":
        return 1e-6
    return 1e-12


def same_value(tag: TagBase, written: TagValue, read_back: TagValue) -> bool:
    """Whether ``read_back`` is what a write of ``written`` should leave in the tag."""
    if tag.data_type in ("bool", "string"):
        return written == read_back
    if isinstance(read_back, bool | str) or isinstance(written, bool | str):
        return False
    if tag.data_type == "float32":
        return math.isclose(float(written), float(read_back), rel_tol=1e-6, abs_tol=1e-6 * abs(tag.scale))
    return abs(float(written) - float(read_back)) <= resolution(tag)


def string_capacity(tag: TagBase) -> int:
    """Bytes of UTF-8 a string tag can hold."""
    if isinstance(tag, ModbusTag):
        return 2 * (tag.length_registers or 1)
    return MAX_STRING_BYTES


def check_write(machine: str, name: str, tag: TagBase, value: TagValue) -> RawValue:
    """Check a write of ``value`` to tag ``name`` and return the raw value to send.

    Raises :class:`~plant.interface.TagError` (machine, tag, reason) when the tag is read-only,
    the value has the wrong type, lies outside the tag's ``min``/``max``, does not fit the raw
    type, or (strings) is longer than the tag holds. Pure: it sends nothing.
    """
    if not tag.writable:
        raise TagError(machine, name, "is read-only")
    if tag.data_type in ("bool", "string"):
        try:
            raw = to_raw(tag, value)
        except CodecError as exc:
            raise TagError(machine, name, str(exc)) from None
        if isinstance(raw, str):
            try:
                n = len(utf8(raw))
            except CodecError as exc:
                raise TagError(machine, name, str(exc)) from None
            if n > string_capacity(tag):
                raise TagError(machine, name, f"text of {n} bytes is longer than the {string_capacity(tag)} it holds")
        return raw
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TagError(machine, name, f"a {tag.data_type} tag takes a number, not {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise TagError(machine, name, f"{value!r} is not a finite number")
    if tag.min is not None and value < tag.min:
        raise TagError(machine, name, f"{value!r} is below the minimum {tag.min:g}{_unit(tag)}")
    if tag.max is not None and value > tag.max:
        raise TagError(machine, name, f"{value!r} is above the maximum {tag.max:g}{_unit(tag)}")
    try:
        return to_raw(tag, value)
    except CodecError as exc:
        raise TagError(machine, name, str(exc)) from None


def _unit(tag: TagBase) -> str:
    return f" {tag.unit}" if tag.unit else ""


# --------------------------------------------------------------------------- readings


def can_alarm(tag: TagBase) -> bool:
    """Whether a reading of ``tag`` can ever be an alarm (a readable number with a declared
    range, or a float, which may read as NaN): the tags an agent checks before a command."""
    if tag.access == "write" or tag.data_type in ("bool", "string"):
        return False
    return tag.data_type not in INT_RANGES or tag.min is not None or tag.max is not None


def _raw_of(tag: TagBase, value: int | float) -> int | float:
    """The raw value behind an engineering value read from the machine (inverse of from_raw)."""
    if not is_scaled(tag):
        return value
    raw = (value - tag.offset) / tag.scale
    if tag.data_type in INT_RANGES and math.isfinite(raw):
        return round(raw)
    return raw


def _range_text(tag: TagBase) -> str:
    lo, hi, unit = tag.min, tag.max, _unit(tag)
    if lo is not None and hi is not None:
        return f"outside its declared range {lo:g}..{hi:g}{unit}"
    return f"below its declared minimum {lo:g}{unit}" if lo is not None else f"above its declared maximum {hi:g}{unit}"


def _wrap_note(tag: TagBase, raw: int) -> str:
    """Why an out-of-range integer reading looks wrapped ("" when it does not)."""
    dt = tag.data_type
    bits = 16 if dt in ("int16", "uint16") else 32
    signed = dt.startswith("int")
    span, half = 1 << bits, 1 << (bits - 1)
    if signed and raw < 0:
        other, as_ = raw + span, f"a uint{bits}"
    elif not signed and raw >= half:
        other, as_ = raw - span, f"an int{bits}"
    else:
        return ""
    other_value = other * tag.scale + tag.offset
    inside = (tag.min is None or other_value >= tag.min) and (tag.max is None or other_value <= tag.max)
    # A never-negative quantity whose whole range fits below the sign bit, read with the sign
    # bit set: it went below zero in an unsigned register (or the register was never set).
    small = not signed and tag.min is not None and tag.min >= 0 and tag.max is not None and _raw_of(tag, tag.max) < half
    if not (inside or small):
        return ""
    return f"; its sign bit is set: as {as_} it reads {other}, a value that wrapped around"


def reading_alarm(name: str, tag: TagBase, value: TagValue) -> TagAlarm | None:
    """The alarm a reading of ``value`` from tag ``name`` raises, or None (see the module
    docstring for the rule). Pure; never raises for a value of the tag's kind."""
    if tag.data_type in ("bool", "string") or isinstance(value, bool | str):
        return None
    raw = _raw_of(tag, value)
    if isinstance(raw, int):
        bits = 16 if tag.data_type in ("int16", "uint16") else 32
        raw_text = f"raw {raw}, 0x{raw & ((1 << bits) - 1):0{bits // 4}X}"
    else:
        raw_text = f"raw {raw!r}"
    unit = _unit(tag)
    if isinstance(value, float) and not math.isfinite(value):
        return TagAlarm(name, raw, value, f"{name} reads {value!r} ({raw_text}): not a finite number")
    lo, hi = tag.min, tag.max
    below = lo is not None and value < lo and not same_value(tag, lo, value)
    above = hi is not None and value > hi and not same_value(tag, hi, value)
    if not (below or above):
        return None
    note = _wrap_note(tag, raw) if isinstance(raw, int) and tag.data_type in INT_RANGES else ""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return TagAlarm(name, raw, value, f"{name} reads {shown}{unit} ({raw_text}), {_range_text(tag)}{note}")


def tag_alarms(tags: Mapping[str, TagBase], values: Mapping[str, TagValue]) -> tuple[TagAlarm, ...]:
    """The alarms of a set of readings (``values`` by tag name; tags not in ``tags`` are skipped)."""
    out: list[TagAlarm] = []
    for name, value in values.items():
        tag = tags.get(name)
        if tag is None:
            continue
        alarm = reading_alarm(name, tag, value)
        if alarm is not None:
            out.append(alarm)
    return tuple(out)


def printable(text: str, limit: int = 200) -> str:
    """``text`` made safe to show in one line of a log or console: control and format
    characters become ``\\x..``/``\\u....`` escapes, and it is cut to ``limit`` characters.

    Machine strings (fault texts) come from outside; this is for display only. The stored and
    returned value is always the original text.
    """
    out: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    s = "".join(out)
    return s if len(s) <= limit else s[: max(0, limit - 1)] + "…"


# --------------------------------------------------------------------------- raw <-> registers


def _words_from_bytes(data: bytes, byte_order: str, word_order: str) -> list[int]:
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def _bytes_from_words(regs: list[int], byte_order: str, word_order: str) -> bytes:
    if byte_order == "big" and word_order == "big":
        return struct.pack(f">{len(regs)}H", *(r & 0xFFFF for r in regs))
    words = [(r & 0xFFFF).to_bytes(2, "big") for r in regs]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return b"".join(words)


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; :class:`CodecError` for text that has no UTF-8 form (a lone surrogate)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CodecError(f"not valid Unicode text (an unpaired surrogate at character {exc.start})") from None


def truncate_utf8(text: str, max_bytes: int) -> bytes:
    """``text`` as UTF-8, cut to at most ``max_bytes`` without splitting a character.

    For text a machine publishes: characters with no UTF-8 form become ``?``, never an error.
    """
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return data
    cut = data[:max_bytes]
    return cut.decode("utf-8", errors="ignore").encode("utf-8")


def encode_registers(tag: ModbusTag, raw: RawValue, truncate: bool = False) -> list[int]:
    """The registers (each 0..65535) of a raw value, ``tag.register_count`` of them.

    Strings longer than the tag raise :class:`CodecError`, unless ``truncate`` (a server
    publishing a long fault text) cuts them at a character boundary.
    """
    dt = tag.data_type
    if dt == "string":
        if not isinstance(raw, str):
            raise CodecError(f"a string tag takes text, not {type(raw).__name__}")
        cap = 2 * tag.register_count
        data = truncate_utf8(raw, cap) if truncate else utf8(raw)
        if len(data) > cap:
            raise CodecError(f"text of {len(data)} bytes is longer than the {cap} the tag holds")
        data = data.ljust(cap, b"\0")
        return _words_from_bytes(data, tag.byte_order, "big")
    if dt == "bool":
        if not isinstance(raw, bool | int):
            raise CodecError(f"a bool tag takes True or False, not {type(raw).__name__}")
        return [1 if raw else 0]
    if isinstance(raw, str | bool):
        raise CodecError(f"a {dt} tag takes a number, not {type(raw).__name__}")
    if dt in INT_RANGES:
        if isinstance(raw, float):
            if not raw.is_integer():
                raise CodecError(f"a {dt} register takes a whole number, not {raw!r}")
            raw = int(raw)
        lo, hi = INT_RANGES[dt]
        if not lo <= raw <= hi:
            raise CodecError(f"{raw} does not fit a {dt} ({lo}..{hi})")
    try:
        data = struct.pack(">" + _STRUCT[dt], raw)
    except (struct.error, OverflowError) as exc:
        raise CodecError(f"{raw!r} does not fit a {dt}: {exc}") from None
    return _words_from_bytes(data, tag.byte_order, tag.word_order)


def decode_registers(tag: ModbusTag, regs: list[int]) -> RawValue:
    """The raw value held in ``regs`` (exactly ``tag.register_count`` registers)."""
    if len(regs) != tag.register_count:
        raise CodecError(f"expected {tag.register_count} registers, got {len(regs)}")
    dt = tag.data_type
    if dt == "string":
        data = _bytes_from_words(regs, tag.byte_order, "big")
        return data.rstrip(b"\0").decode("utf-8", errors="replace")
    if dt == "bool":
        return regs[0] != 0
    data = _bytes_from_words(regs, tag.byte_order, tag.word_order)
    value = struct.unpack(">" + _STRUCT[dt], data)[0]
    return float(value) if dt in ("float32", "float64") else int(value)


def register_decoder(tag: ModbusTag) -> Callable[[Sequence[int], int], TagValue]:
    """A function ``(registers, start) -> engineering value`` reading the tag's registers from
    ``registers[start:]``: the same as ``from_raw(tag, decode_registers(tag, regs))`` but
    prepared once and without copies, for agents that read many tags many times (a read of
    100 tags must cost about what the bare library costs). Raises :class:`CodecError` like
    those two (or ``IndexError`` when ``registers`` is too short)."""
    dt = tag.data_type
    n = tag.register_count
    if tag.table in ("coil", "discrete_input") or dt == "bool":
        return lambda regs, i: bool(regs[i])
    scaled = is_scaled(tag)
    scale, offset = tag.scale, tag.offset
    if dt in ("int16", "uint16"):
        swap = tag.byte_order == "little"
        signed = dt == "int16"

        def one(regs: Sequence[int], i: int) -> TagValue:
            r = regs[i] & 0xFFFF
            if swap:
                r = ((r & 0xFF) << 8) | (r >> 8)
            if signed and r >= 0x8000:
                r -= 0x10000
            return r * scale + offset if scaled else r

        return one
    if dt != "string":
        unpack = struct.Struct(">" + _STRUCT[dt]).unpack
        bo, wo = tag.byte_order, tag.word_order
        is_float = dt in ("float32", "float64")

        def num(regs: Sequence[int], i: int) -> TagValue:
            v: int | float = unpack(_bytes_from_words(list(regs[i : i + n]), bo, wo))[0]
            if scaled:
                return float(v * scale + offset)
            return float(v) if is_float else int(v)

        return num
    return lambda regs, i: from_raw(tag, decode_registers(tag, list(regs[i : i + n])))


def default_raw(tag: TagBase) -> RawValue:
    """The value a tag holds before anything wrote it (False, 0, 0.0 or an empty string)."""
    if tag.data_type == "string":
        return ""
    if tag.data_type == "bool":
        return False
    return 0 if tag.data_type in INT_RANGES else 0.0

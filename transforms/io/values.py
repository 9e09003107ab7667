"""Input field values: the conversions and checks both validation paths share (Beam-free).

A record's fields are checked either one record at a time
(``validate.BatchBuilder``) or a column at a time (``columnar``); both use the
definitions here, so a record gets the same document or the same rejection
reason whichever path saw it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from corpusmill.schemas.documents import RejectReason

MISSING = object()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Exactly the code points for which str.isspace() is true, i.e. what str.strip()
# removes; the columnar check must call the same texts blank as the per-row one
# (RE2's \s and Arrow's utf8 trim functions use other sets).
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
BLANK_TEXT_PATTERN = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in PYTHON_WHITESPACE) + "]*$"
# Compact JSON with sorted keys; built once because json.dumps with options
# constructs a new encoder on every call.
_META_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
_META_ENCODER_ASCII = json.JSONEncoder(sort_keys=True, ensure_ascii=True, default=str, separators=(",", ":"))
# Microseconds of datetime.min and datetime.max (UTC): a document's timestamp
# must stay readable as a Python datetime, so values outside are rejected.
MIN_MICROS = -62135596800 * 1_000_000
MAX_MICROS = 253402300799 * 1_000_000 + 999_999
MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}  # ns: floor-divided by 1000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True)
class FieldMap:
    """Which input fields become which Document fields."""

    text: str = "text"
    id: str = "id"
    url: str = "url"
    timestamp: str = "timestamp"
    source: str = "source"

    @property
    def mapped(self) -> tuple[str, ...]:
        """The input names of the Document fields, in field order."""
        return (self.text, self.id, self.url, self.timestamp, self.source)


class UnconvertibleRows(Exception):
    """Raised when rows of a columnar input cannot become Python values.

    The per-row path converts every row with ``to_pylist``; a value it cannot
    convert (say, a timestamp beyond year 9999) makes the whole row group a
    ``corrupt_row_group`` rejection, on the fast path as much as on the slow one.
    """


def to_pylist(table: pa.Table) -> list[dict[str, Any]]:
    try:
        return table.to_pylist()
    except Exception as error:  # pyarrow and Python raise many types for values it cannot convert
        raise UnconvertibleRows(f"{type(error).__name__}: {error}") from error


def is_text_type(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def encodable(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def record_excerpt(record: dict[str, Any], text: Any) -> str:
    shown = dict(record)
    if isinstance(text, str):
        shown = {"text": text[:512], **shown}
    return json.dumps(shown, ensure_ascii=True, default=str)[:2048]


def meta_json(record: dict[str, Any]) -> str:
    """Compact JSON of the unmodelled fields, sorted keys; ASCII-escaped only if it must be."""
    text = _META_ENCODER.encode(record)
    if not encodable(text):
        # Lone surrogates from JSON escapes cannot be stored as UTF-8.
        text = _META_ENCODER_ASCII.encode(record)
    return text


# Numeric epochs: the unit is read off the magnitude. Each band holds the
# instants 1973-03-03T09:46:40Z .. 5138-11-16T09:46:40Z (1e8 .. 1e11 seconds)
# in its unit, so a time in that span means the same whichever unit it was
# written in; only the seconds band also reaches back to 1970 (and before).
EPOCH_BANDS = ((10**11, "s"), (10**14, "ms"), (10**17, "us"))
EPOCH_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
NUMERIC_TIMESTAMP_RULE = (
    "a numeric timestamp is epoch seconds when |v| < 1e11, milliseconds when < 1e14, "
    "microseconds when < 1e17, else nanoseconds, and must fall in years 1..9999")


@dataclass(frozen=True)
class ArrowTimestamp:
    """A value of a timestamp-typed Arrow column: its storage integer in its declared unit.

    The per-record path gets these instead of Python datetimes, which cannot hold
    nanoseconds or years past 9999; :func:`to_micros` converts or rejects them.
    """

    value: int
    unit: str

    def __str__(self) -> str:
        try:
            return micros_to_iso(to_micros(self))
        except ValueError:
            return f"{self.value} {EPOCH_UNIT_NAMES[self.unit]} since the epoch"


def micros_to_iso(micros: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=micros)).isoformat()


def epoch_unit(value: int | float) -> str:
    """The unit of a numeric epoch by its magnitude: "s", "ms", "us" or "ns"."""
    for bound, unit in EPOCH_BANDS:
        if -bound < value < bound:
            return unit
    return "ns"


def _scaled(value: int | float, unit: str) -> int:
    """Microseconds from a number of ``unit``: ints exactly (ns floored), floats rounded."""
    if isinstance(value, int):
        return value * MICROS_PER_UNIT[unit] if unit != "ns" else value // 1000
    return int(round(value / 1000 if unit == "ns" else value * MICROS_PER_UNIT[unit]))


def _in_range(micros: int, shown: str, rule: str) -> int:
    if micros < MIN_MICROS or micros > MAX_MICROS:
        raise ValueError(f"{shown} is {'before year 1' if micros < 0 else 'after year 9999'}; {rule}")
    return micros


def to_micros(value: Any) -> int | None:
    """Microseconds since the epoch (UTC) of a timestamp field's value.

    Accepted values:

    * an ISO-8601 string (surrounding whitespace ignored) or a datetime; no
      zone means UTC. A date is its midnight, UTC.
    * a number (not a bool), an epoch whose unit is read off its magnitude:
      seconds when ``|v| < 1e11``, milliseconds when ``|v| < 1e14``,
      microseconds when ``|v| < 1e17``, nanoseconds otherwise. Each band covers
      1973-03-03 .. 5138-11-16 in its own unit (1e8 .. 1e11 seconds), so an
      instant in that span reads the same whichever unit wrote it; epochs of
      1970 .. 1973 must be written in seconds (a millisecond epoch of 1971 would
      read as seconds, year 2968). Integers convert exactly (nanoseconds are
      floored to the microsecond); floats round to the nearest microsecond.
    * an :class:`ArrowTimestamp`: the column's declared unit, never the magnitude.

    Raises:
        TypeError: The value is of another type.
        ValueError: An unparsable string, a NaN or infinite number, or an
            instant outside years 1..9999 (what a Python datetime can hold).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"must be an ISO-8601 string or an epoch number, got {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        unit = epoch_unit(value)
        return _in_range(_scaled(value, unit), f"{value!r} (read as epoch {EPOCH_UNIT_NAMES[unit]})",
                         NUMERIC_TIMESTAMP_RULE)
    if isinstance(value, ArrowTimestamp):
        return _in_range(_scaled(value.value, value.unit), f"{value.value} (a timestamp[{value.unit}] column, "
                         f"epoch {EPOCH_UNIT_NAMES[value.unit]})", "allowed: years 1..9999")
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, dt.date):
        return to_micros(dt.datetime(value.year, value.month, value.day))
    raise TypeError(f"must be an ISO-8601 string or an epoch number, got {value!r:.80}")


def id_problem(raw_id: Any, field: str) -> str | None:
    """Why a record's id value cannot be a document id, or None when it can.

    An id is a string with at least one non-whitespace character (kept exactly
    as written, surrounding whitespace included) or an integer (stored as its
    decimal string, so the integer 5 and the string "5" are one id).
    """
    if isinstance(raw_id, str):
        if raw_id.strip() and encodable(raw_id):
            return None
        if not encodable(raw_id):
            return f"'{field}' is not valid Unicode: {raw_id!r:.80}"
        return f"'{field}' is empty or whitespace only; it must be a non-empty string or an integer"
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        return None
    return f"'{field}' must be a non-empty string or an integer, got {raw_id!r:.80}"


def text_problem(text: Any, field: str, max_text_bytes: int) -> tuple[str, str] | None:
    """Why a record's text value cannot be a document's text, or None when it can.

    Args:
        text: The value of the text field, ``MISSING`` when the record has none.
        field: The input name of the text field, for the message.
        max_text_bytes: Longer texts (UTF-8 bytes) are rejected.

    Returns:
        ``(reason, detail)`` of the rejection, or None.
    """
    if text is MISSING or text is None:
        return RejectReason.MISSING_TEXT, (f"no '{field}' field" if text is MISSING else f"'{field}' is null")
    if not isinstance(text, str):
        return RejectReason.INVALID_TEXT_TYPE, f"'{field}' is a {type(text).__name__}, not a string"
    if text.isascii():
        # One byte per character; skips encoding a copy of every ASCII text.
        nbytes = len(text)
    else:
        try:
            nbytes = len(text.encode("utf-8"))
        except UnicodeEncodeError as error:
            # JSON can spell lone surrogates (\ud800) that no UTF-8 encoder accepts.
            return RejectReason.INVALID_UTF8, f"text is not valid Unicode: {error.reason} at {error.start}"
    if nbytes > max_text_bytes:
        return RejectReason.TEXT_TOO_LONG, f"text is {nbytes} bytes; limit is {max_text_bytes}"
    if not text.strip():
        return RejectReason.EMPTY_TEXT, "text is empty or whitespace only"
    return None

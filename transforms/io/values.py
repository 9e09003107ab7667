"""Input field values: the conversions and checks both validation paths share (Beam-free).

A record's fields are checked either one record at a time
(``validate.BatchBuilder``) or a column at a time (``columnar``); both use the
definitions here, so a record gets the same document or the same rejection
reason whichever path saw it.
"""

from __future__ import annotations

import datetime as dt
import json
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
# Microseconds of datetime.min and datetime.max (UTC); Arrow timestamps outside
# this range cannot become Python datetimes, so the per-row path fails on them.
MIN_MICROS = -62135596800 * 1_000_000
MAX_MICROS = 253402300799 * 1_000_000 + 999_999
MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}
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


def to_micros(value: Any) -> int | None:
    """Microseconds since the epoch (UTC) from an ISO-8601 string, epoch seconds or datetime."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"timestamp must be an ISO-8601 string or epoch seconds, got {value!r}")
    if isinstance(value, (int, float)):
        return int(round(value * 1_000_000))
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, dt.date):
        return to_micros(dt.datetime(value.year, value.month, value.day))
    raise TypeError(f"timestamp must be an ISO-8601 string or epoch seconds, got {value!r:.80}")


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

"""Arrow schemas of the rows that move through and out of a corpusmill job.

Documents travel between steps as ``pyarrow.RecordBatch`` objects with
``DOCUMENT_BATCH_SCHEMA``: the public ``DOCUMENT_SCHEMA`` plus two internal
columns that say where each record came from. The internal columns make every
decision that depends on input order (which of two records with the same id
is kept, how rows sort inside a shard) independent of how Beam bundled the
work; they are dropped before anything is written.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("timestamp", TIMESTAMP_TYPE),
        # Input fields corpusmill does not model, as a JSON object with sorted keys.
        pa.field("meta", pa.string()),
    ]
)

# Where a record came from: the input file's path relative to the input root,
# and the record's 0-based index in that file (line, row or file ordinal).
ORIGIN_FILE = "_origin_file"
ORIGIN_INDEX = "_origin_index"

# The documents once the order stage placed them: ``position`` is public (the
# global order, 0..n-1); ``_path_start`` is internal: True where a run of
# documents joined by kNN edges begins (``decompose.over: order`` cuts there).
ORDERED_DOCUMENT_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("position", pa.int64(), nullable=False))
PATH_START = "_path_start"

DOCUMENT_BATCH_SCHEMA = DOCUMENT_SCHEMA.append(
    pa.field(ORIGIN_FILE, pa.string(), nullable=False)
).append(pa.field(ORIGIN_INDEX, pa.int64(), nullable=False))

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        # Human-readable place in the source: "line 12", "row 40", "row group 3", "file".
        pa.field("locator", pa.string(), nullable=False),
        # 0-based record index in the source file; null when the whole file or a
        # byte range is rejected.
        pa.field("record_index", pa.int64()),
        pa.field("id", pa.string()),
        pa.field("detail", pa.string(), nullable=False),
        # At most EXCERPT_BYTES of the offending record, decoded with replacement.
        pa.field("excerpt", pa.string(), nullable=False),
    ]
)

EXCERPT_BYTES = 1024


class RejectReason:
    """The reasons a record can be rejected; each is also a Beam counter name."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TEXT = "missing_text"
    EMPTY_TEXT = "empty_text"
    INVALID_TEXT_TYPE = "invalid_text_type"
    INVALID_UTF8 = "invalid_utf8"
    TEXT_TOO_LONG = "text_too_long"
    INVALID_ID = "invalid_id"
    DUPLICATE_ID = "duplicate_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_FIELD_TYPE = "invalid_field_type"
    UNREADABLE_FILE = "unreadable_file"
    TRUNCATED_FILE = "truncated_file"
    CORRUPT_ROW_GROUP = "corrupt_row_group"
    # A file whose own checksum fails (gzip CRC, zstd frame checksum): its
    # records are not kept as if clean; the detail gives the byte offset.
    CORRUPT_FILE = "corrupt_file"
    # A compressed file with no bytes at all (a failed upload).
    EMPTY_FILE = "empty_file"
    # A path that matched the input pattern but is not a regular file (a FIFO,
    # a socket, a device), or a folder that cannot be listed.
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    UNREADABLE_DIRECTORY = "unreadable_directory"

    ALL = (
        MALFORMED_JSON,
        NOT_AN_OBJECT,
        MISSING_TEXT,
        EMPTY_TEXT,
        INVALID_TEXT_TYPE,
        INVALID_UTF8,
        TEXT_TOO_LONG,
        INVALID_ID,
        DUPLICATE_ID,
        INVALID_TIMESTAMP,
        INVALID_FIELD_TYPE,
        UNREADABLE_FILE,
        CORRUPT_FILE,
        EMPTY_FILE,
        NOT_A_REGULAR_FILE,
        UNREADABLE_DIRECTORY,
        TRUNCATED_FILE,
        CORRUPT_ROW_GROUP,
    )


def excerpt(raw: bytes | str | None) -> str:
    """Returns at most EXCERPT_BYTES of ``raw`` as text, never failing on bad bytes."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    return raw[:EXCERPT_BYTES].decode("utf-8", errors="replace")


def public_documents(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """Drops the internal origin columns, leaving ``DOCUMENT_SCHEMA``."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    return table.select(DOCUMENT_SCHEMA.names).cast(DOCUMENT_SCHEMA)


# One row per document removed by deduplication. ``cluster_id`` is the smallest
# id in the cluster (stable whatever the keep policy), ``representative_id`` the
# document kept in its place. ``kind`` is "exact" when the normalised texts of
# the document and its representative are identical (similarity 1.0), else
# "near"; ``similarity`` is then the MinHash estimate of the Jaccard similarity
# of their shingle sets.
DUPLICATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("cluster_id", pa.string(), nullable=False),
        pa.field("representative_id", pa.string(), nullable=False),
        pa.field("similarity", pa.float64(), nullable=False),
    ]
)


class DuplicateKind:
    """The kinds of duplicate; each is also part of a Beam counter name."""

    EXACT = "exact"
    NEAR = "near"
    SEMANTIC = "semantic"
    ALL = (EXACT, NEAR)

"""One record per document id: later repeats become dead letters (Beam-free)."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusmill.schemas.documents import ORIGIN_FILE, ORIGIN_INDEX, REJECTED_SCHEMA, RejectReason, excerpt
from corpusmill.transforms.common import sort_table

# The decimal strings an integer id becomes (str(int)): the only ids where an
# integer and a string in the input can have collided.
_INTEGER_ID = re.compile(r"-?(?:0|[1-9][0-9]*)")


def duplicate_detail(doc_id: str, kept_file: str, kept_index: int) -> str:
    """The detail of a duplicate_id rejection; says so when the id may have come from an integer.

    Integer ids become their decimal string, so the integer 5 and the string
    "5" are one id. The documents no longer say which form a record used, so
    the note goes on every id that is the decimal string of an integer.
    """
    detail = f"id {doc_id!r} first seen in {kept_file} record {kept_index}"
    if _INTEGER_ID.fullmatch(doc_id):
        detail += (f"; integer ids are stored as their decimal string, so the integer {doc_id} "
                   f"and the string {doc_id!r} are the same id")
    return detail


def resolve_duplicate_ids(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Keeps the first record of each id in (origin file, origin index) order.

    Args:
        table: Documents with origin columns; all records of an id must be here
            (they are: a shard holds every record whose id hashes to it).

    Returns:
        (unique documents sorted by id, rejected rows for the later repeats).
    """
    table = sort_table(table, ["id", ORIGIN_FILE, ORIGIN_INDEX])
    ids = table.column("id")
    if table.num_rows < 2:
        return table, REJECTED_SCHEMA.empty_table()
    repeat = pc.equal(ids.slice(1), ids.slice(0, table.num_rows - 1)).to_numpy(zero_copy_only=False)
    if not repeat.any():
        return table, REJECTED_SCHEMA.empty_table()
    is_repeat = np.concatenate([[False], repeat])
    dupes = table.filter(pa.array(is_repeat))
    firsts = table.filter(pa.array(~is_repeat))
    first_origin = {}
    for doc_id, file, index in zip(firsts.column("id").to_pylist(), firsts.column(ORIGIN_FILE).to_pylist(),
                                   firsts.column(ORIGIN_INDEX).to_pylist()):
        first_origin[doc_id] = (file, index)
    rows = {name: [] for name in REJECTED_SCHEMA.names}
    for doc_id, file, index, text in zip(dupes.column("id").to_pylist(), dupes.column(ORIGIN_FILE).to_pylist(),
                                         dupes.column(ORIGIN_INDEX).to_pylist(), dupes.column("text").to_pylist()):
        kept_file, kept_index = first_origin[doc_id]
        rows["reason"].append(RejectReason.DUPLICATE_ID)
        rows["source"].append(file)
        rows["locator"].append(f"record {index}")
        rows["record_index"].append(index)
        rows["id"].append(doc_id)
        rows["detail"].append(excerpt(duplicate_detail(doc_id, kept_file, kept_index)))
        rows["excerpt"].append(excerpt(text))
    return firsts, pa.Table.from_pydict(rows, schema=REJECTED_SCHEMA)

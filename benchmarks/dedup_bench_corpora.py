"""Dedup benchmark: the corpora, linux-doc and a near-copy corpus built for recall just above the threshold.

* ``linux-doc-x1`` / ``linux-doc-x4``: linux-doc 6.1 + 6.12 (``corpusmill.jobs.linux_doc``),
  optionally repeated under fresh ids. Most of its true pairs are exact copies or
  have J > 0.95, so it hardly tests the banding near the threshold.
* ``html-docs-near`` (issue 12.1): real documentation pages (Debian
  ``python3.11-doc`` and ``postgresql-doc-15``, one document per page, the text of
  ``order_bench_corpora.html_docs_records``), exact copies among them dropped, plus
  near copies made by word-level edits. Every page of at least ``MIN_WORDS`` words
  gets one near copy, every third such page a second one. Each copy aims at an
  exact Jaccard (over the dedup stage's word 5-gram shingle hashes) drawn from
  [0.80, 0.85) for half of the copies and from [0.75, 0.80) or [0.85, 0.90] for a
  quarter each, so most true pairs sit just above the 0.8 threshold and a quarter
  of the copies are near misses that must not be merged. An edit replaces a word
  with a word of the corpus, deletes one, inserts one or swaps two neighbours,
  keeping the page's own whitespace; a copy takes the first ``k`` edits of its
  own seeded edit sequence, ``k`` found by bisection on the exact Jaccard.

    apt-get install -y python3.11-doc postgresql-doc-15

The corpus is written once to ``DATA_DIR/html-docs-near.parquet`` with a sidecar
``.copies.json`` (every copy: its original, target and achieved Jaccard, edits),
and rebuilt when the builder's parameters change.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

NEAR_CORPUS = "html-docs-near"
MIN_WORDS = 300
SEED = 12
# (low, high, share of the copies): most true pairs just above 0.8, a quarter of near misses below it.
TARGET_BANDS = ((0.80, 0.85, 0.50), (0.75, 0.80, 0.25), (0.85, 0.90, 0.25))
SECOND_COPY_EVERY = 3
BUILDER_VERSION = 1

_TOKENS = re.compile(r"(\s+)")


def _words_and_gaps(text: str) -> tuple[list[str], list[str]]:
    """The words of a text and the whitespace after each (the last one's may be empty)."""
    parts = _TOKENS.split(text.strip())
    words, gaps = parts[0::2], parts[1::2] + [""]
    return words, gaps


def _edit_sequence(num_words: int, vocabulary: list[str], rng: np.random.Generator, count: int) -> list[tuple]:
    """``count`` word-level edits, each (kind, position fraction, word): positions scale to the current length."""
    kinds = rng.integers(0, 4, size=count)
    positions = rng.random(count)
    words = rng.integers(0, len(vocabulary), size=count)
    return [(int(k), float(p), vocabulary[int(w)]) for k, p, w in zip(kinds, positions, words)]


def apply_edits(words: list[str], gaps: list[str], edits: list[tuple]) -> str:
    """The text after ``edits`` (replace, delete, insert, swap), whitespace kept where words stay."""
    words, gaps = list(words), list(gaps)
    for kind, fraction, new_word in edits:
        i = min(int(fraction * len(words)), len(words) - 1)
        if kind == 0:
            words[i] = new_word
        elif kind == 1 and len(words) > 1:
            del words[i], gaps[i]
        elif kind == 2:
            words.insert(i, new_word)
            gaps.insert(i, " ")
        elif i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
    return "".join(w + g for w, g in zip(words, gaps)).strip()


def _targets(count: int, rng: np.random.Generator) -> np.ndarray:
    """Target Jaccard per copy, drawn from ``TARGET_BANDS``."""
    shares = np.array([share for _, _, share in TARGET_BANDS])
    band = rng.choice(len(TARGET_BANDS), size=count, p=shares / shares.sum())
    low = np.array([lo for lo, _, _ in TARGET_BANDS])[band]
    high = np.array([hi for _, hi, _ in TARGET_BANDS])[band]
    return low + rng.random(count) * (high - low)


def _jaccard_to_originals(original_sets, texts: list[str]) -> np.ndarray:
    """Exact Jaccard of each text's shingle-hash set to its original's (row-aligned)."""
    from corpusmill.schemas.config import NormalizeConfig
    from corpusmill.transforms.dedup import lsh, minhash
    from corpusmill.transforms.dedup.normalize import normalize_texts

    values, offsets = minhash.shingle_sets(normalize_texts(texts, NormalizeConfig()), 5)
    both = lsh.csr_concat([original_sets, (values, offsets)])
    n = len(texts)
    return lsh.jaccard_pairs(*both, np.arange(n), np.arange(n, 2 * n))


def near_copies(originals: list[dict], seed: int = SEED) -> tuple[list[dict], list[dict[str, Any]]]:
    """Near copies of the long originals and their facts (original, target, achieved Jaccard, edits).

    Args:
        originals: Records with ``id``, ``text``, ``source``.
        seed: Seed of the choice of copies, targets and edits.

    Returns:
        ``(records, facts)``: the copies as records (id ``<original id>#near<c>``), and one dict per copy.
    """
    from corpusmill.schemas.config import NormalizeConfig
    from corpusmill.transforms.dedup import minhash
    from corpusmill.transforms.dedup.normalize import normalize_texts

    rng = np.random.default_rng(seed)
    split = [_words_and_gaps(r["text"]) for r in originals]
    vocabulary = sorted({w for words, _ in split for w in words if w.isalpha() and 3 <= len(w) <= 12})
    long_enough = [i for i, (words, _) in enumerate(split) if len(words) >= MIN_WORDS]
    jobs = [(i, 1) for i in long_enough] + [(i, 2) for i in long_enough[::SECOND_COPY_EVERY]]
    targets = _targets(len(jobs), rng)
    edits = [_edit_sequence(len(split[i][0]), vocabulary, np.random.default_rng([seed, i, c]),
                            max(8, len(split[i][0]) // 8)) for i, c in jobs]
    original_sets = minhash.shingle_sets(normalize_texts([originals[i]["text"] for i, _ in jobs],
                                                         NormalizeConfig()), 5)
    # Bisection on the number of edits: low keeps J >= target, high takes it below.
    low = np.zeros(len(jobs), dtype=np.int64)
    high = np.array([len(e) for e in edits], dtype=np.int64)
    while np.any(high - low > 1):
        middle = (low + high) // 2
        texts = [apply_edits(*split[i], edits[j][: middle[j]]) for j, (i, _) in enumerate(jobs)]
        above = _jaccard_to_originals(original_sets, texts) >= targets
        active = high - low > 1
        low = np.where(active & above, middle, low)
        high = np.where(active & ~above, middle, high)
    # Of the last two counts, the one whose Jaccard is closer to the target.
    texts_low = [apply_edits(*split[i], edits[j][: low[j]]) for j, (i, _) in enumerate(jobs)]
    texts_high = [apply_edits(*split[i], edits[j][: high[j]]) for j, (i, _) in enumerate(jobs)]
    j_low, j_high = _jaccard_to_originals(original_sets, texts_low), _jaccard_to_originals(original_sets, texts_high)
    take_high = (np.abs(j_high - targets) < np.abs(j_low - targets)) & (high > 0)
    records, facts = [], []
    for j, (i, c) in enumerate(jobs):
        text = texts_high[j] if take_high[j] else texts_low[j]
        original = originals[i]
        records.append({"id": f"{original['id']}#near{c}", "text": text, "source": original["source"] + "-near"})
        facts.append({"id": records[-1]["id"], "original": original["id"], "target": round(float(targets[j]), 4),
                      "jaccard": round(float(j_high[j] if take_high[j] else j_low[j]), 6),
                      "edits": int(high[j] if take_high[j] else low[j]), "words": len(split[i][0])})
    return records, facts


def _distinct_originals() -> list[dict]:
    """The documentation pages, without pages whose normalised text repeats an earlier one's."""
    from order_bench_corpora import html_docs_records

    from corpusmill.schemas.config import NormalizeConfig
    from corpusmill.transforms.dedup.normalize import normalize_texts

    records = html_docs_records()
    seen, distinct = set(), []
    for record, normalized in zip(records, normalize_texts([r["text"] for r in records], NormalizeConfig())):
        digest = hashlib.sha256(normalized.encode()).digest()
        if digest not in seen:
            seen.add(digest)
            distinct.append(record)
    return distinct


def _builder_digest() -> str:
    """Changes whenever the corpus would come out differently."""
    source = Path(__file__).read_bytes()
    return hashlib.sha256(source + json.dumps([BUILDER_VERSION, SEED, MIN_WORDS]).encode()).hexdigest()[:16]


def ensure_near_corpus(data_dir: Path) -> tuple[Path, Path]:
    """Builds (once) the near-copy corpus; returns the Parquet path and the sidecar of copy facts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = data_dir / f"{NEAR_CORPUS}.parquet"
    sidecar = path.with_suffix(".copies.json")
    digest = _builder_digest()
    if path.exists() and sidecar.exists() and json.loads(sidecar.read_text()).get("builder") == digest:
        return path, sidecar
    originals = _distinct_originals()
    copies, facts = near_copies(originals)
    rows = sorted(originals + copies, key=lambda r: r["id"])
    data_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{"id": r["id"], "text": r["text"], "source": r["source"]} for r in rows])
    pq.write_table(table, path.with_suffix(".tmp"), compression="zstd")
    path.with_suffix(".tmp").rename(path)
    sidecar.write_text(json.dumps({"builder": digest, "originals": len(originals), "copies": facts}, indent=1))
    return path, sidecar


def copy_facts(sidecar: Path) -> list[dict[str, Any]]:
    """The copies of the near-copy corpus: id, original, target and achieved Jaccard, edits."""
    return json.loads(sidecar.read_text())["copies"]


def ensure_corpus(name: str, data_dir: Path) -> tuple[Path, Path | None]:
    """The Parquet file of a named corpus (``linux-doc-x<copies>`` or ``html-docs-near``), and its sidecar if any."""
    if name == NEAR_CORPUS:
        return ensure_near_corpus(data_dir)
    match = re.fullmatch(r"linux-doc-x(\d+)", name)
    if not match:
        raise ValueError(f"unknown corpus {name!r}; allowed: linux-doc-x<copies>, {NEAR_CORPUS}")
    from corpusmill.jobs.linux_doc import ensure_corpus as ensure_linux_doc

    return ensure_linux_doc(data_dir, copies=int(match.group(1)), formats=("parquet",))["parquet"].resolve(), None

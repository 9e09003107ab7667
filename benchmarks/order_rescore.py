"""What exact edge weights would give the order: the stage's kNN candidates re-scored by sparse TF-IDF.

The default embedding (lexical: hashed TF-IDF projected to 256 dimensions by a
fitted PCA) keeps about a quarter of the sparse vectors' variance, so its
cosines are noisy estimates of the sparse ones. This probe keeps the stage's
candidates (exact kNN of the embedding, the first ``c`` neighbours), re-scores
each candidate link by the exact cosine of the embedder's own sparse vectors
(``LexicalEmbedder.tfidf``, the vectors the projection approximates), keeps the
best 20, and orders that graph with ``paper`` and ``improved`` (local search
still on the dense vectors); and, with ``--truncate``, by sparse rows cut to
their ``m`` largest weights (what a partition could be sent cheaply). Quality is the yardstick of ``order_bench.py``
(of top-1). It measures a possible change; the stage does not re-score.

Usage:
    python benchmarks/order_rescore.py [--data DIR] [--corpora linux-doc html-docs] [--candidates 20 40 80]
        [--truncate 32 64 128 256]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from order_bench import K, PROJECTION_SAMPLE, Yardstick, _normalised_csr  # noqa: E402
from order_bench_corpora import ensure_snapshots, read_kept  # noqa: E402


TRUNCATED_CANDIDATES = 40  # candidates of the rows re-scored by truncated sparse vectors


def rescored(neighbors: np.ndarray, sparse, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's candidates re-scored by sparse cosine, the best ``k`` kept (ties: the embedding's order)."""
    n, c = neighbors.shape
    rows = np.repeat(np.arange(n), c)
    cols = neighbors.ravel()
    scores = np.full(cols.shape, -np.inf)
    valid = cols >= 0
    scores[valid] = np.asarray(sparse[rows[valid]].multiply(sparse[cols[valid]]).sum(axis=1)).ravel()
    scores = scores.reshape(n, c)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(neighbors, best, 1), np.take_along_axis(scores, best, 1).astype(np.float32)


def largest(indptr: np.ndarray, buckets: np.ndarray, weights: np.ndarray, m: int):
    """The CSR rows cut to each row's ``m`` largest weights (bucket order kept)."""
    keep = np.zeros(weights.size, dtype=bool)
    for start, end in zip(indptr[:-1], indptr[1:]):
        if end - start <= m:
            keep[start:end] = True
        else:
            keep[start + np.argpartition(-weights[start:end], m)[:m]] = True
    counts = np.minimum(np.diff(indptr), m)
    return np.concatenate([[0], np.cumsum(counts)]), buckets[keep], weights[keep]


def measure(ids: list[str], texts: list[str], candidates: list[int], truncate: list[int]) -> dict:
    from corpusmill.transforms.common import document_keys
    from corpusmill.transforms.order.knn_graph import exact_knn
    from corpusmill.transforms.order.lexical_fit import fit_lexical_embedder
    from corpusmill.transforms.order.traversal import paper_order, traverse

    yardstick = Yardstick(texts)
    embedder = fit_lexical_embedder(texts, document_keys(list(ids)), projection_sample=PROJECTION_SAMPLE)
    dense = embedder.embed(texts)
    indptr, buckets, weights = embedder.tfidf(texts)
    width = int(buckets.max()) + 1 if buckets.size else 1
    sparse = _normalised_csr(indptr, buckets, weights, width)

    def orders(neighbors, scores) -> dict:
        return {"paper": yardstick.figures(paper_order(neighbors, scores).order),
                "improved": yardstick.figures(traverse(neighbors, scores, dense, mode="improved").order)}

    neighbors, scores = exact_knn(dense, max([*candidates, TRUNCATED_CANDIDATES]))
    rows = {"embedding, k = 20 (the stage)": orders(neighbors[:, :K], scores[:, :K])}
    for c in candidates:
        rows[f"{c} candidates re-scored, best {K} kept"] = orders(*rescored(neighbors[:, :c], sparse, K))
    c = TRUNCATED_CANDIDATES
    for m in truncate:
        cut = _normalised_csr(*largest(indptr, buckets, weights, m), width)
        rows[f"{c} candidates re-scored by the {m} largest weights"] = orders(*rescored(neighbors[:, :c], cut, K))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("benchmarks/.data/order"))
    parser.add_argument("--corpora", nargs="+", default=["linux-doc", "html-docs"])
    parser.add_argument("--candidates", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--truncate", type=int, nargs="*", default=[32, 64, 128, 256],
                        help="also re-score 40 candidates by sparse rows cut to their m largest weights")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/order_rescore.json"))
    args = parser.parse_args(argv)
    snapshots = ensure_snapshots(args.data)
    results = {}
    for name in args.corpora:
        ids, texts = read_kept(snapshots[name])
        results[name] = measure(ids, texts, args.candidates, args.truncate)
        for label, row in results[name].items():
            print(f"{name:<10} {label:<36} paper {row['paper']['of_top1']:.3f} ({row['paper']['over_natural']:.2f}x) "
                  f"improved {row['improved']['of_top1']:.3f} ({row['improved']['over_natural']:.2f}x)", flush=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Order stage kernels: embedding, kNN graph, partitions, traversal and quality, on two corpora.

Corpora (``order_bench_corpora.py``; built once, outside the repository, under
``--data``): linux-doc 6.1 + 6.12 and HTML documentation (Python 3.11 and
PostgreSQL 15), each after ``corpusmill run``'s dedup, and 2x / 4x versions of
each with word-level perturbed copies.

Sections:

* ``variants`` (1x): lexical embedder variants side by side (the sparse
  projection of v1, wider sparse ones, the fitted PCA projection at 256 and
  512 dimensions, fitted on all documents as the stage fits a small corpus, and
  on a random half with recall counted on the other half, as a large corpus
  gets it). Recall@10 of each one's exact kNN against the exact kNN of the
  sparse hashed TF-IDF vectors it approximates (``LexicalEmbedder.tfidf``) and
  against the yardstick's, embedding docs/s, exact kNN time, bytes per
  document, and the yardstick's quality of the ``paper`` and ``improved``
  orders of its exact graph.
* ``scales`` (1x, 2x, 4x), with the default embedder fitted as the stage fits
  it (``lexical_fit.fit_lexical_embedder``: ``LexicalConfig()``, projection on
  a key-chosen sample of up to ``PROJECTION_SAMPLE`` documents): IDF, fit and
  embedding time, exact and partitioned (``--partitions`` forced, ``nprobe``
  3) kNN build time, recall@10 of the partitioned graph against the exact one,
  partition refinement, and traversal time of ``paper`` and ``improved`` on the
  single-partition graph and on the partitions. At 1x, the quality figures of
  all four orders: ``quality.ordering_quality`` in the embedding's own space,
  and the yardstick's.
* ``kernels`` (largest scale): ``kernels_in_one_process``, every kernel of the
  stage chained in one plain Python process as the stage chains them, timed
  per phase, single partition and partitioned (``order_stage_bench.py`` holds
  the Beam stage to within 2x of the single-partition chain).

The yardstick is independent of the stage's embedding: scikit-learn
``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)`` over the
kept documents; its figures are the mean cosine of adjacent documents in the
order, that over the mean top-1 neighbour similarity (``of_top1``, exact
top-1 under the same TF-IDF) and over the natural order's (``over_natural``,
documents sorted by id). Only 1x has quality figures: with near-duplicate
copies, adjacent copies dominate any order.

Every timing is the median of ``--repeats`` runs in this process after one
untimed warm-up run (numba compilation); faiss runs on ``--threads`` threads
(default 1, so kNN times are per core), numba kernels and BLAS on one. The machine is
shared (2 cores), so expect noise. Needs scikit-learn (the yardstick).

Targets (issue 11, linux-doc 1x, lexical embedder): yardstick adjacent cosine
>= 0.75 of top-1 and >= 2.0x natural; 16 partitions lose at most 3% of the
single partition's adjacent cosine; recall@10 of the partitioned graph >=
0.95; traversal time linear in documents; embedding >= 2,000 docs/s per core.

Usage:
    python benchmarks/order_bench.py [--repeats 3] [--copies 1 2 4]
        [--corpora linux-doc html-docs] [--sections variants scales kernels]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

# One BLAS thread (before numpy loads): the times are per core, and OpenBLAS's
# threaded LAPACK beside other work on a shared machine took the projection fit
# from 4 s to 20 s (a 384 x 384 eigh from 0.03 s to 2 s).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from order_bench_corpora import ensure_snapshots, read_kept, scaled_corpus  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "order_bench.json"
DEFAULT_DATA = Path("/work/bench-data")
# The stage's defaults (schemas.config.OrderConfig).
K = 20                      # order.knn.k
NPROBE = 3                  # order.knn.nprobe
RECALL_K = 10
PROJECTION_SAMPLE = 16384   # order.embed.projection_sample: documents the projection is fitted on
TARGETS = {"of_top1": 0.75, "over_natural": 2.0, "partition_loss": 0.03, "recall": 0.95,
           "embed_docs_per_second": 2000}


# ---------------------------------------------------------------------------
# Timing and the yardstick.


def timed(function: Callable[[], Any], repeats: int, warm_up: bool = True) -> tuple[float, list[float], Any]:
    """(median seconds, every run's seconds, the last result) of ``repeats`` runs, after one untimed run.

    The untimed run loads the numba kernels; once they are loaded in this
    process, ``warm_up=False`` saves its time.
    """
    if warm_up:
        function()
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), [round(s, 4) for s in seconds], result


def _normalised_csr(indptr, columns, values, width):
    import scipy.sparse as sp

    matrix = sp.csr_matrix((values, columns, indptr), shape=(indptr.size - 1, width))
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix


def sparse_top_k(matrix, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of every row of a sparse L2-normalised matrix (self excluded)."""
    n = matrix.shape[0]
    neighbors, scores = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
    transposed = matrix.T.tocsc()
    for start in range(0, n, chunk):
        block = (matrix[start:start + chunk] @ transposed).toarray()
        block[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = -np.inf
        top = np.argpartition(-block, k, axis=1)[:, :k]
        top_scores = np.take_along_axis(block, top, axis=1)
        by_score = np.argsort(-top_scores, axis=1, kind="stable")
        neighbors[start:start + chunk] = np.take_along_axis(top, by_score, axis=1)
        scores[start:start + chunk] = np.take_along_axis(top_scores, by_score, axis=1)
    return neighbors, scores


class Yardstick:
    """scikit-learn TF-IDF (1-2-grams, sublinear TF, min_df 2) of the documents, and its exact top-k."""

    def __init__(self, texts: Sequence[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.matrix = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                                      dtype=np.float64).fit_transform(texts).tocsr()
        self.neighbors, self.scores = sparse_top_k(self.matrix, K)
        self.top1 = float(self.scores[:, 0].mean())
        self.natural = self.adjacent(np.arange(len(texts)))

    def adjacent(self, order: np.ndarray) -> float:
        from corpusmill.transforms.order.quality import adjacent_similarities

        return float(adjacent_similarities(self.matrix, order).mean())

    def figures(self, order: np.ndarray) -> dict[str, float]:
        adjacent = self.adjacent(order)
        return {"adjacent_cosine": adjacent, "of_top1": adjacent / self.top1,
                "over_natural": adjacent / self.natural}


# ---------------------------------------------------------------------------
# The stage's kernels.


def fitted_embedder(texts: Sequence[str], config, fit_rows: np.ndarray):
    """An embedder of ``config``: IDF over every document, projection fitted on the rows ``fit_rows``."""
    from corpusmill.transforms.order.lexical import Idf, LexicalEmbedder

    return LexicalEmbedder(config, Idf.fit(texts, config)).fit_projection([texts[i] for i in fit_rows])


def partitioned_order(embeddings: np.ndarray, graph, mode: str, num_partitions: int):
    """The stage's partitioned path after the graph: refined partitions, partition order, traversal."""
    from corpusmill.transforms.order import partitions, traversal

    primary = partitions.refine_partitions(graph.neighbors, graph.scores, graph.assignment.primary, num_partitions)
    partition_order = traversal.order_partitions(graph.centroids, mode=mode)
    return traversal.partitioned_traverse(graph.neighbors, graph.scores, embeddings, primary, partition_order,
                                          mode=mode)


def kernels_in_one_process(ids: Sequence[str], texts: Sequence[str], *, k: int = K, num_partitions: int = 1,
                           nprobe: int = NPROBE, mode: str = "improved",
                           projection_sample: int = PROJECTION_SAMPLE, seed: int = 0) -> dict[str, Any]:
    """Every kernel of the order stage chained in one plain Python process, timed per phase.

    As the stage does it: rows in document-key order, the embedder fitted by
    ``lexical_fit.fit_lexical_embedder`` (IDF over every document, projection
    over a key-chosen sample), embedding, the kNN graph (exact for one
    partition, else partitioned with ``nprobe``, then refined partitions), the
    traversal, positions. ``benchmarks/order_stage_bench.py`` holds the Beam
    stage to within 2x of the same chain (single partition, with contexts).

    Returns:
        ``seconds`` (total), ``phases`` (seconds per step) and ``position``
        (int64 per document, in the input order).
    """
    from corpusmill.transforms.common import document_keys
    from corpusmill.transforms.order import knn_graph, traversal
    from corpusmill.transforms.order.lexical_fit import fit_lexical_embedder

    phases, started = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        phases[name] = now - started
        started = now

    keys = document_keys(list(ids))
    by_key = np.argsort(keys, kind="stable")
    embedder = fit_lexical_embedder(texts, keys, projection_sample=projection_sample)
    lap("fit")
    ordered = [texts[i] for i in by_key]
    embeddings = np.concatenate([embedder.embed(ordered[i:i + 4096]) for i in range(0, len(ordered), 4096)])
    lap("embed")
    if num_partitions == 1:
        neighbors, scores = knn_graph.exact_knn(embeddings, k)
        lap("knn")
        result = traversal.traverse(neighbors, scores, embeddings, mode=mode)
    else:
        graph = knn_graph.partitioned_knn(embeddings, k, num_partitions, nprobe, seed=seed)
        lap("knn")
        result = partitioned_order(embeddings, graph, mode, num_partitions)
    lap("traverse")
    position = np.empty(len(texts), dtype=np.int64)
    position[by_key[result.order]] = np.arange(len(texts))
    lap("positions")
    return {"seconds": sum(phases.values()), "phases": phases, "position": position}


# ---------------------------------------------------------------------------
# Sections.


def exact_tfidf_graph(embedder, texts: Sequence[str], k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the sparse hashed TF-IDF vectors the embedder approximates."""
    indptr, buckets, weights = embedder.tfidf(texts)
    return sparse_top_k(_normalised_csr(indptr, buckets, weights, 1 << embedder.config.hash_bits), k)


def measure_variants(texts: Sequence[str], yardstick: Yardstick, repeats: int,
                     num_partitions: int) -> list[dict[str, Any]]:
    """Embedder variants at 1x: fidelity to exact TF-IDF kNN, cost, and the orders they give."""
    from corpusmill.transforms.order import knn_graph, traversal
    from corpusmill.transforms.order.lexical import Idf, LexicalConfig, LexicalEmbedder

    n = len(texts)
    half = np.zeros(n, dtype=bool)
    half[np.random.default_rng(1).choice(n, n // 2, replace=False)] = True
    oracle_neighbors, oracle_scores = exact_tfidf_graph(LexicalEmbedder(LexicalConfig(), Idf.fit(texts)), texts)
    oracle = oracle_neighbors[:, :RECALL_K]
    # Ceilings: Algorithm 1 on the exact sparse graphs (no dense embedding for ``improved``).
    ceilings = {"exact hashed TF-IDF graph (the oracle)": (oracle_neighbors, oracle_scores),
                "the yardstick's own exact graph": (yardstick.neighbors, yardstick.scores)}
    rows = [{"variant": name, "paper": yardstick.figures(traversal.traverse(*graph, mode="paper").order)}
            for name, graph in ceilings.items()]
    variants = [
        ("v1 default: sparse 256, min_df 1", LexicalConfig(min_df=1), None),
        ("sparse 256", LexicalConfig(), None),
        ("sparse 1024", LexicalConfig(dim=1024), None),
        ("pca 256, fit on all", LexicalConfig(dim=256), "all"),
        ("pca 512, fit on all", LexicalConfig(dim=512), "all"),
        ("pca 256, fit on half", LexicalConfig(dim=256), "half"),
        ("pca 512, fit on half", LexicalConfig(dim=512), "half"),
    ]
    for name, config, fit in variants:
        started = time.perf_counter()
        if fit is None:
            embedder = LexicalEmbedder(config, Idf.fit(texts, config))
        else:
            embedder = fitted_embedder(texts, config, fit_rows=np.arange(n) if fit == "all" else np.flatnonzero(half))
        setup_seconds = time.perf_counter() - started
        embed_seconds, _, embeddings = timed(lambda: embedder.embed(texts), repeats)
        knn_seconds, _, (neighbors, scores) = timed(lambda: knn_graph.exact_knn(embeddings, K), repeats)
        partitioned = knn_graph.partitioned_knn(embeddings, K, num_partitions, NPROBE, seed=0)
        held_out = ~half if fit == "half" else np.ones(n, dtype=bool)
        row = {
            "variant": name, "dim": config.dim, "fitted": fit is not None, "min_df": config.min_df,
            "setup_seconds": setup_seconds, "embed_docs_per_second": n / embed_seconds,
            "exact_knn_seconds": knn_seconds, "bytes_per_document": config.dim * 4,
            "recall_rows": "held-out half" if fit == "half" else "all",
            "recall_vs_exact_tfidf": knn_graph.recall_at_k(neighbors[held_out, :RECALL_K], oracle[held_out]),
            "recall_vs_yardstick": knn_graph.recall_at_k(neighbors[held_out, :RECALL_K],
                                                         yardstick.neighbors[held_out, :RECALL_K]),
            "partitioned_recall_vs_exact": knn_graph.recall_at_k(partitioned.neighbors[:, :RECALL_K],
                                                                 neighbors[:, :RECALL_K]),
        }
        for mode in ("paper", "improved"):
            row[mode] = yardstick.figures(traversal.traverse(neighbors, scores, embeddings, mode=mode).order)
        rows.append(row)
        print(f"  variant {name}: recall {row['recall_vs_exact_tfidf']:.3f} / {row['recall_vs_yardstick']:.3f}, "
              f"improved {row['improved']['of_top1']:.3f} of top-1, {row['embed_docs_per_second']:.0f} docs/s",
              flush=True)
    return rows


def measure_scale(ids: Sequence[str], texts: Sequence[str], copies: int, repeats: int, num_partitions: int,
                  yardstick: Yardstick | None) -> dict[str, Any]:
    """The default embedder (fitted as the stage fits it) and every kernel after it on one corpus size.

    Rows stay in id order (the natural order); the quality figures need a yardstick.
    """
    from corpusmill.transforms.common import document_keys
    from corpusmill.transforms.order import knn_graph, partitions, traversal
    from corpusmill.transforms.order.lexical import Idf
    from corpusmill.transforms.order.lexical_fit import fit_lexical_embedder
    from corpusmill.transforms.order.quality import ordering_quality

    n = len(texts)
    row: dict[str, Any] = {"copies": copies, "documents": n, "text_mb": sum(map(len, texts)) / 1e6}
    warm = copies == 1
    started = time.perf_counter()
    idf = Idf.fit(texts)
    row["idf_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    embedder = fit_lexical_embedder(texts, document_keys(list(ids)), projection_sample=PROJECTION_SAMPLE)
    row["embedder_fit_seconds"] = time.perf_counter() - started
    row["projection_sample"] = embedder.projection.sample_rows
    row["projection_variance_kept"] = embedder.projection.explained_variance_ratio
    row["embed_seconds"], row["embed_seconds_runs"], embeddings = timed(lambda: embedder.embed(texts), repeats, warm)
    row["embed_docs_per_second"] = n / row["embed_seconds"]
    row["embed_mb_per_second"] = row["text_mb"] / row["embed_seconds"]
    row["exact_knn_seconds"], row["exact_knn_seconds_runs"], (neighbors, scores) = timed(
        lambda: knn_graph.exact_knn(embeddings, K), repeats, warm)
    row["partitioned_knn_seconds"], row["partitioned_knn_seconds_runs"], graph = timed(
        lambda: knn_graph.partitioned_knn(embeddings, K, num_partitions, NPROBE, seed=0), repeats, warm)
    row["recall_at_10_partitioned_vs_exact"] = knn_graph.recall_at_k(graph.neighbors[:, :RECALL_K],
                                                                     neighbors[:, :RECALL_K])
    row["refine_seconds"], _, primary = timed(
        lambda: partitions.refine_partitions(graph.neighbors, graph.scores, graph.assignment.primary,
                                             num_partitions), repeats, warm)
    sizes = np.bincount(primary, minlength=num_partitions)
    row["partition_sizes"] = {"min": int(sizes.min()), "max": int(sizes.max())}
    row["top1_edges_cut"] = float(np.mean(primary[graph.neighbors[:, 0]] != primary))
    orders = {}
    for mode in ("paper", "improved"):
        seconds, runs, single = timed(lambda: traversal.traverse(neighbors, scores, embeddings, mode=mode),
                                      repeats, warm)
        row[f"traverse_{mode}_seconds"], row[f"traverse_{mode}_seconds_runs"] = seconds, runs
        seconds, runs, parted = timed(lambda: partitioned_order(embeddings, graph, mode, num_partitions),
                                      repeats, warm)
        row[f"partitioned_traverse_{mode}_seconds"], row[f"partitioned_traverse_{mode}_seconds_runs"] = seconds, runs
        orders[(mode, "single")] = (single, neighbors, scores)
        orders[(mode, "partitioned")] = (parted, graph.neighbors, graph.scores)
    if yardstick is not None:
        row["nprobe_sweep"] = nprobe_sweep(embeddings, neighbors, yardstick, repeats, num_partitions,
                                           quality_single=yardstick.adjacent(orders[("improved", "single")][0].order))
        quality = {}
        for (mode, layout), (result, graph_neighbors, graph_scores) in orders.items():
            quality[f"{mode}/{layout}"] = {
                "yardstick": yardstick.figures(result.order),
                "embedding": ordering_quality(embeddings, result.order, neighbors=graph_neighbors,
                                              scores=graph_scores, path_starts=result.path_starts),
            }
        for mode in ("paper", "improved"):
            single = quality[f"{mode}/single"]["yardstick"]["adjacent_cosine"]
            quality[f"{mode}/partitioned"]["loss_vs_single"] = 1 - (
                quality[f"{mode}/partitioned"]["yardstick"]["adjacent_cosine"] / single)
        row["quality"] = quality
        row["yardstick"] = {"top1": yardstick.top1, "natural": yardstick.natural}
    return row


def nprobe_sweep(embeddings: np.ndarray, exact_neighbors: np.ndarray, yardstick: Yardstick, repeats: int,
                 num_partitions: int, quality_single: float) -> list[dict[str, Any]]:
    """Partitioned graph and ``improved`` order at nprobe 1..4: recall, build time, loss against one partition."""
    from corpusmill.transforms.order import knn_graph

    rows = []
    for nprobe in (1, 2, 3, 4):
        seconds, _, graph = timed(lambda: knn_graph.partitioned_knn(embeddings, K, num_partitions, nprobe, seed=0),
                                  repeats, warm_up=False)
        order = partitioned_order(embeddings, graph, "improved", num_partitions).order
        rows.append({"nprobe": nprobe, "partitioned_knn_seconds": seconds,
                     "recall_at_10": knn_graph.recall_at_k(graph.neighbors[:, :RECALL_K],
                                                           exact_neighbors[:, :RECALL_K]),
                     "improved_loss_vs_single": 1 - yardstick.adjacent(order) / quality_single})
    return rows


def measure_kernels(ids: Sequence[str], texts: Sequence[str], repeats: int, num_partitions: int) -> dict[str, Any]:
    """``kernels_in_one_process`` on one corpus, single partition and partitioned."""
    out = {"documents": len(texts)}
    for label, parts in (("single", 1), ("partitioned", num_partitions)):
        runs = [kernels_in_one_process(ids, texts, num_partitions=parts) for _ in range(repeats)]
        out[label] = {"seconds": statistics.median(r["seconds"] for r in runs),
                      "seconds_runs": [round(r["seconds"], 3) for r in runs],
                      "phases": {p: statistics.median(r["phases"][p] for r in runs) for p in runs[0]["phases"]},
                      "position_sha256": __import__("hashlib").sha256(runs[0]["position"].tobytes()).hexdigest()[:16],
                      "deterministic": all((r["position"] == runs[0]["position"]).all() for r in runs)}
    return out


# ---------------------------------------------------------------------------
# Orchestration.


def machine_info(threads: int) -> dict[str, Any]:
    import faiss
    import numba
    import sklearn

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                if line.startswith("model name")), None)
    head = os.popen(f"git -C {REPO_ROOT} rev-parse --short HEAD").read().strip()
    return {"date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(), "cpu": cpu,
            "nproc": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "faiss": faiss.__version__, "sklearn": sklearn.__version__,
            "faiss_threads": threads, "git": head, "load_average_at_start": list(os.getloadavg())}


def _partitioning_settings() -> dict[str, Any]:
    from corpusmill.transforms.order import knn_graph, partitions

    return {"far_quantile": knn_graph.FAR_QUANTILE, "far_extra_probes": knn_graph.FAR_EXTRA_PROBES,
            "refine": f"{partitions.REFINE_ROUNDS} rounds of group votes (partitions.refine_partitions)"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--corpora", nargs="+", default=["linux-doc", "html-docs"])
    parser.add_argument("--sections", nargs="+", default=["variants", "scales", "kernels"],
                        choices=["variants", "scales", "kernels"])
    parser.add_argument("--partitions", type=int, default=16, help="forced partitions of the partitioned path")
    parser.add_argument("--threads", type=int, default=1, help="faiss threads")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="where the corpora are built (outside the repository)")
    parser.add_argument("--linux-doc-input", type=Path, default=None,
                        help="linux-doc 6.1 + 6.12 Parquet to deduplicate (default: order_bench_corpora's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import faiss

    from order_bench_report import markdown_report

    faiss.omp_set_num_threads(args.threads)
    snapshots = (ensure_snapshots(args.data, args.linux_doc_input) if args.linux_doc_input
                 else ensure_snapshots(args.data))
    report: dict[str, Any] = {"machine": machine_info(args.threads), "repeats": args.repeats, "k": K,
                              "nprobe": NPROBE, "partitions": args.partitions,
                              "projection_sample": PROJECTION_SAMPLE, "targets": TARGETS, "corpora": {},
                              **_partitioning_settings()}
    for name in args.corpora:
        ids, texts = read_kept(snapshots[name])
        print(f"{name}: {len(texts):,} documents", flush=True)
        yardstick = Yardstick(texts)
        corpus: dict[str, Any] = {"documents": len(texts), "yardstick_top1": yardstick.top1,
                                  "yardstick_natural": yardstick.natural}
        if "variants" in args.sections:
            corpus["variants"] = measure_variants(texts, yardstick, args.repeats, args.partitions)
        if "scales" in args.sections:
            corpus["scales"] = []
            for copies in args.copies:
                scaled_ids, scaled = scaled_corpus(ids, texts, copies)
                row = measure_scale(scaled_ids, scaled, copies, args.repeats, args.partitions,
                                    yardstick if copies == 1 else None)
                corpus["scales"].append(row)
                print(f"  x{copies}: {row['documents']:,} docs, embed {row['embed_docs_per_second']:.0f} docs/s, "
                      f"recall {row['recall_at_10_partitioned_vs_exact']:.3f}, improved "
                      f"{row['traverse_improved_seconds']:.2f} s", flush=True)
        if "kernels" in args.sections:
            scaled_ids, scaled = scaled_corpus(ids, texts, max(args.copies))
            corpus["kernels_in_one_process"] = {"copies": max(args.copies),
                                                **measure_kernels(scaled_ids, scaled, args.repeats, args.partitions)}
        report["corpora"][name] = corpus
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    markdown = markdown_report(report)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

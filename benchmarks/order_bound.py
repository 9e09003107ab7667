"""How high can any order's adjacent cosine go? A certified upper bound, per corpus.

Issue 11's quality target asks for a mean adjacent cosine (the yardstick's:
scikit-learn ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True,
min_df=2)``) of at least 0.75 of the mean top-1 neighbour similarity. An order
of n documents is a Hamiltonian path of the complete similarity graph: n - 1
edges, every document on at most two of them. So no order's edge sum exceeds
the maximum-weight fractional 2-matching of the complete graph:

    maximise  sum_e w_e x_e   subject to  sum_{e at v} x_e <= 2 for every v,
              sum_e x_e <= n - 1,  0 <= x_e <= 1.

The script solves that linear programme on the candidate edges (every
document's ``--candidates`` most similar documents, HiGHS through
``scipy.optimize.linprog``), then certifies the value for the *complete* graph
by LP duality: with the duals ``y_v`` of the degree rows and ``t`` of the edge
count row, every pair (u, v) of the whole corpus gets
``z_uv = max(0, w_uv - y_u - y_v - t)``, and

    2 * sum_v y_v + (n - 1) * t + sum_{all pairs} z_uv

is a feasible dual objective, hence an upper bound on every order's edge sum
(the pairs are all enumerated, blockwise, from the yardstick's vectors). Pairs
with positive z join the candidates and the LP is solved again (column
generation) until none is left: the bound is then the LP of the complete graph. The
figure reported is that bound / (n - 1) / mean top-1: the highest "of top-1"
ratio that any order of these documents can reach under the yardstick.

Beside it: the trivial bound (each document's two best similarities, halved),
what the paper's Algorithm 1 reaches on the yardstick's own exact kNN graph
(k = 20), and, where PyPI ``elkai`` is installed (``pip install elkai``; for
this measurement only), what LKH, the strongest travelling-salesman heuristic
we know of, reaches on the yardstick's own complete similarity matrix: as close
to the best order as can be had, given perfect similarities; and LKH on the
complete similarity matrix of the stage's own default embedding (lexical,
fitted as the stage fits it), scored by the yardstick: about the best that any
traversal of that embedding can give.

Usage:
    python benchmarks/order_bound.py [--data DIR] [--corpora linux-doc html-docs]
        [--candidates 40] [--out benchmarks/results/order_bound.json]

Needs scikit-learn and scipy; the snapshots are those of ``order_bench.py``
(built under ``--data`` by ``order_bench_corpora.py`` when missing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from order_bench import K, Yardstick, sparse_top_k  # noqa: E402
from order_bench_corpora import ensure_snapshots, read_kept  # noqa: E402


def candidate_edges(neighbors: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges (u < v) of the top-c lists, each once, with its similarity."""
    n, c = neighbors.shape
    u = np.repeat(np.arange(n), c)
    v = neighbors.ravel()
    w = scores.ravel().astype(np.float64)
    keep = v >= 0
    u, v, w = u[keep], v[keep], w[keep]
    low, high = np.minimum(u, v), np.maximum(u, v)
    pair = low * n + high
    _, first = np.unique(pair, return_index=True)
    return low[first], high[first], w[first]


def fractional_two_matching(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> dict:
    """The LP on the candidate edges: value, duals of the degree rows and of the edge-count row."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    m = u.size
    rows = np.concatenate([u, v, np.full(m, n)])
    cols = np.concatenate([np.arange(m), np.arange(m), np.arange(m)])
    a_ub = sp.csr_matrix((np.ones(3 * m), (rows, cols)), shape=(n + 1, m))
    b_ub = np.concatenate([np.full(n, 2.0), [n - 1.0]])
    result = linprog(-w, A_ub=a_ub, b_ub=b_ub, bounds=(0, 1), method="highs")
    if result.status != 0:
        raise RuntimeError(f"linprog failed: {result.message}")
    duals = -np.asarray(result.ineqlin.marginals)  # >= 0 for the maximisation
    x = result.x
    return {"value": float(-result.fun), "y": np.maximum(duals[:n], 0.0), "t": max(float(duals[n]), 0.0),
            "fractional_edges": int(np.sum((x > 1e-9) & (x < 1 - 1e-9)))}


def certified_bound(matrix, y: np.ndarray, t: float, candidates: np.ndarray,
                    chunk: int = 1024) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The dual objective 2 sum y + (n - 1) t + sum over all pairs u < v of max(0, w_uv - y_u - y_v - t),
    an upper bound for any nonnegative y and t; and the pairs outside ``candidates`` (sorted ids
    u * n + v) with positive slack, the columns the next LP round adds."""
    n = matrix.shape[0]
    transposed = matrix.T.tocsc()
    total = 2.0 * float(y.sum()) + (n - 1) * t
    new_u, new_v, new_w = [], [], []
    for start in range(0, n, chunk):
        block = (matrix[start:start + chunk] @ transposed).toarray()
        rows = np.arange(start, min(start + chunk, n))
        slack = block - y[rows, None] - y[None, :] - t
        slack[np.arange(n)[None, :] <= rows[:, None]] = 0.0  # each pair once, no self pairs
        total += float(np.maximum(slack, 0.0).sum())
        r, c = np.nonzero(slack > 1e-9)
        u, v = rows[r], c
        outside = ~np.isin(u * n + v, candidates, assume_unique=False)
        new_u.append(u[outside])
        new_v.append(v[outside])
        new_w.append(block[r[outside], c[outside]])
    return total, np.concatenate(new_u), np.concatenate(new_v), np.concatenate(new_w)


def complete_graph_lp(matrix, u: np.ndarray, v: np.ndarray, w: np.ndarray, rounds: int) -> dict:
    """Column generation: the LP on the candidates, grown by every pair its duals price positively, until
    none is left (the LP of the complete graph) or ``rounds`` run out; the best certified bound is kept."""
    n = matrix.shape[0]
    history = []
    best = np.inf
    for _ in range(rounds):
        lp = fractional_two_matching(n, u, v, w)
        bound, add_u, add_v, add_w = certified_bound(matrix, lp["y"], lp["t"], np.sort(u * n + v))
        best = min(best, bound)
        history.append({"candidate_edges": int(u.size), "lp": lp["value"], "certified": bound,
                        "priced_in": int(add_u.size), "fractional_edges": lp["fractional_edges"]})
        if add_u.size == 0:
            break
        u, v, w = np.concatenate([u, add_u]), np.concatenate([v, add_v]), np.concatenate([w, add_w])
    return {"bound": best, "lp": lp["value"], "rounds": history, "exact": bool(add_u.size == 0)}


def lkh_order(similarity: np.ndarray, seconds: int) -> np.ndarray | None:
    """A near-optimal order under a complete (n, n) similarity matrix: LKH (Helsgaun's Lin-Kernighan
    heuristic, through PyPI ``elkai``, not a dependency of corpusmill) on distances
    round(10,000 * (1 - cosine)) plus a dummy document at distance 0 from all, whose removal turns the
    tour into a path. None where elkai is not installed."""
    try:
        from elkai import _elkai
    except ImportError:
        return None
    n = similarity.shape[0]
    distances = np.zeros((n + 1, n + 1), np.int64)
    distances[:n, :n] = np.rint(10_000 * (1.0 - similarity))
    np.fill_diagonal(distances, 0)
    body = "\n".join(" ".join(map(str, row)) for row in distances.tolist())
    problem = (f"TYPE : TSP\nDIMENSION : {n + 1}\nEDGE_WEIGHT_TYPE : EXPLICIT\nEDGE_WEIGHT_FORMAT : FULL_MATRIX\n"
               f"EDGE_WEIGHT_SECTION\n{body}\n")
    params = (f"RUNS = 1\nPROBLEM_FILE = :stdin:\nTIME_LIMIT = {seconds}\nMAX_CANDIDATES = 8\n"
              "INITIAL_PERIOD = 200\nSEED = 1\nTRACE_LEVEL = 0\n")
    tour = [i - 1 for i in _elkai.solve_problem(params, problem)]
    cut = tour.index(n)
    order = np.array(tour[cut + 1:] + tour[:cut], dtype=np.int64)
    if not np.array_equal(np.sort(order), np.arange(n)):
        raise RuntimeError("LKH's tour is not a permutation")
    return order


def stage_embeddings(ids: list[str], texts: list[str]) -> np.ndarray:
    """The order stage's default embedding of the documents (lexical, fitted as the stage fits it)."""
    from order_bench import PROJECTION_SAMPLE

    from corpusmill.transforms.common import document_keys
    from corpusmill.transforms.order.lexical_fit import fit_lexical_embedder

    embedder = fit_lexical_embedder(texts, document_keys(list(ids)), projection_sample=PROJECTION_SAMPLE)
    return np.asarray(embedder.embed(texts), dtype=np.float64)


def measure(name: str, ids: list[str], texts: list[str], candidates: int, rounds: int, lkh_seconds: int) -> dict:
    from corpusmill.transforms.order.traversal import paper_order

    started = time.perf_counter()
    yardstick = Yardstick(texts)
    n = len(texts)
    near, near_scores = sparse_top_k(yardstick.matrix, candidates)
    u, v, w = candidate_edges(near, near_scores)
    solved = complete_graph_lp(yardstick.matrix, u, v, w, rounds)
    bound = solved["bound"]
    top2 = near_scores[:, :2].astype(np.float64).sum() / 2.0
    graph = yardstick.neighbors[:, :K], yardstick.scores[:, :K]
    orders = {"paper": paper_order(*graph).order}
    if lkh_seconds > 0:
        lkh = lkh_order((yardstick.matrix @ yardstick.matrix.T).toarray(), lkh_seconds)
        if lkh is not None:
            orders["lkh_complete_graph"] = lkh
            embedded = stage_embeddings(ids, texts)
            orders["lkh_stage_embedding"] = lkh_order(embedded @ embedded.T, lkh_seconds)
    per_edge = n - 1
    row = {
        "lkh_seconds": lkh_seconds if "lkh_complete_graph" in orders else None,
        "documents": n, "candidates_per_document": candidates, "candidate_edges": int(u.size),
        "top1": yardstick.top1, "natural": yardstick.natural,
        "lp_rounds": solved["rounds"], "lp_of_complete_graph": solved["exact"],
        "certified_bound": bound,
        "bound_of_top1": bound / per_edge / yardstick.top1,
        "bound_over_natural": bound / per_edge / yardstick.natural,
        "top2_bound_of_top1": top2 / per_edge / yardstick.top1,
        "orders_on_yardstick_graph": {mode: yardstick.figures(order) for mode, order in orders.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{name}: n={n}, top-1 {yardstick.top1:.4f}, natural {yardstick.natural:.4f}; certified bound of top-1 "
          f"{row['bound_of_top1']:.3f} (over natural {row['bound_over_natural']:.2f}; "
          f"{len(solved['rounds'])} LP rounds, complete graph's LP: {solved['exact']}); top-2 bound "
          f"{row['top2_bound_of_top1']:.3f}; paper on the yardstick's graph "
          f"{row['orders_on_yardstick_graph']['paper']['of_top1']:.3f}; LKH on the complete graph "
          f"{row['orders_on_yardstick_graph'].get('lkh_complete_graph', {}).get('of_top1', float('nan')):.3f}, "
          f"LKH on the stage's embedding "
          f"{row['orders_on_yardstick_graph'].get('lkh_stage_embedding', {}).get('of_top1', float('nan')):.3f} "
          f"({row['seconds']} s)", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("benchmarks/.data/order"))
    parser.add_argument("--corpora", nargs="+", default=["linux-doc", "html-docs"])
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=8, help="column generation rounds at most")
    parser.add_argument("--lkh-seconds", type=int, default=300,
                        help="LKH's time limit per corpus (0: skip; skipped where elkai is not installed)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/order_bound.json"))
    args = parser.parse_args(argv)
    snapshots = ensure_snapshots(args.data)
    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(["python", "benchmarks/order_bound.py", *(argv or sys.argv[1:])]),
               "corpora": {}}
    for name in args.corpora:
        ids, texts = read_kept(snapshots[name])
        results["corpora"][name] = measure(name, ids, texts, args.candidates, args.rounds, args.lkh_seconds)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

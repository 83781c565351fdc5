"""Nearest-neighbour search of search.py: exact chunked numpy against the HNSW index of FAISS.

    python bench/search.py                                  # 100k rows of 512-d, 1000 queries
    python bench/search.py --rows 1000000 --data clustered  # a larger collection
    python bench/search.py --ef_search 32 64 128            # recall against speed

Makes, seeded, L2-normalised embeddings (N, D) float32 of two kinds: "random", uniform on the
sphere (the hardest case for any approximate index: every row is about as far as any other), and
"clustered", rows and queries drawn around --clusters centres as embeddings of objects of many
categories are. Prints per kind: the build time of the index, queries per second of
`exact_topk` (numpy, chunked) and of `index_topk` (the whole batch of queries at once, and one
query at a time), with the speed-up over exact search, and recall@k of the index: the share of
the exact top-k it finds.
"""
import argparse
import os
import sys
import time
from typing import Callable, List, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import cpu_model  # noqa: E402
from clip2point.utils.vector_search import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M  # noqa: E402
from clip2point.utils.vector_search import build_index, exact_topk, index_topk  # noqa: E402


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embeddings(kind: str, n: int, q: int, d: int, clusters: int, spread: float,
               seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(rows (n, d), queries (q, d)) float32 of unit norm; clustered: centre + noise of norm about
    `spread` (spread 1: cosine 0.5 between two rows of a cluster), queries new draws of the clusters."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        both = rng.standard_normal((n + q, d), dtype=np.float32)
    else:
        centres = unit_rows(rng.standard_normal((clusters, d), dtype=np.float32))
        both = centres[rng.integers(clusters, size=n + q)]
        both += rng.standard_normal((n + q, d), dtype=np.float32) * np.float32(spread / d ** 0.5)
    both = unit_rows(both)
    return both[:n], both[n:]


def seconds(fn: Callable[[], object], repeat: int) -> Tuple[float, object]:
    """(best wall seconds, result) of `repeat` calls."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k (Q, k) that `found` (Q, k) holds."""
    return float(np.mean([len(np.intersect1d(f, e)) / e.shape[0] for f, e in zip(found, exact)]))


def rows_for(kind: str, args: argparse.Namespace) -> Tuple[float, List[Tuple[str, float, float, str]]]:
    """(build seconds, [(method, queries/s, speed-up over exact, recall@k)]) for one kind of data."""
    rows, queries = embeddings(kind, args.rows, args.queries, args.dim, args.clusters, args.spread)
    q, k = len(queries), args.k
    exact_s, (_, exact) = seconds(lambda: exact_topk(rows, queries, k), args.repeat)
    build_s, index = seconds(lambda: build_index(rows, m=args.m, ef_construction=args.ef_construction), 1)
    table = [("exact (numpy, chunked)", q / exact_s, 1.0, "1.000")]
    for ef in args.ef_search:
        batch_s, (_, found) = seconds(lambda: index_topk(index, queries, k, ef_search=ef), args.repeat)
        single = queries[:args.single]
        single_s, _ = seconds(lambda: [index_topk(index, x[None], k, ef_search=ef) for x in single], args.repeat)
        r = f"{recall(found, exact):.3f}"
        table.append((f"HNSW ef_search={ef}, batch of {q}", q / batch_s, exact_s / batch_s, r))
        table.append((f"HNSW ef_search={ef}, one query at a time", len(single) / single_s,
                      exact_s / q * len(single) / single_s, r))
    exact_one_s, _ = seconds(lambda: [exact_topk(rows, x[None], k) for x in queries[:args.single_exact]], 1)
    table.insert(1, ("exact (numpy, chunked), one query at a time", args.single_exact / exact_one_s,
                     exact_s / q * args.single_exact / exact_one_s, "1.000"))
    return build_s, table


def main(args: argparse.Namespace) -> None:
    import faiss

    print(f"{cpu_model()}, {faiss.omp_get_max_threads()} FAISS threads, FAISS {faiss.__version__}")
    for kind in args.data:
        start = time.perf_counter()
        build_s, table = rows_for(kind, args)
        what = f"{args.clusters} clusters, spread {args.spread}" if kind == "clustered" else "uniform on the sphere"
        print(f"\n{kind}: {args.rows:,} rows of {args.dim}-d ({what}), {args.queries} queries, top-{args.k} "
              f"(best of {args.repeat}; one query at a time: {args.single} queries, exact {args.single_exact})")
        print(f"HNSW index M={args.m}, efConstruction={args.ef_construction}: built in {build_s:.1f} s")
        print(f"| search | queries/s | speed-up over exact (batch) | recall@{args.k} |\n|---|---|---|---|")
        for name, qps, ratio, r in table:
            print(f"| {name} | {qps:,.0f} | {ratio:.1f}x | {r} |")
        print(f"({time.perf_counter() - start:.0f} s for this table)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Exact against FAISS HNSW search timings and recall.")
    parser.add_argument("--rows", type=int, default=100_000, help="embeddings searched (default 100000)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    parser.add_argument("--queries", type=int, default=1000, help="queries of the batch rows (default 1000)")
    parser.add_argument("--single", type=int, default=200,
                        help="queries of the HNSW one-at-a-time rows (default 200)")
    parser.add_argument("--single_exact", type=int, default=10,
                        help="queries of the exact one-at-a-time row (default 10: each reads every row)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument("--data", nargs="+", default=["clustered", "random"], choices=["clustered", "random"],
                        help="kinds of embeddings (default both)")
    parser.add_argument("--clusters", type=int, default=1000, help="clusters of the clustered data (default 1000)")
    parser.add_argument("--spread", type=float, default=1.0,
                        help="noise norm around a cluster centre (default 1.0: cosine 0.5 within a cluster)")
    parser.add_argument("--m", type=int, default=HNSW_M, help=f"HNSW links per node (default {HNSW_M})")
    parser.add_argument("--ef_construction", type=int, default=HNSW_EF_CONSTRUCTION,
                        help=f"HNSW candidates kept while building (default {HNSW_EF_CONSTRUCTION})")
    parser.add_argument("--ef_search", type=int, nargs="+", default=[HNSW_EF_SEARCH],
                        help=f"HNSW candidates kept while searching (default {HNSW_EF_SEARCH})")
    parser.add_argument("--repeat", type=int, default=2, help="runs per search row, best taken (default 2)")
    main(parser.parse_args())

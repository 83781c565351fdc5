"""Top-k cosine search over unit-norm embeddings (N, D) float32, e.g. an embeddings file opened as a memmap.

- `exact_topk(embeddings, queries, k)`: every row compared, in chunks of rows (memory bounded by
  the chunk, not N); ties go to the lower row index.
- `build_index(embeddings)`, `save_index`, `load_index`, `index_topk`: an HNSW index of FAISS
  over inner product, approximate and much faster on large collections (bench/search.py).

Both searches return (scores (Q, k) float32, indices (Q, k) int64), best first.
"""
from typing import Tuple

import numpy as np

from clip2point.utils.outputs import atomic_write

CHUNK_ROWS = 65536  # rows of `embeddings` read at a time
SCORE_BLOCK = 1 << 24  # (queries x rows) scores held at a time: 64 MB, and 128 MB of argpartition's indices
# HNSW, measured by bench/search.py on 100k clustered 512-d rows: recall@10 0.999-1.000 at
# efSearch 64 (0.98 at 32); efConstruction 40 builds in half the time but drops to 0.84-0.95.
# Uniformly random 512-d rows, which have no neighbourhoods to find, get 0.14: exact search there.
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 64


def _check(n: int, d: int, queries: np.ndarray, k: int) -> np.ndarray:
    """`queries` as a C-contiguous float32 (Q, D), after checking them and `k` against (N, D) rows."""
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[1] != d:
        raise ValueError(f"queries of shape {queries.shape}: expected (Q, {d}), the dimension of the embeddings")
    if not 1 <= k <= n:
        raise ValueError(f"k={k}: expected 1 to {n}, the rows of the embeddings")
    return np.ascontiguousarray(queries, dtype=np.float32)


def _best_first(scores: np.ndarray, indices: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The k best of each row of candidates (Q, C): highest score first, the lower index on ties."""
    order = np.lexsort((indices, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _chunk_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices (Q, k) of the k highest scores of each row of (Q, C), the lower column on ties."""
    c = scores.shape[1]
    if k == c:
        return np.broadcast_to(np.arange(c), scores.shape)
    top = np.argpartition(scores, c - k, axis=1)[:, c - k:]
    # argpartition picks any of the scores equal to the k-th: rows with such a tie are sorted in full
    kth = np.take_along_axis(scores, top, axis=1).min(axis=1, keepdims=True)
    for r in np.flatnonzero((scores >= kth).sum(axis=1) > k):
        top[r] = np.argsort(-scores[r], kind="stable")[:k]
    return top


def exact_topk(embeddings: np.ndarray, queries: np.ndarray, k: int,
               chunk_rows: int = CHUNK_ROWS) -> Tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of queries (Q, D) among embeddings (N, D) (an array or memmap).

    Returns (scores (Q, k) float32, indices (Q, k) int64), best first, the lower index on ties.
    `embeddings` is read `chunk_rows` rows at a time, keeping a running top-k.
    """
    n, d = embeddings.shape
    queries = _check(n, d, queries, k)
    q = len(queries)
    best_scores, best_indices = np.empty((q, 0), np.float32), np.empty((q, 0), np.int64)
    block = max(1, SCORE_BLOCK // chunk_rows)  # queries scored at a time
    for start in range(0, n, chunk_rows):
        rows = np.asarray(embeddings[start:start + chunk_rows], dtype=np.float32)
        kk = min(k, len(rows))
        chunk_scores, chunk_indices = np.empty((q, kk), np.float32), np.empty((q, kk), np.int64)
        for s in range(0, q, block):
            scores = queries[s:s + block] @ rows.T
            top = _chunk_topk(scores, kk)
            chunk_scores[s:s + block] = np.take_along_axis(scores, top, axis=1)
            chunk_indices[s:s + block] = top + start
        best_scores, best_indices = _best_first(np.concatenate([best_scores, chunk_scores], axis=1),
                                                np.concatenate([best_indices, chunk_indices], axis=1), k)
    return best_scores, best_indices


def build_index(embeddings: np.ndarray, kind: str = "hnsw", m: int = HNSW_M,
                ef_construction: int = HNSW_EF_CONSTRUCTION, chunk_rows: int = CHUNK_ROWS):
    """A FAISS inner-product index of embeddings (N, D) float32 (an array or memmap), added
    `chunk_rows` rows at a time. kind: "hnsw" (approximate graph of `m` links per node) or
    "flat" (exact, every row compared). The index holds its own copy of the rows."""
    import faiss  # only here: the scripts start without it

    n, d = embeddings.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    elif kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        raise ValueError(f"kind={kind!r}: expected 'hnsw' or 'flat'")
    for start in range(0, n, chunk_rows):
        index.add(np.ascontiguousarray(embeddings[start:start + chunk_rows], dtype=np.float32))
    return index


def save_index(index, path: str) -> None:
    """Write `index` to `path` atomically: a temporary file beside it, renamed when complete."""
    import faiss

    with atomic_write(path, mode="wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))  # streamed: no copy of the index in memory


def load_index(path: str):
    """The FAISS index written by `save_index`; ValueError when `path` holds none."""
    import faiss

    try:
        return faiss.read_index(path)
    except RuntimeError as err:  # FAISS reports a broken or foreign file as a RuntimeError
        raise ValueError(f"{path}: not a FAISS index ({str(err).strip().splitlines()[-1]})") from None


def index_topk(index, queries: np.ndarray, k: int,
               ef_search: int = HNSW_EF_SEARCH) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k of queries (Q, D) by a FAISS index: (scores (Q, k) float32, indices (Q, k) int64),
    best first, the lower index on ties. `ef_search` (at least k is used): candidates an HNSW
    search keeps, more for a higher recall at a lower speed."""
    import faiss

    queries = _check(index.ntotal, index.d, queries, k)
    params = None
    if isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search, k))
    scores, indices = index.search(queries, k, params=params)
    return _best_first(scores, indices, k)

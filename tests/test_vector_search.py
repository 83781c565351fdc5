"""Top-k search of utils/vector_search.py: the chunked exact search gives numpy's full sort (ties to
the lower index) for arrays and memmaps; the HNSW index of FAISS finds the exact neighbours of
clustered embeddings, and survives a save and load."""
import os

import numpy as np
import pytest

from clip2point.utils.vector_search import build_index, exact_topk, index_topk, load_index, save_index


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def coarse_unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    """Unit rows rounded to multiples of 1/64: float32 inner products are exact in any summation
    order (so chunked and full products agree to the bit), and many of them tie."""
    return np.round(unit_rows(n, d, seed) * 64) / 64


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """Unit rows around `clusters` random centres (cosine about 0.5 within a cluster)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(clusters, d, seed + 1)
    x = centres[rng.integers(clusters, size=n)] + rng.standard_normal((n, d)).astype(np.float32) / d ** 0.5
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(emb: np.ndarray, queries: np.ndarray, k: int):
    scores = queries @ emb.T
    indices = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # stable: ties to the lower index
    return np.take_along_axis(scores, indices, axis=1), indices


# 1000 rows in chunks of 300: the last chunk is short, and k from 1 to all rows spans chunks
@pytest.mark.parametrize("k, chunk_rows", [(1, 300), (10, 300), (299, 300), (301, 300), (700, 300), (1000, 300),
                                           (10, 65536), (10, 1)])
def test_exact_topk_is_the_full_sort(k, chunk_rows):
    emb, queries = coarse_unit_rows(1000, 32, seed=0), coarse_unit_rows(17, 32, seed=1)
    scores, indices = exact_topk(emb, queries, k, chunk_rows=chunk_rows)
    want_scores, want_indices = brute_force(emb, queries, k)
    assert scores.dtype == np.float32 and indices.dtype == np.int64 and indices.shape == (17, k)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(scores, want_scores)


def test_exact_topk_on_float_unit_vectors():
    emb, queries = unit_rows(2500, 64, seed=2), unit_rows(9, 64, seed=3)
    scores, indices = exact_topk(emb, queries, 25, chunk_rows=1000)
    want_scores, want_indices = brute_force(emb, queries, 25)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)


def test_ties_go_to_the_lower_index():
    # rows 3, 5, 6, 7, 11 equal the query, in both chunks of 6 rows and past argpartition's pick
    emb = np.zeros((12, 4), np.float32)
    emb[:, 1] = 1
    emb[[3, 5, 6, 7, 11]] = [1, 0, 0, 0]
    emb[9] = [0.5, 0.5, 0.5, 0.5]
    query = np.array([[1, 0, 0, 0]], np.float32)
    for chunk_rows in (6, 5, 12):
        scores, indices = exact_topk(emb, query, 7, chunk_rows=chunk_rows)
        assert indices.tolist() == [[3, 5, 6, 7, 11, 9, 0]]
        assert scores.tolist() == [[1, 1, 1, 1, 1, 0.5, 0]]


def test_exact_topk_reads_a_memmap(tmp_path):
    emb, queries = unit_rows(1500, 16, seed=4), unit_rows(5, 16, seed=5)
    np.save(tmp_path / "emb.npy", emb)
    rows = np.load(tmp_path / "emb.npy", mmap_mode="r", allow_pickle=False)
    assert isinstance(rows, np.memmap)
    got, want = exact_topk(rows, queries, 12, chunk_rows=400), exact_topk(emb, queries, 12, chunk_rows=400)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("k, queries, match", [(0, (2, 8), "k=0: expected 1 to 20"), (21, (2, 8), "k=21"),
                                               (5, (2, 7), r"shape \(2, 7\): expected \(Q, 8\)"),
                                               (5, (8,), r"shape \(8,\)")])
def test_exact_topk_rejects(k, queries, match):
    with pytest.raises(ValueError, match=match):
        exact_topk(unit_rows(20, 8, seed=6), np.ones(queries, np.float32), k)


@pytest.fixture(scope="module")
def collection():
    """(rows (4000, 64), queries (200, 64), HNSW index of the rows): clustered unit vectors."""
    both = clustered(4200, 64, clusters=40, seed=7)
    rows, queries = both[:4000], both[4000:]
    return rows, queries, build_index(rows, chunk_rows=1500)


def test_index_recall_at_10(collection):
    rows, queries, index = collection
    _, exact = exact_topk(rows, queries, 10)
    scores, found = index_topk(index, queries, 10)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and found.shape == (200, 10)
    recall = np.mean([len(np.intersect1d(f, e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_stored_row_finds_itself_first(collection):
    rows, _, index = collection
    scores, indices = index_topk(index, rows[::97], 5)
    np.testing.assert_array_equal(indices[:, 0], np.arange(0, 4000, 97))
    np.testing.assert_allclose(scores[:, 0], 1, atol=1e-5)


def test_save_and_load_give_the_same_results(collection, tmp_path):
    rows, queries, index = collection
    path = str(tmp_path / "emb.faiss")
    save_index(index, path)
    save_index(index, path)  # replaces the file
    assert os.listdir(tmp_path) == ["emb.faiss"]  # no temporary file left
    loaded = load_index(path)
    assert loaded.ntotal == 4000 and loaded.d == 64
    for got, want in zip(index_topk(loaded, queries, 10), index_topk(index, queries, 10)):
        np.testing.assert_array_equal(got, want)


def test_flat_index_is_exact(collection):
    rows, queries, _ = collection
    got, want = index_topk(build_index(rows, kind="flat"), queries, 10), exact_topk(rows, queries, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)


def test_index_errors(collection, tmp_path):
    rows, queries, index = collection
    with pytest.raises(ValueError, match="kind='ivf'"):
        build_index(rows, kind="ivf")
    with pytest.raises(ValueError, match="k=4001"):
        index_topk(index, queries, 4001)
    with pytest.raises(ValueError, match=r"expected \(Q, 64\)"):
        index_topk(index, queries[:, :32], 10)
    (tmp_path / "broken.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="broken.faiss: not a FAISS index"):
        load_index(str(tmp_path / "broken.faiss"))

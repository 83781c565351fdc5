"""Search an embeddings file of embed.py by text or by example.

    python search.py scans.npy --text "a wooden chair"                  # the 10 closest files
    python search.py scans.npy --like query.ply --k 5                   # the files most like query.ply
    python search.py scans.npy --text chair --text lamp --json hits.json

Prints, for every query, the top-k files with their cosine similarity. The model is the one the
sidecar names (its --clip, and its --ckpt for --like); --clip and --ckpt give them from another
place, and must be the same backbone and weights. Exact search below --index_from rows, an HNSW
index of FAISS above (built once, kept beside the embeddings as NAME.faiss; docs/api.md#searchpy).
"""
import argparse
import json
import os
import sys
from typing import List, Optional, Tuple

import numpy as np
import torch

from clip2point.api import load_model
from clip2point.utils.cli import ArgumentParser, check_output_file, exit_at_once, get_device, run
from clip2point.utils.embeddings_file import mismatch, open_embeddings
from clip2point.utils.errors import DataError, UsageError
from clip2point.utils.outputs import atomic_write, print_line
from clip2point.utils.vector_search import build_index, exact_topk, index_topk, load_index, save_index

INDEX_FROM = 200_000  # rows from which --index auto uses the FAISS index (bench/search.py)


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Search an embeddings file of embed.py by text or by example.")
    parser.add_argument("embeddings", metavar="FILE.npy", help="the embeddings file (its sidecar FILE.json beside it)")
    parser.add_argument("--text", action="append", default=[], metavar="TEXT",
                        help='a text query, e.g. "a wooden chair" (repeatable)')
    parser.add_argument("--like", action="append", default=[], metavar="FILE",
                        help="a query file: the files most like it (repeatable; any format embed.py reads)")
    parser.add_argument("--k", type=int, default=None,
                        help="files printed per query (default 10, or all rows of a smaller collection)")
    parser.add_argument("--template", default=None,
                        help='put every --text into this prompt, e.g. "image of a {}" (default: the text as given)')
    parser.add_argument("--index", default="auto", choices=["auto", "exact", "faiss"],
                        help=f"exact = every row compared; faiss = an HNSW index (approximate, built once); "
                             f"auto = faiss from {INDEX_FROM:,} rows (default)")
    parser.add_argument("--clip", default=None, help="the CLIP tower (default: the one the sidecar names)")
    parser.add_argument("--ckpt", default=None,
                        help="the pre-training checkpoint for --like (default: the one the sidecar names)")
    parser.add_argument("--fewshot_ckpt", default=None,
                        help="the few-shot checkpoint for --like (default: the one the sidecar names)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default cuda when available, else cpu)")
    return parser


def load_query_model(args: argparse.Namespace, meta: dict, device: torch.device):
    """The model the rows were made with (the text tower only, for text queries), checked against the sidecar."""
    ckpt = (args.ckpt or meta.get("ckpt")) if args.like else None
    fewshot = (args.fewshot_ckpt or meta.get("fewshot_ckpt")) if args.like else None
    for flag, path, sha in (("--ckpt", ckpt, "ckpt_sha256"), ("--fewshot_ckpt", fewshot, "fewshot_ckpt_sha256")):
        if path and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: no such file; --like needs the checkpoint the rows were made with "
                             f"(give it with {flag})")
    try:
        model = load_model(args.clip or meta["clip"], ckpt, device, fewshot_ckpt=fewshot, views=meta["views"],
                           projection=meta["projection"], up=meta["up"], num_points=meta["num_points"],
                           seed=meta["seed"], view_weights=meta.get("view_weights"))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{args.embeddings}: its sidecar does not describe a model ({e})") from None
    wanted = dict(meta) if args.like else {"backbone": meta.get("backbone"), "dim": meta.get("dim")}
    found = model.settings if args.like else {"backbone": model.settings["backbone"], "dim": model.dim}
    different = mismatch(wanted, found)
    if different:
        raise UsageError(f"{args.embeddings} holds embeddings of another model: {different}")
    return model


def search(rows: np.ndarray, queries: np.ndarray, k: int, kind: str, index_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, row indices) (Q, k) of the queries (Q, D) by exact search or the FAISS index."""
    if kind == "auto":
        kind = "faiss" if len(rows) >= INDEX_FROM else "exact"
    if kind == "exact":
        return exact_topk(rows, queries, k)
    index = None
    if os.path.isfile(index_path):
        try:
            index = load_index(index_path)
        except ValueError as e:
            print(f"note: {e}; building it again", file=sys.stderr)
        if index is not None and (index.ntotal != len(rows) or
                                  os.path.getmtime(index_path) < os.path.getmtime(index_path[:-6] + ".npy")):
            index = None  # made for other rows
    if index is None:
        print(f"building the FAISS index of {len(rows):,} rows (once)", file=sys.stderr)
        index = build_index(rows)
        try:
            save_index(index, index_path)
        except OSError as e:
            print(f"note: the index is not kept ({e})", file=sys.stderr)
    return index_topk(index, queries, k)


def main(args: argparse.Namespace) -> List[dict]:
    """Run the queries -> one dict per query: {"query", "hits": [{"file", "score"}]}."""
    if not args.text and not args.like:
        raise UsageError("nothing to search for: give --text TEXT or --like FILE")
    if not args.embeddings.endswith(".npy"):
        raise UsageError(f"{args.embeddings}: expected an embeddings file ending in .npy (embed.py writes one)")
    check_output_file(args.json, "--json")
    for path in args.like:
        if not os.path.isfile(path):
            raise UsageError(f"--like {path}: no such file")
    rows, meta = open_embeddings(args.embeddings)
    if len(rows) == 0:
        raise UsageError(f"{args.embeddings}: the collection is empty")
    if args.k is None:
        args.k = min(10, len(rows))
    if not 1 <= args.k <= len(rows):
        raise UsageError(f"--k {args.k}: expected 1 to {len(rows)}, the rows of {args.embeddings}")
    device = get_device(args.device)
    model = load_query_model(args, meta, device)

    names = [f"text {t!r}" for t in args.text] + [f"like {p}" for p in args.like]
    parts = []
    if args.text:
        parts.append(model.encode_text(args.text, template=args.template))
    if args.like:
        parts.append(model.encode_clouds(args.like))
    queries = np.concatenate(parts)
    scores, indices = search(rows, queries, args.k, args.index, args.embeddings[:-4] + ".faiss")

    results = []
    for name, row_scores, row_indices in zip(names, scores, indices):
        print_line(f"{name}:")
        hits = [{"file": meta["files"][i], "score": round(float(s), 4)} for s, i in zip(row_scores, row_indices)]
        for rank, hit in enumerate(hits, 1):
            print_line(f"  {rank:>3}. {hit['score']:.4f}  {hit['file']}")
        results.append({"query": name, "hits": hits})
    if args.json:
        with atomic_write(args.json, "--json") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    return results


if __name__ == "__main__":
    run(main, get_args_parser().parse_args())
    exit_at_once(0)

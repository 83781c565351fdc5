"""The embeddings file of embed.py and search.py (docs/api.md#embeddings-files): a float32 .npy
(N, D) of L2-normalised rows, a JSON sidecar beside it (same name, .json) listing the file of every
row in order and what made the rows, and the chunks of a run not yet finished (NAME.npy.parts/)."""
import json
import os
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np

from clip2point.utils.errors import DataError, UsageError
from clip2point.utils.outputs import atomic_write

FORMAT, VERSION = "clip2point-embeddings", 1
# the settings two sets of rows must share to be compared or joined
COMPARED = ("backbone", "ckpt_sha256", "fewshot_ckpt_sha256", "projection", "views", "up", "num_points", "seed",
            "view_weights", "dim")
COPY_ROWS = 65536  # rows copied at a time when a file is assembled


def sidecar_path(npy: str) -> str:
    return str(Path(npy).with_suffix(".json"))


def parts_folder(npy: str) -> str:
    return npy + ".parts"


def mismatch(found: dict, wanted: dict) -> Optional[str]:
    """The first setting of COMPARED that differs, as `name X (wanted Y)`, or None."""
    for key in COMPARED:
        if found.get(key) != wanted.get(key):
            return f"{key} {json.dumps(found.get(key))} (this run: {json.dumps(wanted.get(key))})"
    return None


def read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DataError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    except ValueError as e:
        raise DataError(f"{path}: the {what} is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: the {what} is not a JSON object")
    return data


def read_rows(path: str) -> np.ndarray:
    """The rows (N, D) float32 of a .npy, memory-mapped; DataError for anything else."""
    try:
        rows = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise DataError(f"{path}: not a .npy array ({e})") from None
    if rows.ndim != 2 or rows.dtype != np.float32:
        raise DataError(f"{path}: expected embeddings (N, D) float32, got shape {rows.shape} {rows.dtype}")
    return rows


def open_embeddings(npy: str) -> Tuple[np.ndarray, dict]:
    """An embeddings file and its sidecar, checked against each other -> rows (N, D) memory-mapped, sidecar."""
    if not os.path.isfile(npy):
        raise UsageError(f"{npy}: no such embeddings file (embed.py writes one)")
    side = sidecar_path(npy)
    if not os.path.isfile(side):
        raise DataError(f"{npy}: its sidecar {side} is missing (it lists the file of every row)")
    meta = read_json(side, "sidecar")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"{side}: not a {FORMAT} sidecar of version {VERSION}")
    files = meta.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise DataError(f"{side}: 'files' must be a list of file names")
    rows = read_rows(npy)
    if rows.shape != (len(files), meta.get("dim")):
        raise DataError(f"{side} does not match {npy}: it lists {len(files)} files of dimension {meta.get('dim')}, "
                        f"the array holds {rows.shape[0]} rows of {rows.shape[1]}")
    return rows, meta


def write_rows(path: str, parts: Iterable[np.ndarray], rows: int, dim: int, flag: Optional[str] = None) -> None:
    """Write the concatenation of `parts` ((n_i, D) arrays, memory-mapped or not; `rows` in all) as
    one float32 .npy, atomically, holding only COPY_ROWS rows in memory at a time."""
    with atomic_write(path, flag, mode="wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                 "fortran_order": False, "shape": (rows, dim)})
        written = 0
        for part in parts:
            for start in range(0, len(part), COPY_ROWS):
                block = np.ascontiguousarray(part[start:start + COPY_ROWS], dtype=np.float32)
                f.write(block.tobytes())
                written += len(block)
        if written != rows:
            raise ValueError(f"write_rows: {written} rows written, {rows} announced")


def write_json(path: str, data: dict, flag: Optional[str] = None) -> None:
    with atomic_write(path, flag) as f:
        json.dump(data, f, indent=1)


def write_chunk(folder: str, index: int, rows: np.ndarray, files: List[str], skipped: List[dict]) -> None:
    """Chunk `index` of a run: its rows, then its list (the list marks the chunk complete)."""
    name = os.path.join(folder, f"{index:06d}")
    write_rows(name + ".npy", [rows], len(rows), rows.shape[1])
    write_json(name + ".json", {"files": files, "skipped": skipped})


def read_chunks(folder: str, dim: int) -> List[Tuple[str, List[str], List[dict]]]:
    """The complete chunks of a run in order: (rows file, files, skipped); a chunk whose list is
    missing (the run stopped while writing it) is left out."""
    chunks = []
    for listing in sorted(Path(folder).glob("[0-9]*.json")):
        data = read_json(str(listing), "chunk list")
        npy = str(listing.with_suffix(".npy"))
        rows = read_rows(npy)
        files = data.get("files", [])
        if rows.shape != (len(files), dim):
            raise DataError(f"{listing}: the chunk lists {len(files)} files of dimension {dim}, {npy} holds "
                            f"{rows.shape}; remove the folder {folder} to start the run again")
        chunks.append((npy, files, data.get("skipped", [])))
    return chunks

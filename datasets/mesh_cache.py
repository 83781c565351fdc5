"""A disk cache of parsed meshes: the first read of an .off file stores its vertices, faces and
cumulative face areas in one binary file; later reads, in any process, memory-map it.

An entry is named by a hash of the mesh's absolute path and records the file's size and
modification time; it is served only when all three match and its checksum is right, otherwise it
is rebuilt from the .off file. Entries are written to a temporary file and renamed into place, so a
reader never sees half an entry; a temporary left by a killed write is removed when the cache is
next prepared. Only regular files are read (a FIFO or a symlink in the folder is rebuilt over, never
opened or followed), and a header that does not fit the file is corrupt.

Entry layout: 8-byte magic, 8-byte little-endian header length, a JSON header (key, counts,
checksum), padding to 64 bytes, then vertices (V, 3) float64, faces (F, 3) int64 and cumulative
areas (F,) float64, all little-endian.
"""
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from clip2point.datasets.common import PathLike
from clip2point.datasets.mesh import cumulative_areas, read_off

MAGIC = b"C2PMESH1"
_ALIGN = 64
_LAYOUT = (("vertices", "<f8", 3), ("faces", "<i8", 3), ("cum_areas", "<f8", 0))
_MAX_HEADER = 1 << 16  # a real header is about 200 bytes: anything longer is corrupt
# `.<entry>.<pid>.<random>.tmp`, what write_entry writes before the rename
_TEMPORARY = re.compile(r"^\.[0-9a-f]{40}\.mesh\.(?:(\d+)\.)?[^.]+\.tmp$")
_ABANDONED_AFTER_S = 3600  # a temporary of a process that may live elsewhere (shared folder) is kept this long


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/clip2point/meshes`, or `~/.cache/clip2point/meshes`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clip2point" / "meshes"


def _file_key(path: PathLike) -> dict:
    """What identifies a version of a mesh file: absolute path, size, modification time (ns)."""
    absolute = os.path.abspath(path)
    stat = os.stat(absolute)
    return {"path": absolute, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class MeshCache:
    """Parsed meshes under `folder`; `load(path)` -> (vertices, faces, cumulative areas).

    Holds only the folder name, so datasets that own one can be sent to DataLoader workers.
    """

    def __init__(self, folder: PathLike):
        self.folder = Path(folder).expanduser()
        self._write_failed = False

    def __repr__(self) -> str:
        return f"MeshCache({str(self.folder)!r})"

    def prepare(self) -> None:
        """Create the folder and check that entries can be written there; raises OSError."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=self.folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
        remove_abandoned_temporaries(self.folder)

    def entry_path(self, path: PathLike) -> Path:
        digest = hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogatepass")).hexdigest()
        return self.folder / f"{digest}.mesh"

    def load(self, path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vertices (V, 3) float64, faces (F, 3) int64 and cumulative face areas (F,) float64 of
        the .off file `path`: from a valid entry (read-only memory maps), else parsed with
        `read_off` and stored. Raises DataError as `read_off` does."""
        try:
            key = _file_key(path)
        except OSError:
            key = None  # read_off names the file and the reason
        entry = self.entry_path(path)
        if key is not None:
            arrays = read_entry(entry, key)
            if arrays is not None:
                return arrays
        vertices, faces = read_off(path)
        cum_areas = cumulative_areas(vertices, faces)
        if key is not None:
            self._store(entry, key, vertices, faces, cum_areas)
        return vertices, faces, cum_areas

    def _store(self, entry: Path, key: dict, vertices, faces, cum_areas) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_entry(entry, key, vertices, faces, cum_areas)
        except OSError as e:  # a full or read-only disk slows loading down but changes no result
            if not self._write_failed:
                warnings.warn(f"mesh cache {self.folder}: cannot write entries ({e.strerror or e}); "
                              f"meshes are parsed on every read", stacklevel=3)
            self._write_failed = True


def write_entry(entry: PathLike, key: dict, vertices: np.ndarray, faces: np.ndarray,
                cum_areas: np.ndarray) -> None:
    """Write an entry atomically: a temporary file in the same folder, renamed over `entry`."""
    arrays = [np.ascontiguousarray(a, dtype=dtype) for a, (_, dtype, _) in
              zip((vertices, faces, cum_areas), _LAYOUT)]
    checksum = 0
    for a in arrays:
        checksum = zlib.crc32(a.data, checksum)
    header = json.dumps({"key": key, "vertices": len(arrays[0]), "faces": len(arrays[1]),
                         "crc32": checksum}, sort_keys=True).encode("utf-8")
    start = -(-(len(MAGIC) + 8 + len(header)) // _ALIGN) * _ALIGN
    header = header.ljust(start - len(MAGIC) - 8)
    entry = Path(entry)
    tmp = entry.parent / f".{entry.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + header)
            for a in arrays:
                f.write(a.data)
        os.replace(tmp, entry)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_entry(entry: PathLike, key: dict) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The arrays of `entry` when it exists, belongs to `key` and is intact; None otherwise
    (missing, stale, truncated, corrupt or unreadable: the caller rebuilds it)."""
    try:
        # non-blocking and not through a symlink: a FIFO or a device planted here is never waited on
        fd = os.open(entry, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            prefix = f.read(len(MAGIC) + 8)
            if len(prefix) < len(MAGIC) + 8 or prefix[:len(MAGIC)] != MAGIC:
                return None
            header_len = int.from_bytes(prefix[len(MAGIC):], "little")
            if header_len > min(_MAX_HEADER, size - len(MAGIC) - 8):
                return None
            header = json.loads(f.read(header_len))
            if not isinstance(header, dict):
                return None
        if header.get("key") != key:
            return None
        offset = len(MAGIC) + 8 + header_len
        nv, nf = int(header["vertices"]), int(header["faces"])
        shapes = ((nv, 3), (nf, 3), (nf,))
        payload = 8 * (3 * nv + 3 * nf + nf)
        if nv < 1 or nf < 1 or offset + payload != size:
            return None
        data = np.memmap(entry, dtype=np.uint8, mode="r", offset=offset, shape=(payload,))
        if zlib.crc32(data) != header["crc32"]:
            return None
        arrays, start = [], 0
        for (_, dtype, _), shape in zip(_LAYOUT, shapes):
            count = int(np.prod(shape))
            arrays.append(np.asarray(data[start:start + 8 * count]).view(dtype).reshape(shape))
            start += 8 * count
        return tuple(arrays)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def remove_abandoned_temporaries(folder: PathLike) -> int:
    """Remove the temporaries of entry writes that were killed before their rename: those of a
    process that no longer runs on this machine, and any older than an hour. Returns how many."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        match = _TEMPORARY.match(name)
        if not match:
            continue
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
            pid = int(match.group(1)) if match.group(1) else None
            young = time.time() - info.st_mtime < _ABANDONED_AFTER_S
            if young and (pid is None or pid == os.getpid() or _running(pid)):
                continue
            os.unlink(path)
            removed += 1
        except OSError:  # gone already, or not ours to remove: harmless
            continue
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True

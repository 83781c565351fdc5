"""Writing result files so that nothing is lost, half-written or written outside its folder.

- `atomic_write(path, flag)`: the content goes to a new temporary file beside `path`, which is
  renamed over `path` only when complete; a failed or interrupted write leaves the old file as it
  was. Temporary files are created with O_CREAT | O_EXCL | O_NOFOLLOW, so a planted symlink is
  never followed.
- `write_new_file(folder, name, write, flag)`: a file under a fresh name in `folder` (the next
  free `<stem>.<k><suffix>` when the name is taken); an existing file or symlink is never opened,
  followed or replaced.
- `fit_name(folder, name)`: a file name no longer than the file system allows, still telling
  different long names apart.
- `print_line(line)`: print a result line that holds any file name, also one that is not valid
  in the output's encoding (undecodable bytes of a name are written back as they were).

A failure is an `OutputError` naming the file and the flag, with the reason (a full disk, a name
too long, a folder that went away).
"""
import contextlib
import errno
import hashlib
import os
import secrets
import stat
import sys
from typing import IO, Callable, Iterator, Optional, TextIO

from clip2point.utils.errors import UserError

# open flags of every file created here: never an existing file, never through a symlink
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_TMP_PREFIX_BYTES = 64  # of the target's name, in the temporary file's name


class OutputError(UserError, OSError):
    """An output file could not be written; the message names the file and the flag."""


def output_error(err: BaseException, path: str, flag: Optional[str]) -> OutputError:
    """One-line error for a failed write of `path` (given by `flag`, e.g. "--json")."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else (str(err) or type(err).__name__)
    if isinstance(err, MemoryError):
        reason = "out of memory"
    where = f"{flag} {path}" if flag else str(path)
    return OutputError(f"{where}: cannot write the file ({reason})")


def name_max(folder: str) -> int:
    """Longest file name (bytes) the file system of `folder` takes (255 where it cannot be asked)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _bytes_prefix(text: str, limit: int) -> str:
    """The longest prefix of `text` whose file-system encoding holds at most `limit` bytes."""
    while len(os.fsencode(text)) > limit:
        text = text[:-max(1, (len(os.fsencode(text)) - limit) // 4)]
    return text


def fit_name(folder: str, name: str, reserve: int = 0) -> str:
    """`name`, or when it is longer than the file system allows (leaving `reserve` bytes for a
    number), its beginning plus `~` and 10 hex digits of a hash of the whole name, keeping the
    suffix: two long names that differ anywhere stay different."""
    limit = name_max(folder) - reserve
    if len(os.fsencode(name)) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    suffix = dot + suffix if stem and len(suffix) <= 16 else ""
    stem = name[:len(name) - len(suffix)]
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:10]
    return _bytes_prefix(stem, limit - len(os.fsencode(suffix)) - 11) + "~" + digest + suffix


def _create_temporary(path: str) -> "tuple[int, str]":
    """A new temporary file beside `path` (its name starts with `.<name>.` and ends with `.tmp`)."""
    folder, name = os.path.split(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(folder, f".{_bytes_prefix(name, _TMP_PREFIX_BYTES)}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.path.join(folder, name))


@contextlib.contextmanager
def atomic_write(path: str, flag: Optional[str] = None, mode: str = "w", encoding: str = "utf-8",
                 errors: str = "surrogateescape", newline: Optional[str] = None) -> Iterator[IO]:
    """`with atomic_write(path, "--json") as f: ...` writes a temporary file and renames it to
    `path` when the block ends without error (text mode by default: UTF-8, undecodable bytes of
    file names written back as they were). On any error the temporary file is removed, `path` is
    untouched, and OSError / MemoryError become an OutputError naming `path` and `flag`."""
    tmp = None
    try:
        fd, tmp = _create_temporary(path)
        with (os.fdopen(fd, "wb") if "b" in mode else
              open(fd, "w", encoding=encoding, errors=errors, newline=newline)) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):  # a replaced file keeps its permissions
            if not os.path.islink(path):
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
        tmp = None
    except (OSError, MemoryError) as err:
        if isinstance(err, OutputError):
            raise
        raise output_error(err, path, flag) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_new_file(folder: str, name: str, write: Callable[[IO], None], flag: Optional[str] = None) -> str:
    """Write a new file `folder/<name>` with `write(binary file)`, and return its path.

    The name is shortened to fit the file system (`fit_name`); when it is taken (by anything: a
    file, a folder, a symlink) the next free `<stem>.<k><suffix>`, k = 2, 3, ..., is used. The
    final name is claimed with O_CREAT | O_EXCL | O_NOFOLLOW before the content, written to a
    temporary file, is renamed onto it: no existing entry is ever followed or replaced, and no
    one sees a half-written file under the final name.
    """
    stem, dot, suffix = fit_name(folder, name, reserve=8).rpartition(".")
    stem, suffix = (stem, dot + suffix) if stem else (suffix, "")
    k, target = 1, None
    try:
        while True:
            candidate = os.path.join(folder, f"{stem}{suffix}" if k == 1 else f"{stem}.{k}{suffix}")
            try:
                os.close(os.open(candidate, _CREATE, 0o666))
                target = candidate
                break
            except FileExistsError:
                k += 1
        with atomic_write(target, flag, mode="wb") as f:
            write(f)
        return target
    except (OSError, MemoryError) as err:
        if target is not None:
            with contextlib.suppress(OSError):
                os.unlink(target)
        if isinstance(err, OutputError):
            raise
        raise output_error(err, target or os.path.join(folder, name), flag) from None


def print_line(line: str, file: Optional[TextIO] = None) -> None:
    """print(line) flushed at once; characters the stream cannot encode (undecodable bytes of a
    file name, kept as surrogates) are written as the bytes they stand for."""
    stream = sys.stdout if file is None else file
    try:
        stream.write(line + "\n")
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            data = (line + "\n").encode(encoding, "surrogateescape")
        except UnicodeEncodeError:  # a character the encoding lacks: shown escaped
            data = (line + "\n").encode(encoding, "backslashreplace")
        buffer = getattr(stream, "buffer", None)
        if buffer is None:  # a text-only stream: the closest text
            stream.write(data.decode(encoding, "replace"))
        else:
            stream.flush()
            buffer.write(data)
            buffer.flush()
    stream.flush()

"""What the entry scripts share: flags and their checks, errors, devices."""
import argparse
import errno
import os
import sys
from typing import Callable, Optional

import torch

from clip2point.utils import distributed, interrupts
from clip2point.utils.errors import UsageError, UserError
from clip2point.utils.run_folder import release_run_folders, unwritable_folder

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag ends with one line on stderr and exit code 2."""

    def error(self, message: str) -> None:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


MAX_SEED = 2 ** 32 - 1  # NumPy's generator takes seeds up to this


def seed_value(text: str) -> int:
    """argparse type of --seed: an integer from 0 to MAX_SEED."""
    try:
        seed = int(text)
    except ValueError:
        seed = None
    if seed is None or not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {text!r}")
    return seed


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every script has besides the paper's own."""
    parser.add_argument("--clip", default="ViT-B/32",
                        help="CLIP tower: an OpenAI name (RN50 ... ViT-L/14@336px, cached in ~/.cache/clip), "
                             "open_clip:ARCH/TAG, open_clip:ARCH/FILE or a local OpenAI checkpoint file "
                             "(default ViT-B/32; docs/backbones.md)")
    parser.add_argument("--data_root", default="./data", help="folder holding the datasets (default ./data)")
    parser.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="data loading processes (default 4, or fewer on machines with fewer cores)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--seed", type=seed_value, default=0, help=f"random seed, 0 to {MAX_SEED} (default 0)")
    parser.add_argument("--backend", default="native", choices=["native", "pytorch3d"],
                        help="depth renderer: native (plain PyTorch, default) or pytorch3d (reference)")
    parser.add_argument("--amp", default="off", choices=list(AMP_DTYPES),
                        help="mixed precision of the image encoders on CUDA: off (float32, the paper's, "
                             "default), fp16 (with gradient scaling when training) or bf16; ignored on CPU")


def add_view_arguments(parser: argparse.ArgumentParser, views_help: str,
                       dim_help: str = "learnable view selector feature size, 0 = fixed views "
                                       "(default 0; the learnable variant uses 512)") -> None:
    """--views (the view set, 10 by default) and the learnable view selector's --dim and --model,
    as the two training scripts take them."""
    parser.add_argument("--views", type=int, default=10, choices=[6, 10], help=views_help)
    parser.add_argument("--dim", type=non_negative_int, default=0, help=dim_help)
    parser.add_argument("--model", default="PointNet", choices=["PointNet", "DGCNN"],
                        help="shape extractor of the learnable view selector (default PointNet)")


def non_negative_int(text: str) -> int:
    """argparse type of a count that may be 0 (a bad value is the parser's one-line error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def run(main: Callable[[argparse.Namespace], object], args: argparse.Namespace,
        exit_code: Optional[Callable[[object], int]] = None) -> None:
    """Call main(args); a user-fixable error becomes one stderr line and exit code 2, Ctrl-C and
    SIGTERM one line and exit code 130 and 143 (utils/interrupts.py); otherwise the exit code is
    exit_code(what main returned) (default 0). Under torchrun the process group is left at the
    end and errors of ranks other than 0 name their rank."""
    interrupts.install()
    try:
        result = interrupts.call(main, args)  # after Ctrl-C or SIGTERM, whatever ends main is that signal
        code = exit_code(result) if exit_code is not None else 0
        if code:
            sys.exit(code)
    except UserError as err:
        message = " ".join(str(err).split("\n"))  # one line, whatever the message holds
        sys.stderr.write(f"error{_rank_note()}: {message}\n")
        sys.exit(2)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: training runs say where to continue from
        sys.stderr.write(f"{err or 'interrupted'}{_rank_note()}\n")
        sys.exit(getattr(err, "exit_code", 130))
    except OSError as err:  # the file system refused: no traceback for a permission or a full disk
        if err.errno not in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        sys.stderr.write(f"error{_rank_note()}: {err.filename or 'a file'}: {err.strerror}\n")
        sys.exit(2)
    finally:
        release_run_folders()
        distributed.cleanup()
        interrupts.restore()


def exit_at_once(code: int = 0) -> None:
    """End the process without Python's shutdown, which with torch loaded takes about 0.5 s (the
    teardown of every module and collections over torch's objects): a sixth of classify.py's run
    on one file. Only for the end of a script whose own files are all closed; stdout and stderr
    are flushed first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`| head`) or a closed stream
            pass
    os._exit(code)


def check_output_file(path: Optional[str], flag: str) -> None:
    """Before any work: a UsageError naming `flag` when the file `path` could not be written."""
    if not path:
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a folder; expected a file name")
    name = os.fsencode(os.path.basename(path))
    if len(name) > 255:  # the common file-system limit (NAME_MAX): the write at the end would fail
        raise UsageError(f"{flag} {path}: the file name is {len(name)} bytes long, more than the 255 a file "
                         f"system takes")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{flag} {path}: the file exists and cannot be written")
        return
    blocked = unwritable_folder(os.path.dirname(os.path.abspath(path)))
    if blocked is not None:
        raise UsageError(f"{flag} {path}: cannot create the file, {blocked} is not a writable folder")


def check_output_folder(path: Optional[str], flag: str) -> None:
    """Before any work: a UsageError naming `flag` when files cannot be written into the folder `path`."""
    if not path:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file; expected a folder")
    blocked = unwritable_folder(path)
    if blocked is not None:
        raise UsageError(f"{flag} {path}: {blocked} is not a writable folder")


def _rank_note() -> str:
    return f" (rank {os.environ['RANK']})" if os.environ.get("RANK", "0") != "0" else ""


def get_device(name: str) -> torch.device:
    """The requested device, or a UsageError if it is not available here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a torch device (expected cpu, cuda or cuda:N)") from None
    if device.type == "meta":
        raise UsageError("--device meta holds no data, nothing can run on it (expected cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available; use --device cpu")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError):
        raise UsageError(f"--device {name}: this torch has no usable {name} device here (expected cpu, or "
                         f"cuda / cuda:N on a machine with that GPU)") from None
    return device


MAX_NUM_POINTS = 1_000_000  # per object: more points cannot change a depth map, they only take memory


def check_num_points(num_points: int) -> None:
    """UsageError for a --num_points above MAX_NUM_POINTS (checked before anything is allocated)."""
    if num_points > MAX_NUM_POINTS:
        raise UsageError(f"--num_points {num_points} is more than the {MAX_NUM_POINTS:,} points this tool takes "
                         f"per object (a depth map has a few hundred pixels a side: more points only take memory)")


def require_positive(args: argparse.Namespace, *flags: str) -> None:
    """UsageError naming the first of `flags` (attribute names of args) whose value is below 1."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} must be >= 1, got {value}")


def amp_dtype(amp: str, device: torch.device, announce: bool = True) -> Optional[torch.dtype]:
    """The autocast dtype of --amp on `device`: None for off, and on CPU, where --amp is ignored
    with a one-line note (printed when `announce`)."""
    if amp not in AMP_DTYPES:
        raise UsageError(f"--amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    if amp == "off":
        return None
    if device.type != "cuda":
        if announce:
            print(f"note: --amp {amp} applies on CUDA only; running in float32 on {device.type}", flush=True)
        return None
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--amp bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                         f"use --amp fp16 or off")
    return AMP_DTYPES[amp]


def loader_workers(num_workers: int) -> int:
    if num_workers < 0:
        raise UsageError(f"--num_workers must be >= 0, got {num_workers}")
    return num_workers


def check_batches(dataset, batch_size: int, name: str) -> None:
    """Training drops the last incomplete batch: a batch larger than the data would train nothing."""
    if batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {batch_size}")
    if len(dataset) < batch_size:
        raise UsageError(f"--batch_size {batch_size} is larger than the {len(dataset)} objects of {name}; "
                         f"no full batch to train on")

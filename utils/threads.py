"""How many CPU threads torch's operators use, for each kind of work (docs/benchmarks.md#threads).

Batched model work (rendering and encoding a batch) keeps torch's default, one intra-op thread per
core. Per-object work that loops over many small operators (farthest point sampling: about 17
operators of a few hundred KB per chosen point) runs on one thread: split over threads, each
operator pays a fork and a join that cost more than its arithmetic, and on a busy machine a thread
that waits for a core stalls the others (two threads were several times slower than one). A
DataLoader worker is one object at a time, so it gets one thread too: the workers are the
parallelism.
"""
import contextlib
from typing import Iterator

import torch

PER_OBJECT_THREADS = 1


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads in the calling thread, then restore the count."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def per_object_work() -> contextlib.AbstractContextManager:
    """The thread count of a per-object loop of small operators: `with per_object_work(): ...`."""
    return intra_op_threads(PER_OBJECT_THREADS)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: one intra-op thread per worker (torch's loader does so today
    too; the project does not rely on that)."""
    torch.set_num_threads(PER_OBJECT_THREADS)

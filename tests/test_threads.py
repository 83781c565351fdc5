"""The thread policy: per-object loops on one intra-op thread, DataLoader workers on one each,
batched work on torch's default (bench/fps.py measures why)."""
import pytest
import torch
from torch.utils.data import Dataset

import clip2point.datasets.fps as fps
from clip2point.utils import distributed
from clip2point.utils.threads import PER_OBJECT_THREADS, intra_op_threads, per_object_work, worker_init_fn


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_intra_op_threads_sets_and_restores(two_threads):
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError):
        with intra_op_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2  # restored after an error too
    with intra_op_threads(2):
        assert torch.get_num_threads() == 2
    with per_object_work():
        assert torch.get_num_threads() == PER_OBJECT_THREADS == 1


def test_cpu_fps_runs_on_one_thread_and_gives_the_threads_back(two_threads, monkeypatch):
    seen = []
    blocked = fps.blocked_farthest_point_sample

    def spy(points, k):
        seen.append(torch.get_num_threads())
        return blocked(points, k)

    monkeypatch.setattr(fps, "blocked_farthest_point_sample", spy)
    points = torch.randn(1, 300, 3)
    idx = fps.farthest_point_sample(points, 16)
    assert seen == [1] and torch.get_num_threads() == 2
    assert torch.equal(idx, fps.reference_farthest_point_sample(points, 16))  # the same at any count


def test_worker_init_fn_gives_one_thread(two_threads):
    worker_init_fn(0)
    assert torch.get_num_threads() == 1


class Threads(Dataset):
    """Items: the intra-op thread count of the process that loads them."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch.get_num_threads()


def test_project_loaders_use_the_worker_policy(two_threads):
    loaders = [distributed.eval_loader(Threads(), batch_size=1, num_workers=1),
               distributed.train_loader(Threads(), 1, drop_last=False, num_workers=1, device=torch.device("cpu"),
                                        seed=0)[0]]
    for loader in loaders:
        assert loader.worker_init_fn is worker_init_fn
        assert [int(t) for t in loader] == [1, 1]
    assert torch.get_num_threads() == 2  # the main process keeps its threads for batched work

"""The user-error types: one base class caught by the scripts, and the same one-line message
whether the error is raised in the main process or in a DataLoader worker."""
import pickle

import pytest
from torch.utils.data import DataLoader, Dataset

from clip2point.datasets.common import DataError, DatasetNotFound
from clip2point.utils.checkpoint import CheckpointError
from clip2point.utils.cli import UsageError
from clip2point.utils.clip_loader import ClipLoadError, ClipWeightsMissing
from clip2point.utils.errors import UserError


class Failing(Dataset):
    def __init__(self, error: Exception):
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        try:
            raise OSError("disk said no")
        except OSError as cause:  # a chained cause must not leak into the message
            raise self.error from cause


def test_every_user_error_derives_from_the_base_and_keeps_its_builtin_base():
    for cls, builtin in ((UsageError, ValueError), (DataError, ValueError), (CheckpointError, RuntimeError),
                         (ClipLoadError, RuntimeError), (ClipWeightsMissing, RuntimeError),
                         (DatasetNotFound, FileNotFoundError)):
        assert issubclass(cls, UserError) and issubclass(cls, builtin), cls


@pytest.mark.parametrize("error", [DataError("a.ply: line 12: expected 3 coordinates, got 2"),
                                   DatasetNotFound("ShapeNet55", "/data/ShapeNet55/x.npy", "missing file")])
@pytest.mark.parametrize("workers", [0, 1])
def test_worker_errors_arrive_as_the_original_type_and_line(error, workers):
    with pytest.raises(type(error)) as caught:
        next(iter(DataLoader(Failing(error), num_workers=workers)))
    assert str(caught.value) == str(error)
    assert len(str(caught.value).splitlines()) == 1


def test_dataset_not_found_pickles():
    error = DatasetNotFound("ModelNet40_Ply", "/data/ModelNet40_Ply", "folder not found")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is DatasetNotFound and str(again) == str(error) and again.path == error.path

"""Encode once: fixed test points through frozen encoders are encoded on the first pass and reused,
with the same features, predictions and random stream as encoding them every time."""
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from clip2point.datasets import ModelNet40Ply
from clip2point.models import DPA
from clip2point.utils.encode_once import EncodeOnce
from clip2point.utils.evaluation import predict


def test_second_pass_reuses_the_first_without_encoding_or_loading():
    points = torch.arange(24, dtype=torch.float32).view(6, 4)
    loader = DataLoader(TensorDataset(points, torch.arange(6)), batch_size=4)
    calls = []

    def encode(x):
        calls.append(len(x))
        return x * 2

    once = EncodeOnce(loader, encode, torch.device("cpu"))
    assert len(once) == 2 and once.dataset is loader.dataset and once.nbytes() == 0
    partial = iter(once)
    next(partial)  # an interrupted pass is not kept
    assert once.batches is None
    first = list(once)
    second = list(once)
    assert calls == [4, 4, 2]
    assert [f.tolist() for f, _ in first] == [f.tolist() for f, _ in second] == [
        (points[:4] * 2).tolist(), (points[4:] * 2).tolist()]
    assert [lab.tolist() for _, lab in second] == [[0, 1, 2, 3], [4, 5]]
    assert once.nbytes() == 6 * 4 * 4


def test_random_stream_matches_iterating_the_loader():
    loader = DataLoader(TensorDataset(torch.zeros(5, 3), torch.zeros(5)), batch_size=2)
    torch.manual_seed(0)
    for _ in range(3):
        list(loader)
    expected = torch.rand(4)
    torch.manual_seed(0)
    once = EncodeOnce(loader, lambda x: x, torch.device("cpu"))
    for _ in range(3):
        list(once)
    assert torch.equal(torch.rand(4), expected)


def test_dpa_cached_features_and_predictions_equal_recomputing(tiny_clip, synthetic_root):
    torch.manual_seed(0)
    model = DPA(clip_model=tiny_clip, views=10).eval()
    full = ModelNet40Ply(synthetic_root, "test")
    test_set = Subset(full, range(0, len(full), max(1, len(full) // 6)))
    loader = DataLoader(test_set, batch_size=4)
    prompts = torch.nn.functional.normalize(torch.randn(len(full.classes), 512), dim=-1)
    with torch.no_grad():
        points = torch.stack([test_set[i][0] for i in range(3)])
        features = model.encode(points)
        assert features.shape == (3, 2, 10, 512)
        assert torch.equal(model.adapt(features), model(points))
    labels, preds = predict(lambda p: model(p) @ prompts.t(), loader, torch.device("cpu"))
    once = EncodeOnce(loader, model.encode, torch.device("cpu"))
    for _ in range(2):  # the encoding pass and the cached pass
        cached_labels, cached_preds = predict(lambda f: model.adapt(f) @ prompts.t(), once, torch.device("cpu"))
        assert (cached_labels == labels).all() and (cached_preds == preds).all()
    kept = torch.cat([f for f, _ in once])
    with torch.no_grad():
        assert torch.equal(kept, torch.cat([model.encode(p) for p, _ in loader]))
    assert kept.dtype == torch.float32 and len(kept) == len(test_set)

"""View weights: parsing, the coordinate-ascent search, and zeroshot.py's --projection, --view_weights
and --search_view_weights on the synthetic data with the tiny CLIP."""
import csv

import pytest
import torch

import zeroshot
from clip2point.datasets import ModelNet10
from clip2point.models.views import encode_views
from clip2point.render import DepthProjection, Renderer, Selector
from tests import helpers
from clip2point.utils.prompts import encode_prompts
from clip2point.utils.cli import run
from clip2point.utils.errors import UsageError
from clip2point.utils.scoring import view_similarities
from clip2point.utils.view_weights import format_view_weights, parse_view_weights, search_view_weights, weighted_accuracy


def parse(*argv):
    return helpers.parse(zeroshot, *argv)


@pytest.fixture(scope="module")
def data(synthetic_root):
    return str(synthetic_root)


def test_parse_view_weights():
    assert torch.equal(parse_view_weights("1,0.5,0,2", 4), torch.tensor([1.0, 0.5, 0.0, 2.0]))
    assert format_view_weights(torch.tensor([1.0, 0.25, 0.0])) == "1,0.25,0"
    for text, words in (("1,1", "expected 3 weights"), ("1,a,1", "comma-separated"), ("1,-1,1", ">= 0"),
                        ("0,0,0", "not all 0"), ("1,nan,1", "finite")):
        with pytest.raises(UsageError, match=words) as err:
            parse_view_weights(text, 3)
        assert "--view_weights" in str(err.value)


def two_view_case():
    """Four objects, labels 0, 1, 0, 1, two classes. View 0 is right by a margin of 1 on every object;
    view 1 is wrong by 3 on objects 0 and 1 and right by 3 on objects 2 and 3; view 2 is all zero."""
    labels = torch.tensor([0, 1, 0, 1])
    sims = torch.zeros(4, 3, 2)
    for m, label in enumerate(labels.tolist()):
        sims[m, 0, label] = 1.0
        sims[m, 1, 1 - label if m < 2 else label] = 3.0
    return sims, labels


def test_weighted_accuracy_by_hand():
    sims, labels = two_view_case()
    # all ones: objects 0, 1 score 3 for the wrong class against 1 -> 2 of 4 right
    assert float(weighted_accuracy(sims, labels, torch.ones(3))) == 0.5
    # w1 = 0.25: the wrong class gets 0.75 < 1 -> all right; a batch of weight vectors at once
    accs = weighted_accuracy(sims, labels, torch.tensor([[1.0, 0.25, 1.0], [0.0, 1.0, 1.0], [1.0, 0.5, 0.0]]))
    assert accs.tolist() == [1.0, 0.5, 0.5]


def test_search_by_hand():
    sims, labels = two_view_case()
    weights, acc = search_view_weights(sims, labels)
    # view 0: no value beats 0.5, keep 1; view 1: 0 and 0.25 reach 1.0, the first (0) wins; view 2 ties
    assert weights.tolist() == [1.0, 0.0, 1.0] and acc == 1.0


def test_search_keeps_ones_without_gain_and_never_all_zero():
    sims = torch.zeros(2, 1, 2)
    sims[:, 0, 1] = 1.0  # one view, always predicting class 1: right on object 1 only
    weights, acc = search_view_weights(sims, torch.tensor([0, 1]))
    # weight 0 would predict class 0 for both (argmax of zeros) with the same accuracy, and is all zero
    assert weights.tolist() == [1.0] and acc == 0.5


def exit_message(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        run(zeroshot.main, parse(*argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_view_flag_errors(data, tiny_clip_path, capsys):
    common = ["--data_root", data, "--clip", tiny_clip_path, "--dataset", "ModelNet10"]
    assert "--view_weights" in exit_message(capsys, *common, "--view_weights", "1,1,1")
    assert "expected 10 weights" in exit_message(capsys, *common, "--projection", "realistic",
                                                 "--view_weights", "1,1,1,1,1,1")
    assert "--views 6" in exit_message(capsys, *common, "--projection", "realistic", "--views", "6")
    assert "exclude" in exit_message(capsys, *common, "--view_weights", "1,1,1,1,1,1", "--search_view_weights", 2)
    assert "--search_view_weights" in exit_message(capsys, *common, "--search_view_weights", -1)


def test_missing_training_split_is_found_before_clip_loads(tmp_path, data, capsys):
    # ModelNet40's test points are there, its training meshes are not; CLIP is not there either
    (tmp_path / "ModelNet40_Ply").symlink_to(f"{data}/ModelNet40_Ply")
    err = exit_message(capsys, "--data_root", tmp_path, "--clip", tmp_path / "missing_clip.pt",
                       "--search_view_weights", 1)
    assert "ModelNet40_Align" in err and "missing_clip" not in err


def test_view_weights_select_views(tmp_path, data, tiny_clip_path, tiny_clip, capsys):
    out = tmp_path / "pred.csv"
    zeroshot.main(parse("--data_root", data, "--clip", tiny_clip_path, "--dataset", "ModelNet10",
                        "--view_weights", "0,0,1,0,0,0", "--save_predictions", out))
    with open(out) as f:
        got = [int(row["pred"]) for row in csv.DictReader(f)]
    # the same objects through the shared building blocks: the score is view 2's similarity alone
    dataset = ModelNet10(data, "test", num_points=1024, seed=0)
    points = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        images = DepthProjection(Selector(6), Renderer())(points, rot=True)
        sims = view_similarities(encode_views(tiny_clip.visual, images), encode_prompts(tiny_clip, dataset.prompts), 6)
    assert got == sims[:, 2].argmax(dim=1).tolist()
    assert got != sims.sum(dim=1).argmax(dim=1).tolist()  # the weights changed the answer


def test_search_reads_only_training_objects_once(monkeypatch, data, tiny_clip_path, capsys):
    """The realistic projection with a weight search whose test split raises if read during the search."""
    state = {"searching": False, "reads": {"train": [], "test": []}}
    original_getitem, original_pick = ModelNet10.__getitem__, zeroshot.pick_view_weights

    def guarded_getitem(self, index):
        if self.partition == "test" and state["searching"]:
            raise AssertionError("the test split was read during the view weight search")
        state["reads"][self.partition].append(self.files[index])
        return original_getitem(self, index)

    def guarded_pick(*args, **kwargs):
        state["searching"] = True
        try:
            return original_pick(*args, **kwargs)
        finally:
            state["searching"] = False

    monkeypatch.setattr(ModelNet10, "__getitem__", guarded_getitem)
    monkeypatch.setattr(zeroshot, "pick_view_weights", guarded_pick)
    zeroshot.main(parse("--data_root", data, "--clip", tiny_clip_path, "--dataset", "ModelNet10",
                        "--projection", "realistic", "--search_view_weights", 1))
    printed = capsys.readouterr().out
    train, test = state["reads"]["train"], state["reads"]["test"]
    # one training object per class, each read (and encoded) once; then every test object once
    assert len(train) == len(set(train)) == 10
    assert len(test) == len(set(test)) == len(ModelNet10(data, "test"))
    assert not set(train) & set(test)
    assert "10 ModelNet10 training objects (1 per class, held out from the test set)" in printed
    chosen = printed.split("chosen view weights: --view_weights ")[1].split()[0]
    weights = [float(w) for w in chosen.split(",")]
    assert len(weights) == 10 and all(w in (0, 0.25, 0.5, 0.75, 1) for w in weights)
    assert printed.index("chosen view weights") < printed.index("accuracy:")
    assert "realistic projection, 10 views" in printed

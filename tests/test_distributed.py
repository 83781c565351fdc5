"""Two CPU processes (gloo) against one: NT-Xent scopes, gradients, synchronised batch norm,
sharded evaluation, and the two training scripts under torchrun."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch_optimizer
from lightly.loss import NTXentLoss  # the reference of models/ntxent.py
from torch.utils.data import default_collate

from clip2point.datasets import ShapeNetRender
from clip2point.models import CLIP2Point, DPA
from clip2point.models.adapter import SimplifiedAdapter
from clip2point.models.ntxent import nt_xent
from tests.helpers import small_data_root
from clip2point.render import Renderer
from clip2point.utils import distributed
from clip2point.utils.clip_loader import load_clip
from clip2point.utils.cli import UsageError
from clip2point.utils.evaluation import predict_all
from clip2point.utils.resume import read_resume, resume

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
GLOBAL_BATCH = 8
STEPS = 3
NUM_POINTS = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ObjectJitterRenderer(Renderer):
    """The renderer with its distance jitter (docs/method.md#rendering, step 2) drawn from a generator seeded by each
    object's points, so an object gets the same jitter whichever process renders it and in whatever
    batch. Otherwise the same arithmetic as `Renderer(..., aug=True)`."""

    def forward(self, points, azim, elev, dist, view, aug=False, rot=False):
        if not aug:
            return super().forward(points, azim, elev, dist, view, rot=rot)
        seeds = [int(hashlib.sha1(p.numpy().tobytes()).hexdigest()[:15], 16) for p in points]
        u = torch.stack([torch.rand(2, generator=torch.Generator().manual_seed(s)) for s in seeds])
        dist = torch.cat([dist * (1 + (u[:, :1] - 0.5) / 5), dist * (1 + (u[:, 1:] - 0.5) / 5)], dim=1)
        return super().forward(points, azim.repeat(1, 2), elev.repeat(1, 2), dist, 2 * view, rot=rot)


def make_model(clip_path: str, scope: str):
    torch.manual_seed(0)
    model = CLIP2Point(clip_model=load_clip(clip_path), views=10, ntxent_scope=scope)
    model.renderer = ObjectJitterRenderer()
    optimizer = torch_optimizer.Lamb([p for p in model.parameters() if p.requires_grad], lr=0.006,
                                     weight_decay=1e-4)
    return model, optimizer


def trained_grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------------------------------------
# what every process of the 2-process run does


def _pretrain_steps(root: str, clip_path: str, scope: str) -> dict:
    """STEPS pre-training steps of global batch GLOBAL_BATCH through the scripts' loader and DDP."""
    model, optimizer = make_model(clip_path, scope)
    ddp = distributed.wrap_ddp(model, torch.device("cpu"))
    dataset = ShapeNetRender(root, "train", num_points=NUM_POINTS, seed=0)
    loader, sampler = distributed.train_loader(dataset, GLOBAL_BATCH, drop_last=True, num_workers=0,
                                               device=torch.device("cpu"), seed=0)
    sampler.set_epoch(0)
    order, b = list(sampler), loader.batch_size
    out = {"indices": [], "losses": [], "grads": None}
    for step, (images, points, a, e, d) in enumerate(loader):
        if step == STEPS:
            break
        out["indices"].append(order[step * b:(step + 1) * b])
        loss, image_loss, depth_loss = ddp(points, images, a, e, d)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            out["grads"] = trained_grads(model)  # after DDP's averaging
        optimizer.step()
        out["losses"].append(distributed.all_reduce_mean(torch.stack([loss, image_loss, depth_loss])))
    out["params"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return out


def adapter_batch():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(GLOBAL_BATCH * 3, 16, generator=gen) * 2 + 1  # 8 objects x 3 views
    target = torch.randn(GLOBAL_BATCH, 16, generator=gen)
    return feats, target


def make_adapter():
    torch.manual_seed(1)
    return SimplifiedAdapter(num_views=3, in_features=16, dropout=0.0)


def _adapter_step(rank: int) -> dict:
    """One training step of a synchronised-BN adapter on this rank's half of the objects."""
    adapter = distributed.convert_sync_batchnorm(make_adapter(), torch.device("cpu"))
    ddp = distributed.wrap_ddp(adapter, torch.device("cpu"))
    feats, target = adapter_batch()
    half = GLOBAL_BATCH // WORLD
    mine = slice(rank * half * 3, (rank + 1) * half * 3)
    out = ddp(feats[mine])
    loss = ((out - target[rank * half:(rank + 1) * half]) ** 2).mean()
    loss.backward()
    adapter.eval()
    return {"out": out.detach(), "grads": trained_grads(adapter), "state": adapter.state_dict(),
            "eval_out": adapter(feats[mine]).detach(), "types": sorted({type(m).__name__ for m in adapter.modules()})}


class Items(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((2, 3), float(i)), i % 3


def ntxent_features():
    """f1, f2, f_depth, f_img of the global batch, (GLOBAL_BATCH, 16) each."""
    gen = torch.Generator().manual_seed(4)
    return [torch.randn(GLOBAL_BATCH, 16, generator=gen) for _ in range(4)]


def _ntxent_scopes(rank: int, clip_path: str) -> dict:
    """The model's two losses and their gradients at both scopes, with lightly's NTXentLoss beside them."""
    half = GLOBAL_BATCH // WORLD
    out = {}
    for scope, lightly_loss in (("global", NTXentLoss(temperature=0.07, gather_distributed=True)),
                                ("local", NTXentLoss(temperature=0.07))):
        model = make_model(clip_path, scope)[0]
        mine = [f[rank * half:(rank + 1) * half].clone().requires_grad_(True) for f in ntxent_features()]
        ours = torch.stack(model.contrastive(*mine))
        ours.sum().backward()
        theirs_in = [f.detach().clone().requires_grad_(True) for f in mine]
        f1, f2, f_depth, f_img = theirs_in
        theirs = torch.stack([lightly_loss(f_depth, f_img), lightly_loss(f1, f2)])
        theirs.sum().backward()
        out[scope] = {"ours": ours.detach(), "theirs": theirs.detach(),
                      "ours_grads": [f.grad for f in mine], "theirs_grads": [f.grad for f in theirs_in]}
    return out


def _worker(rank: int, port: int, root: str, clip_path: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = distributed.init_distributed(torch.device("cpu"))
    try:
        result = {"device": str(device), "rank": distributed.rank(), "world": distributed.world_size(),
                  "main": distributed.is_main()}
        for scope in ("global", "local"):
            result[scope] = _pretrain_steps(root, clip_path, scope)
        result["adapter"] = _adapter_step(rank)
        result["ntxent"] = _ntxent_scopes(rank, clip_path)
        loader = distributed.eval_loader(Items(7), batch_size=2, num_workers=0)
        # a "classifier" whose prediction is the item index, to check the gathered order
        labels, preds = predict_all(lambda p: torch.nn.functional.one_hot(p[:, 0, 0].long(), 7).float(), loader,
                                    device, "eval")
        result["eval"] = (labels, preds, len(loader.dataset))
        try:
            distributed.per_rank_batch(7)
        except UsageError as err:
            result["odd_batch_error"] = str(err)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        distributed.cleanup()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_clip_path, synthetic_root):
    root = str(synthetic_root)
    out = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(_worker, args=(free_port(), root, tiny_clip_path, str(out)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 300
    while not context.join(timeout=1):  # raises when a process failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail("the 2-process run did not finish within 300 s")
    return root, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ------------------------------------------------------------------------------------------------
# the single-process reference


def union_batch(dataset, ranks, step):
    """The objects that the ranks processed together at `step`, as one batch."""
    indices = [i for r in ranks for i in r["indices"][step]]
    return default_collate([dataset[i] for i in indices])


def as_model_inputs(batch):
    """(images, points, a, e, d) of the dataset -> the model's argument order."""
    images, points, a, e, d = batch
    return points, images, a, e, d


def assert_close_dicts(a: dict, b: dict, rtol: float, atol: float):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def test_processes_and_sampler_split(two_process_run):
    root, ranks = two_process_run
    assert [(r["rank"], r["world"], r["main"], r["device"]) for r in ranks] == [(0, 2, True, "cpu"),
                                                                               (1, 2, False, "cpu")]
    for step in range(STEPS):
        a, b = ranks[0]["global"]["indices"][step], ranks[1]["global"]["indices"][step]
        assert len(a) == len(b) == GLOBAL_BATCH // WORLD and not set(a) & set(b)
    # every rank saw each object at most once in the epoch
    seen = [i for r in ranks for step in r["global"]["indices"] for i in step]
    assert len(seen) == len(set(seen)) == STEPS * GLOBAL_BATCH
    assert "must split evenly over the 2 processes" in ranks[0]["odd_batch_error"]


def test_global_scope_equals_one_process_with_the_global_batch(two_process_run, tiny_clip_path):
    root, ranks = two_process_run
    dataset = ShapeNetRender(root, "train", num_points=NUM_POINTS, seed=0)
    model, optimizer = make_model(tiny_clip_path, "global")
    for step in range(STEPS):
        images, points, a, e, d = union_batch(dataset, [r["global"] for r in ranks], step)
        loss, image_loss, depth_loss = model(points, images, a, e, d)
        expected = torch.stack([loss, image_loss, depth_loss]).detach()
        # both ranks computed the losses of the whole global batch
        for r in ranks:
            torch.testing.assert_close(r["global"]["losses"][step], expected, rtol=0, atol=1e-5)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            # gather backward (x2) and DDP averaging (/2) give exactly the single-process gradient
            assert_close_dicts(ranks[0]["global"]["grads"], trained_grads(model), rtol=1e-4, atol=1e-7)
            assert_close_dicts(ranks[1]["global"]["grads"], trained_grads(model), rtol=1e-4, atol=1e-7)
        optimizer.step()
    assert_close_dicts(ranks[0]["global"]["params"], dict((n, p.detach()) for n, p in model.named_parameters()
                                                          if p.requires_grad), rtol=1e-4, atol=1e-6)


def test_local_scope_is_the_mean_of_the_half_batch_losses(two_process_run, tiny_clip_path):
    root, ranks = two_process_run
    dataset = ShapeNetRender(root, "train", num_points=NUM_POINTS, seed=0)
    model, optimizer = make_model(tiny_clip_path, "local")
    for step in range(STEPS):
        halves = [model(*as_model_inputs(union_batch(dataset, [r["local"]], step))) for r in ranks]
        mean = [sum(h[k] for h in halves) / WORLD for k in range(3)]
        for r in ranks:
            torch.testing.assert_close(r["local"]["losses"][step], torch.stack(mean).detach(), rtol=0, atol=1e-5)
        if step == 0:  # the two scopes really differ
            assert abs(float(ranks[0]["local"]["losses"][0][1] - ranks[0]["global"]["losses"][0][1])) > 1e-2
        optimizer.zero_grad()
        mean[0].backward()
        if step == 0:
            assert_close_dicts(ranks[0]["local"]["grads"], trained_grads(model), rtol=1e-4, atol=1e-7)
        optimizer.step()


def test_ntxent_scopes_match_lightly(two_process_run):
    """Global scope: every process has the loss of the whole batch, which is the mean of lightly's
    gathered per-process losses, with the same gradients. Local scope: lightly on each slice."""
    _, ranks = two_process_run
    for r in ranks:
        torch.testing.assert_close(r["ntxent"]["local"]["ours"], r["ntxent"]["local"]["theirs"], rtol=0, atol=1e-6)
        torch.testing.assert_close(r["ntxent"]["global"]["ours"], ranks[0]["ntxent"]["global"]["ours"], rtol=0, atol=0)
        for scope in ("global", "local"):
            for ours, theirs in zip(r["ntxent"][scope]["ours_grads"], r["ntxent"][scope]["theirs_grads"]):
                torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    lightly_mean = sum(r["ntxent"]["global"]["theirs"] for r in ranks) / WORLD
    torch.testing.assert_close(ranks[0]["ntxent"]["global"]["ours"], lightly_mean, rtol=0, atol=1e-6)
    # and the global loss is the loss of one process with the whole batch
    f1, f2, f_depth, f_img = ntxent_features()
    one = torch.stack([nt_xent(f_depth, f_img, 0.07), nt_xent(f1, f2, 0.07)])
    torch.testing.assert_close(ranks[0]["ntxent"]["global"]["ours"], one, rtol=0, atol=1e-6)
    assert abs(float(ranks[0]["ntxent"]["local"]["ours"][0] - one[0])) > 1e-2  # the scopes differ


def test_sync_batchnorm_matches_the_global_batch(two_process_run):
    _, ranks = two_process_run
    assert "SyncBatchNorm" in ranks[0]["adapter"]["types"] and "BatchNorm1d" not in ranks[0]["adapter"]["types"]
    adapter = make_adapter()
    feats, target = adapter_batch()
    out = adapter(feats)
    ((out - target) ** 2).mean().backward()
    half = GLOBAL_BATCH // WORLD
    torch.testing.assert_close(torch.cat([r["adapter"]["out"] for r in ranks]), out.detach(), rtol=1e-5, atol=1e-5)
    for r in ranks:
        assert_close_dicts(r["adapter"]["grads"], trained_grads(adapter), rtol=1e-4, atol=1e-6)
        # running statistics of the global batch, same state-dict keys as plain BatchNorm
        assert_close_dicts(r["adapter"]["state"], adapter.state_dict(), rtol=1e-5, atol=1e-6)
    adapter.eval()
    eval_out = adapter(feats).detach()
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["adapter"]["eval_out"], eval_out[rank * half:(rank + 1) * half])


def test_sharded_evaluation_gathers_in_dataset_order(two_process_run):
    _, ranks = two_process_run
    assert [r["eval"][2] for r in ranks] == [4, 3]  # 7 items, no padding
    for labels, preds, _ in (r["eval"] for r in ranks):
        np.testing.assert_array_equal(preds, np.arange(7))
        np.testing.assert_array_equal(labels, np.arange(7) % 3)


def test_helpers_without_torchrun():
    assert not distributed.is_distributed()
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.per_rank_batch(7) == 7
    x = torch.randn(3, 2)
    assert distributed.gather_with_grad(x) is x
    torch.testing.assert_close(distributed.all_reduce_mean(x), x)
    assert distributed.init_distributed(torch.device("cpu")) == torch.device("cpu")


def test_sync_batchnorm_conversion_keeps_keys(tiny_clip):
    model = DPA(clip_model=tiny_clip, views=10, dim=512)
    before = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted = distributed.convert_sync_batchnorm(model, torch.device("cpu"))
    assert converted is model
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == before
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SyncBatchNorm" in kinds and not kinds & {"BatchNorm1d", "BatchNorm2d"}
    # one process: plain batch norm arithmetic
    bn = torch.nn.BatchNorm1d(4)
    sync = distributed.convert_sync_batchnorm(torch.nn.BatchNorm1d(4), torch.device("cpu"))
    x = torch.randn(6, 4)
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_var, bn.running_var)


# ------------------------------------------------------------------------------------------------
# the scripts under torchrun


def torchrun(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), script, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_scripts_under_torchrun(tmp_path, tiny_clip_path, tiny_clip, synthetic_root):
    root = small_data_root(Path(synthetic_root), tmp_path / "data", fixed_clouds=8)
    common = ["--data_root", str(root), "--clip", tiny_clip_path, "--num_workers", "0", "--epoch", "1",
              "--num_points", str(NUM_POINTS), "--views", "6"]
    proc = torchrun("pretraining.py", "--exp_name", "ddp", "--batch_size", "8", "--output_dir",
                    str(tmp_path / "pre"), *common)
    run_dir = tmp_path / "pre" / "ddp"
    lines = (run_dir / "run.log").read_text().splitlines()
    # rank 0 alone writes: the arguments once, one line per epoch
    assert json.loads(lines[0][len("args: "):])["ntxent_scope"] == "global"
    assert sum(line.startswith("args: ") for line in lines) == 1
    assert sum(" epoch 1: loss " in line for line in lines) == 1
    assert "2 processes x 4, NT-Xent over the global batch" in lines[1]
    assert proc.stdout.count("epoch 1: loss ") == 1
    assert any((run_dir / "tensorboard").iterdir())

    model = CLIP2Point(clip_model=tiny_clip, views=6)
    published = torch.load(run_dir / "best_val.pth", weights_only=True)
    assert list(published) == [f"module.{k}" for k in model.state_dict()]
    # last.pth of a 2-process run resumes in one process
    optimizer = torch_optimizer.Lamb([p for p in model.parameters() if p.requires_grad], lr=0.006)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=4, eta_min=1e-5)
    assert resume(read_resume(str(run_dir)), model, optimizer, scheduler) == (1, torch.load(
        run_dir / "last.pth", weights_only=False)["best"])
    assert len(torch.load(run_dir / "last.pth", weights_only=False)["rng_ranks"]) == WORLD
    torch.testing.assert_close(model.weights.detach(), published["module.weights"])

    torchrun("fewshot.py", "--exp_name", "fs", "--ckpt", str(run_dir / "best_val.pth"), "--shots", "1",
             "--batch_size", "16", "--output_dir", str(tmp_path / "fs"), *common)
    dpa = DPA(clip_model=tiny_clip, views=6)
    best = torch.load(tmp_path / "fs" / "fs" / "best.pth", weights_only=True)
    assert list(best) == list(dpa.state_dict())  # plain DPA keys: no `module.`, batch norm keys unchanged
    log = (tmp_path / "fs" / "fs" / "run.log").read_text()
    assert log.count(" epoch 1: loss ") == 1 and "2 processes x 8" in log

"""models/ntxent.py against lightly's NTXentLoss, its reference (values, gradients, dtypes).

The two scopes under several processes are checked in tests/test_distributed.py."""
import pytest
import torch
from lightly.loss import NTXentLoss

from clip2point.models.ntxent import nt_xent
from tests.test_models import nt_xent_reference


@pytest.mark.parametrize("batch,dim,temperature", [(1, 4, 0.07), (4, 8, 0.07), (16, 512, 0.07), (7, 3, 0.5)])
def test_nt_xent_equals_lightly(batch, dim, temperature):
    gen = torch.Generator().manual_seed(batch * 100 + dim)
    a = (torch.randn(batch, dim, generator=gen) * 3).requires_grad_(True)
    b = (torch.randn(batch, dim, generator=gen) + 1).requires_grad_(True)
    ours = nt_xent(a, b, temperature)
    ga, gb = torch.autograd.grad(ours, [a, b])
    theirs = NTXentLoss(temperature=temperature)(a, b)
    ta, tb = torch.autograd.grad(theirs, [a, b])
    assert ours.shape == theirs.shape == ()
    # the same operations in the same order: equal to the bit, well within 1e-6
    assert torch.equal(ours, theirs) and torch.equal(ga, ta) and torch.equal(gb, tb)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_nt_xent_equals_the_written_out_loss():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    assert abs(float(nt_xent(a, b, 0.07)) - nt_xent_reference(a, b, 0.07)) < 1e-4
    # the pairs swapped, the same loss; a pair that is already aligned gives a smaller one
    assert abs(float(nt_xent(b, a, 0.07)) - float(nt_xent(a, b, 0.07))) < 1e-5
    assert float(nt_xent(a, a, 0.07)) < float(nt_xent(a, b, 0.07))


def test_nt_xent_in_double_and_half_like_lightly():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(6, 32, generator=gen), torch.randn(6, 32, generator=gen)
    for dtype in (torch.float64, torch.bfloat16):
        ours, theirs = nt_xent(a.to(dtype), b.to(dtype), 0.07), NTXentLoss(temperature=0.07)(a.to(dtype), b.to(dtype))
        assert ours.dtype == theirs.dtype == dtype and torch.equal(ours, theirs)

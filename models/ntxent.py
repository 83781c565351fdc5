"""NT-Xent, SimCLR's normalised temperature-scaled cross-entropy of two views of a batch
(docs/method.md#pre-training)."""
import torch
import torch.nn.functional as F


def nt_xent(out0: torch.Tensor, out1: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean NT-Xent loss of the pairs (out0[i], out1[i]); out0, out1 (B, C) -> 0-dim tensor.

    Features are L2-normalised; each of the 2B samples has its partner as the positive and the
    other 2B - 2 samples as negatives. The arithmetic, in the same order, of lightly's
    `NTXentLoss(temperature)` in one process without a memory bank, so the values are the same.
    """
    B = out0.shape[0]
    out0 = F.normalize(out0, dim=1)
    out1 = F.normalize(out1, dim=1)
    logits_00 = torch.einsum("nc,mc->nm", out0, out0) / temperature
    logits_01 = torch.einsum("nc,mc->nm", out0, out1) / temperature
    logits_10 = torch.einsum("nc,mc->nm", out1, out0) / temperature
    logits_11 = torch.einsum("nc,mc->nm", out1, out1) / temperature
    # a sample is not its own negative
    off_diagonal = ~torch.eye(B, device=out0.device, dtype=torch.bool)
    logits_00 = logits_00[off_diagonal].view(B, -1)
    logits_11 = logits_11[off_diagonal].view(B, -1)
    logits = torch.cat([torch.cat([logits_01, logits_00], dim=1), torch.cat([logits_10, logits_11], dim=1)], dim=0)
    labels = torch.arange(B, device=out0.device, dtype=torch.long).repeat(2)
    return F.cross_entropy(logits, labels)

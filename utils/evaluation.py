"""Classification accuracy: predictions over a loader (sharded under torchrun), the per-class table,
the predictions CSV."""
import csv
import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from clip2point.utils import distributed
from clip2point.utils.outputs import atomic_write
from clip2point.utils.scoring import zeroshot_logits


@torch.no_grad()
def predict(logits_fn: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, device: torch.device,
            desc: str = "eval", progress: bool = True, topk: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Run `logits_fn(points (B, N, 3)) -> (B, K)` over (points, label) batches -> labels (M,) and
    predictions (M,); with topk > 1 the predictions are the min(topk, K) best classes (M, k), best
    first. Only labels and predictions are kept: any number of objects streams through."""
    labels, preds = [], []
    for points, label in tqdm(loader, desc=desc, leave=False, disable=not progress):
        logits = logits_fn(points.to(device, non_blocking=True))
        if topk > 1:
            preds.append(logits.topk(min(topk, logits.shape[1]), dim=1).indices.cpu())
        else:
            preds.append(logits.argmax(dim=1).cpu())
        labels.append(label.cpu())
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros((0, topk) if topk > 1 else 0, dtype=np.int64)
    return torch.cat(labels).numpy(), torch.cat(preds).numpy()


@torch.no_grad()
def collect_features(features_fn: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, device: torch.device,
                     desc: str = "features", progress: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run `features_fn(points (B, N, 3)) -> (B, ...)` over (points, label) batches once -> features
    (M, ...) and labels (M,), both on the CPU, for work that reuses them."""
    features, labels = [], []
    for points, label in tqdm(loader, desc=desc, leave=False, disable=not progress):
        features.append(features_fn(points.to(device, non_blocking=True)).float().cpu())
        labels.append(label.cpu())
    if not labels:
        raise ValueError("collect_features: the loader gave no batches")
    return torch.cat(features), torch.cat(labels)


def predict_all(logits_fn: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, device: torch.device,
                desc: str, topk: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """`predict` over an `distributed.eval_loader`: labels and predictions of the whole dataset, in
    order, on every process (under torchrun each process evaluates its shard)."""
    labels, preds = predict(logits_fn, loader, device, desc, progress=distributed.is_main(), topk=topk)
    return distributed.gather_predictions(labels, preds, loader)


def zeroshot_accuracy(infer: Callable[..., torch.Tensor], loader: DataLoader, prompts: torch.Tensor, views: int,
                      device: torch.device, rot: bool, desc: str) -> float:
    """Zero-shot accuracy of `infer(points, rot) -> (B*V, C)` normalised features (docs/method.md#zero-shot-scoring),
    over the whole dataset of an `eval_loader` (sharded under torchrun)."""
    labels, preds = predict_all(lambda p: zeroshot_logits(infer(p, rot=rot), prompts, views), loader, device,
                                desc)
    return accuracy(labels, preds)


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    return float((labels == preds).mean()) if len(labels) else 0.0


def metrics(labels: np.ndarray, ranked: np.ndarray, num_classes: int) -> Dict[str, float]:
    """What a script's main returns: top1, top3, top5 (share of objects whose label is among the k
    best classes; with fewer than k classes every label is), mean_class (the mean over the classes
    present of the per-class top-1 accuracy) and objects. ranked: (M,) predictions or (M, k) best
    classes, best first."""
    ranked = ranked.reshape(len(labels), -1)
    result: Dict[str, float] = {}
    for k in (1, 3, 5):
        if len(labels) == 0:
            result[f"top{k}"] = 0.0
        elif k > ranked.shape[1] and ranked.shape[1] < num_classes:
            raise ValueError(f"top-{k} needs the {k} best classes, got {ranked.shape[1]}")
        else:
            result[f"top{k}"] = float((ranked[:, :k] == labels[:, None]).any(axis=1).mean())
    per_class = per_class_accuracy(labels, ranked[:, 0] if len(labels) else labels, num_classes)
    result["mean_class"] = mean_over_present(per_class)
    result["objects"] = int(len(labels))
    return result


def per_class_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy of each class; NaN for classes absent from `labels`."""
    acc = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            acc[c] = (preds[mask] == c).mean()
    return acc


def mean_over_present(per_class: np.ndarray) -> float:
    """Mean class accuracy: the mean of `per_class_accuracy` over the classes present (0 if none)."""
    return float(np.nanmean(per_class)) if (~np.isnan(per_class)).any() else 0.0


def report(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]) -> Tuple[List[str], float, float]:
    """Lines of a per-class accuracy table, the mean class accuracy and the overall accuracy.

    The mean is over the classes present in `labels`.
    """
    per_class = per_class_accuracy(labels, preds, len(class_names))
    width = max(len("class"), *(len(n) for n in class_names))  # columns line up under the header
    lines = [f"{'class':<{width}}  {'objects':>7}  accuracy"]
    for c, name in enumerate(class_names):
        count = int((labels == c).sum())
        value = "-" if np.isnan(per_class[c]) else f"{per_class[c]:.4f}"
        lines.append(f"{name:<{width}}  {count:>7}  {value}")
    mean_class = mean_over_present(per_class)
    return lines, mean_class, accuracy(labels, preds)


def print_report(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]) -> float:
    """Print the table, the mean class accuracy and, last, `accuracy: 0.xxxx`; returns the accuracy."""
    lines, mean_class, overall = report(labels, preds, class_names)
    print("\n".join(lines))
    print(f"mean class accuracy: {mean_class:.4f}")
    print(f"accuracy: {overall:.4f}")
    return overall


def write_predictions(path: str, files: Sequence[str], labels: np.ndarray, preds: np.ndarray,
                      flag: str = "--save_predictions") -> None:
    """CSV with header file,label,pred and one row per object, in dataset order. UTF-8, with the
    bytes of undecodable file names kept; written to a temporary file and renamed (utils.outputs)."""
    if len(files) != len(labels):
        raise ValueError(f"{len(files)} file names for {len(labels)} predictions")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, flag, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "pred"])
        for name, label, pred in zip(files, labels, preds):
            writer.writerow([name, int(label), int(pred)])

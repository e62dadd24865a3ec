"""The training and evaluation loops every client, the server and the centralized baseline share."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedapp.data.base import Task

# loss_fn(model, images, targets) -> (loss to minimise, {term name: value}) for logging.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def resolve_device(requested: str = "") -> torch.device:
    """``requested`` if given (``cpu``, ``cuda``, ``cuda:N``), else the first CUDA device, else cpu."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={requested!r} was asked for but no CUDA device is visible")
        return device
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


# augment(images, generator) -> images: a training-time batch transform (fedapp.data.augment).
BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, augment: BatchTransform | None = None
) -> DataLoader | "AugmentedLoader":
    """A single-process DataLoader; ``seed`` fixes the shuffling order.

    With ``augment`` (training only; needs ``shuffle``), every image batch is passed through
    ``augment(images, generator)`` with the loader's own seeded generator, so the augmentation is as
    reproducible as the order. Without it the loader and its random draws are exactly as before.
    """
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
    if augment is None:
        return loader
    if generator is None:
        raise ValueError("augment needs a shuffled (training) loader: evaluation data is never augmented")
    return AugmentedLoader(loader, augment, generator)


class AugmentedLoader:
    """Iterates a training DataLoader, yielding ``(augment(images, generator), targets)``.

    ``generator`` is the DataLoader's shuffling generator: each epoch draws its order, then the
    augmentation of each batch in turn, all from one seeded stream.
    """

    def __init__(self, loader: DataLoader, augment: BatchTransform, generator: torch.Generator) -> None:
        self.loader = loader
        self.augment = augment
        self.generator = generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, targets in self.loader:
            yield self.augment(images, self.generator), targets


def task_loss(task: Task) -> LossFn:
    """BCE-with-logits for multi-label data, cross-entropy for single-label data."""
    criterion = nn.BCEWithLogitsLoss() if task == "multilabel" else nn.CrossEntropyLoss()

    def loss_fn(model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        loss = criterion(model(images), targets)
        return loss, {"loss": float(loss.detach())}

    return loss_fn


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    epochs: int,
    device: torch.device,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Run ``epochs`` passes of SGD-style training; returns each logged term's mean over steps.

    ``after_step`` runs after every optimizer step (e.g. to re-apply a mask or a correction).
    """
    model.train()
    sums: dict[str, float] = defaultdict(float)
    steps = 0
    for _ in range(epochs):
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss, terms = loss_fn(model, images, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} (terms: {terms})")
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            for name, value in terms.items():
                sums[name] += value
            steps += 1
    return {name: total / max(steps, 1) for name, total in sums.items()}


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, task: Task, device: torch.device, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and model outputs over ``dataset``: sigmoid scores (multi-label) or class ids."""
    model.eval()
    targets, outputs = [], []
    for images, batch_targets in make_loader(dataset, batch_size, shuffle=False):
        logits = model(images.to(device)).float().cpu()
        outputs.append(torch.sigmoid(logits) if task == "multilabel" else logits.argmax(dim=1))
        targets.append(batch_targets)
    return torch.cat(targets).numpy(), torch.cat(outputs).numpy()


def make_optimizer(
    params, name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """``adamw`` or ``sgd`` (with momentum) over ``params``."""
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r} is not allowed; allowed: adamw, sgd")


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    task: Task,
    device: torch.device,
    train_class_counts: np.ndarray,
    batch_size: int = 512,
    many_shot_min: int = 0,
    few_shot_max: int = 0,
    shot_split: str = "cumulative",
) -> dict[str, float]:
    """The task's metrics of ``model`` on ``dataset`` (see :mod:`fedapp.metrics`).

    Multi-label: macro/micro AUC and F1. Single-label: accuracy and many/medium/few-shot accuracy,
    groups defined by ``train_class_counts``: by the count thresholds when they are set (> 0),
    else by ``shot_split`` (``"cumulative"``: FedLoGe's 75%/95% cuts, or ``"thirds"``).
    """
    from fedapp.metrics import multilabel_metrics, singlelabel_metrics

    targets, outputs = predict(model, dataset, task, device, batch_size)
    if task == "multilabel":
        return multilabel_metrics(targets, outputs)
    return singlelabel_metrics(
        targets, outputs, train_class_counts, many_shot_min or None, few_shot_max or None,
        rule="cumulative" if shot_split == "counts" else shot_split,
    )

"""The training and evaluation loops every client, the server and the centralized baseline share.

The data path (:func:`make_loader`): datasets that have ``get_batch`` (every dataset of
:mod:`fedapp.data`) are read one batch per call, in ``num-workers`` DataLoader processes when asked,
into pinned memory on CUDA; the batches and their order are the same, bit for bit, for every
worker count. The training step (:func:`train_epochs`) runs under :class:`TrainOptions`: mixed
precision (``amp``: bf16 autocast, or fp16 autocast with a gradient scaler), channels-last
tensors and an optional ``torch.compile`` of the model (:func:`prepare_model`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from fedapp.data.base import Task
from fedapp.metrics import multilabel_metrics, singlelabel_metrics

# loss_fn(model, images, targets) -> (loss to minimise, {term name: value}) for logging.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
# augment(images, generator) -> images: a training-batch transform drawing from ``generator``.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

AMP_MODES = ("off", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainOptions:
    """How the training step runs: the run config's ``amp``, ``channels-last``, ``compile``, ``num-workers``.

    The defaults (fp32, contiguous NCHW, eager, no workers) are the original training step.
    """

    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp={self.amp!r} is not allowed; allowed: {', '.join(AMP_MODES)}")
        if self.num_workers < 0:
            raise ValueError(f"num-workers={self.num_workers!r} is not allowed; allowed: an integer >= 0")

    @classmethod
    def from_config(cls, config: Any) -> "TrainOptions":
        """The options of a :class:`fedapp.config.RunConfig`."""
        return cls(config.amp, config.channels_last, config.compile, config.num_workers)

    def autocast(self, device: torch.device):
        """``torch.autocast`` to the ``amp`` dtype on ``device``; a no-op context for ``amp=off``."""
        if self.amp == "off":
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[self.amp])

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A gradient scaler for fp16 (its small exponent range underflows small gradients); else None."""
        return torch.amp.GradScaler(device.type) if self.amp == "fp16" else None

    def to_input(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``images`` on ``device`` (asynchronously from pinned memory), channels-last if asked."""
        images = images.to(device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def prepare_model(model: nn.Module, options: TrainOptions) -> nn.Module:
    """Apply ``channels-last`` (parameters in NHWC) and ``compile`` to ``model`` in place; returns it.

    ``nn.Module.compile`` compiles the forward call in place, so parameter names (what travels to the
    server) are unchanged.
    """
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    if options.compile:
        model.compile()
    return model


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """``deterministic=true``: deterministic kernels (``torch.use_deterministic_algorithms``), cuDNN
    deterministic and its autotuner off; false: PyTorch's defaults, with the cuDNN autotuner on for
    CUDA (fastest kernels, run-to-run bit differences on GPUs). CPU runs repeat either way.

    An op that has no deterministic kernel warns, naming itself, instead of stopping the run
    (``warn_only``): such a run repeats except for that op.
    """
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (read when CUDA initialises).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic or torch.are_deterministic_algorithms_enabled():
        # Skipped when it would not change anything (the call imports torch._inductor).
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def resolve_device(requested: str = "") -> torch.device:
    """``requested`` if given (``cpu``, ``cuda``, ``cuda:N``), else the first CUDA device, else cpu."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={requested!r} is not allowed here: no CUDA device is visible; allowed: '' or 'cpu'")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={requested!r} is not allowed here: {torch.cuda.device_count()} CUDA device(s) "
                             f"visible; allowed: '', 'cpu', 'cuda' or cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return device
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


class _BatchReader(Dataset):
    """``dataset`` read one batch per call (``__getitems__``, which DataLoader's fetcher prefers)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.get_batch(indices)  # type: ignore[attr-defined]


def _whole_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


class _EpochSampler(RandomSampler):
    """RandomSampler whose generator also makes the one draw DataLoader takes when an epoch starts.

    A DataLoader draws an int64 (its workers' base seed) from its ``generator`` before each epoch,
    except on later epochs with persistent workers. Drawing it here from the sampler's own
    generator, and giving the DataLoader a separate one, keeps the order of the original
    ``DataLoader(shuffle=True, generator=g)`` for every ``num_workers`` and ``persistent_workers``.
    """

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        yield from super().__iter__()


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    device: torch.device | None = None,
    augment: Augment | None = None,
) -> "DataLoader | AugmentedLoader":
    """A DataLoader over ``dataset``; ``seed`` fixes the shuffling order (the same for every worker count).

    Datasets with ``get_batch`` are read a batch at a time (bit for bit the stacked items).
    ``num_workers`` > 0 reads in that many processes; on CUDA ``device`` the batches come in pinned
    memory and the workers persist across epochs.

    With ``augment`` (training only; needs ``shuffle``), every image batch is passed through
    ``augment(images, generator)`` with the sampler's seeded generator (after it drew the epoch's
    order), so the augmentation is as reproducible as the order. Without it nothing changes.
    """
    if num_workers < 0:
        raise ValueError(f"num-workers={num_workers!r} is not allowed; allowed: an integer >= 0")
    cuda = device is not None and device.type == "cuda"
    batched = callable(getattr(dataset, "get_batch", None))
    sampler = _EpochSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle else None
    loader = DataLoader(
        _BatchReader(dataset) if batched else dataset,
        batch_size=batch_size,
        sampler=sampler,
        # Seeds the worker processes only (the order comes from the sampler); unshuffled loaders
        # keep drawing it from the global generator, as they always did.
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        collate_fn=_whole_batch if batched else None,
        num_workers=num_workers,
        pin_memory=cuda,
        persistent_workers=cuda and num_workers > 0,
    )
    if augment is None:
        return loader
    if sampler is None:
        raise ValueError("augment needs a shuffled (training) loader: evaluation data is never augmented")
    return AugmentedLoader(loader, augment, sampler.generator)


class AugmentedLoader:
    """Iterates a training DataLoader, yielding ``(augment(images, generator), targets)``.

    ``generator`` is the DataLoader's shuffling generator: each epoch draws its order, then the
    augmentation of each batch in turn, all from one seeded stream.
    """

    def __init__(self, loader: DataLoader, augment: Augment, generator: torch.Generator) -> None:
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
    options: TrainOptions | None = None,
) -> dict[str, float]:
    """Run ``epochs`` passes of SGD-style training; returns each logged term's mean over steps.

    ``after_step`` runs after every optimizer step (e.g. to re-apply a mask or a correction).
    ``options`` sets mixed precision and layout (see :class:`TrainOptions`; default: fp32).
    Augmentation is the loader's (:func:`make_loader` with ``augment``).
    With ``amp=fp16`` the loss is scaled, and a step whose gradients overflow is skipped (and the
    scale lowered) instead of raising.
    """
    options = options or TrainOptions()
    scaler = options.grad_scaler(device)
    model.train()
    sums: dict[str, float] = defaultdict(float)
    steps = 0
    for _ in range(epochs):
        for images, targets in loader:
            images, targets = options.to_input(images, device), targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with options.autocast(device):
                loss, terms = loss_fn(model, images, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} (terms: {terms})")
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaled_step(scaler, loss, optimizer)
            if after_step is not None:
                after_step()
            for name, value in terms.items():
                sums[name] += value
            steps += 1
    return {name: total / max(steps, 1) for name, total in sums.items()}


def scaled_step(scaler: torch.amp.GradScaler, loss: torch.Tensor, optimizer: Any) -> None:
    """``scaler``'s backward and step of ``loss``; ``optimizer`` may chain several (``.optimizers``)."""
    scaler.scale(loss).backward()
    for single in getattr(optimizer, "optimizers", [optimizer]):
        scaler.step(single)
    scaler.update()


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
    targets, outputs = predict(model, dataset, task, device, batch_size)
    if task == "multilabel":
        return multilabel_metrics(targets, outputs)
    return singlelabel_metrics(
        targets, outputs, train_class_counts, many_shot_min or None, few_shot_max or None,
        rule="cumulative" if shot_split == "counts" else shot_split,
    )

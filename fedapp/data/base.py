"""The dataset interface every loader returns.

A dataset is a ``torch.utils.data.Dataset`` that also exposes its targets as one numpy array
(``labels``), so partitioners and metrics never have to iterate over images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fedapp.options import ConfigError

Task = Literal["multilabel", "singlelabel"]
TASK_NAMES: dict[str, str] = {"multilabel": "multi-label", "singlelabel": "single-label"}
TASK_DATASETS: dict[str, tuple[str, ...]] = {  # every ``dataset`` value, by the task its loader builds
    "multilabel": ("ml-digits", "ml-cifar10", "ml-dermamnist", "voc2012", "chestx-ray14",
                   "multilabel-csv"),
    "singlelabel": ("lt-digits", "cifar10-lt", "cifar100-lt", "imagenet-lt", "image-folder"),
}


class LabeledDataset(Protocol):
    """What partitioners and loops need: ``len``, ``ds[i] -> (image, target)`` and ``labels``.

    ``labels`` is int64 ``(N,)`` for single-label data and float32 multi-hot ``(N, C)`` for
    multi-label data.
    """

    labels: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class ArrayDataset(Dataset):
    """An in-memory dataset over float32 images ``(N, C, H, W)`` and their labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
        self.images = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32)
        self.labels = np.asarray(labels)
        label_dtype = torch.float32 if self.labels.ndim == 2 else torch.int64
        self._targets = torch.as_tensor(self.labels, dtype=label_dtype)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self._targets[index]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, targets)`` of ``indices``, equal to stacking ``self[i]`` (one indexing call)."""
        rows = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.images[rows], self._targets[rows]


class IndexedSubset(Dataset):
    """A view of ``dataset`` restricted to ``indices`` (no copy of the images), with ``labels``."""

    def __init__(self, dataset: LabeledDataset, indices: Sequence[int] | np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = dataset.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, targets)`` of ``indices`` (positions in this view), equal to stacking ``self[i]``."""
        rows = self.indices[np.asarray(indices, dtype=np.int64)]
        return get_batch(self.dataset, rows)


def get_batch(dataset: Dataset, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``dataset.get_batch(indices)`` where the dataset has it, else its items stacked (any Dataset)."""
    batched = getattr(dataset, "get_batch", None)
    if batched is not None:
        return batched(indices)
    items = [dataset[int(i)] for i in indices]
    return torch.stack([image for image, _ in items]), torch.stack([torch.as_tensor(t) for _, t in items])


@dataclass(frozen=True)
class DatasetBundle:
    """A dataset as the app sees it: train and test splits plus what models need to know."""

    name: str
    task: Task
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (channels, height, width)
    train: LabeledDataset
    test: LabeledDataset
    # A black pixel (raw intensity 0) per channel as the model sees it, i.e. after normalisation
    # (-mean/std); () means 0. Training augmentation pads crops with it (fedapp.data.augment).
    pad_value: tuple[float, ...] = ()

    def class_counts(self) -> np.ndarray:
        """Number of training samples per class (positives per class for multi-label data)."""
        return class_counts(self.train.labels, self.num_classes)

    def require_task(self, task: Task, algorithm: str) -> None:
        """Raise ConfigError unless this dataset is of ``task`` (the one ``algorithm`` needs)."""
        if self.task != task:
            raise ConfigError(
                f"algorithm={algorithm!r} needs a {TASK_NAMES[task]} dataset; dataset={self.name!r} is "
                f"{TASK_NAMES[self.task]} (use dataset={', '.join(TASK_DATASETS[task])})"
            )


def black_pixel(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """``-mean_c / std_c`` per channel: the value of a zero-intensity pixel after ``(x - mean) / std``."""
    return tuple(-float(m) / float(s) for m, s in zip(mean, std))


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Samples per class: a bincount for int labels, a column sum for multi-hot labels."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(np.int64)
    return np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.int64)

"""Datasets by name, and how one run splits a dataset over its clients.

``load_dataset(config)`` returns the :class:`DatasetBundle` named by ``config.dataset``;
``federate(config, num_partitions)`` returns the deterministic :class:`FederatedSplit` of it. Both
are cached per process, so a worker that hosts many virtual clients loads and splits the data once
and every client holds only index arrays.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from fedapp.config import ConfigError, RunConfig
from fedapp.data.base import DatasetBundle, IndexedSubset, class_counts
from partitions import local_test_indices, partition_dataset, proportional_test_sizes, sample_local_test

Loader = Callable[[RunConfig], DatasetBundle]


def _lazy(module: str, function: str) -> Callable[..., DatasetBundle]:
    """``fedapp.data.<module>.<function>``, imported on the first call: a process imports only the
    loader (and its scikit-learn / torchvision dependencies) of the dataset its run uses."""

    def load(*args: Any) -> DatasetBundle:
        return getattr(importlib.import_module(f"fedapp.data.{module}"), function)(*args)

    load.__name__ = function
    return load


load_chestx_ray14 = _lazy("chestx", "load_chestx_ray14")
load_cifar_lt = _lazy("cifar", "load_cifar_lt")
load_ml_cifar10 = _lazy("cifar", "load_ml_cifar10")
load_lt_digits = _lazy("digits", "load_lt_digits")
load_ml_digits = _lazy("digits", "load_ml_digits")
load_imagenet_lt = _lazy("imagenet_lt", "load_imagenet_lt")
load_ml_dermamnist = _lazy("medmnist", "load_ml_dermamnist")
load_voc2012 = _lazy("voc", "load_voc2012")
load_image_folder = _lazy("custom", "load_image_folder")
load_multilabel_csv = _lazy("custom", "load_multilabel_csv")

DATASET_LOADERS: dict[str, Loader] = {
    "ml-digits": lambda cfg: load_ml_digits(),
    "lt-digits": lambda cfg: load_lt_digits(cfg.imbalance_factor),
    "ml-cifar10": lambda cfg: load_ml_cifar10(cfg.data_root),
    "cifar10-lt": lambda cfg: load_cifar_lt(cfg.data_root, 10, cfg.imbalance_factor),
    "cifar100-lt": lambda cfg: load_cifar_lt(cfg.data_root, 100, cfg.imbalance_factor),
    "ml-dermamnist": lambda cfg: load_ml_dermamnist(cfg.data_root),
    "voc2012": lambda cfg: load_voc2012(cfg.data_root),
    "chestx-ray14": lambda cfg: load_chestx_ray14(cfg.data_root),
    "imagenet-lt": lambda cfg: load_imagenet_lt(cfg.data_root),
    "image-folder": lambda cfg: load_image_folder(cfg.data_root, cfg.image_size),
    "multilabel-csv": lambda cfg: load_multilabel_csv(cfg.data_root, cfg.image_size),
}
# All-zero label vectors ("No Finding") are spread evenly over clients, as the FedNCAlign-ML paper does.
SPREAD_NEGATIVES = {"chestx-ray14"}

# Fields of RunConfig that change what ``load_dataset`` returns (the cache key).
_DATA_FIELDS = ("dataset", "data_root", "imbalance_factor", "image_size")
# Fields that change how the data is split over clients.
_SPLIT_FIELDS = _DATA_FIELDS + (
    "partition", "alpha", "dirichlet_mode", "class_presence_ratio", "min_partition_size", "val_fraction",
    "local_test_size", "seed",
)


@dataclass(frozen=True)
class HeldOut:
    """What the server evaluates on: the global test set and a validation split held out of train.

    The validation split (``val-fraction`` of the training set, drawn with ``seed``) is taken
    before partitioning, so no client trains on it; it selects the "best" round.
    """

    bundle: DatasetBundle
    validation_indices: np.ndarray
    pool_indices: np.ndarray  # the training samples left for the clients

    @property
    def validation(self) -> IndexedSubset:
        return IndexedSubset(self.bundle.train, self.validation_indices)


@dataclass(frozen=True)
class FederatedSplit:
    """A dataset split for one run: server validation/test sets and per-client index arrays.

    ``client_train[k]`` indexes ``bundle.train``; ``client_test[k]`` indexes ``bundle.test`` and is
    the client's local test set drawn with its training label distribution (single-label data
    only, for personalized metrics; ``None`` for multi-label data): ``floor(n_kc / n * n_test)``
    samples of class c (``local-test-size=0``, FedLoGe's code) or ``local-test-size`` in all.
    """

    bundle: DatasetBundle
    validation_indices: np.ndarray  # the server's (see HeldOut); no client holds them
    client_train: tuple[np.ndarray, ...]
    client_test: tuple[np.ndarray, ...] | None

    def train_set(self, partition_id: int) -> IndexedSubset:
        return IndexedSubset(self.bundle.train, self.client_train[partition_id])

    def local_test_set(self, partition_id: int) -> IndexedSubset | None:
        if self.client_test is None:
            return None
        return IndexedSubset(self.bundle.test, self.client_test[partition_id])

    def client_class_counts(self) -> np.ndarray:
        """``(K, C)`` training samples (positives) per client per class."""
        labels = self.bundle.train.labels
        return np.stack([class_counts(labels[idx], self.bundle.num_classes) for idx in self.client_train])


def load_dataset(config: RunConfig) -> DatasetBundle:
    """The dataset named by ``config.dataset`` (cached per process)."""
    return _load_cached(*(getattr(config, f) for f in _DATA_FIELDS))


@lru_cache(maxsize=4)
def _load_cached(dataset: str, data_root: str, imbalance_factor: float, image_size: int) -> DatasetBundle:
    config = RunConfig(dataset=dataset, data_root=data_root, imbalance_factor=imbalance_factor, image_size=image_size)
    if dataset not in DATASET_LOADERS:
        raise ConfigError(f"dataset={dataset!r} has no loader; available: {', '.join(DATASET_LOADERS)}")
    return DATASET_LOADERS[dataset](config)


def hold_out(config: RunConfig) -> HeldOut:
    """The dataset with its validation split taken out (deterministic in ``seed``, cached)."""
    return _hold_out_cached(*(getattr(config, f) for f in _DATA_FIELDS), config.val_fraction, config.seed)


@lru_cache(maxsize=4)
def _hold_out_cached(
    dataset: str, data_root: str, imbalance_factor: float, image_size: int, val_fraction: float, seed: int
) -> HeldOut:
    bundle = _load_cached(dataset, data_root, imbalance_factor, image_size)
    order = np.random.default_rng(seed).permutation(len(bundle.train))
    num_val = int(round(val_fraction * len(order)))
    return HeldOut(bundle, np.sort(order[:num_val]), np.sort(order[num_val:]))


def federate(config: RunConfig, num_partitions: int) -> FederatedSplit:
    """Split ``config.dataset`` over ``num_partitions`` clients (deterministic, cached)."""
    return _federate_cached(tuple(getattr(config, f) for f in _SPLIT_FIELDS), num_partitions)


@lru_cache(maxsize=4)
def _federate_cached(key: tuple, num_partitions: int) -> FederatedSplit:
    """Cached on the split-relevant fields only: output-dir, device etc. do not re-split the data."""
    config = RunConfig(**dict(zip(_SPLIT_FIELDS, key)))
    if num_partitions < 1:
        raise ConfigError(f"num-partitions={num_partitions} is not allowed; allowed: an integer >= 1")
    held_out = hold_out(config)
    bundle, pool = held_out.bundle, held_out.pool_indices
    parts = partition_dataset(
        bundle.train.labels[pool], num_partitions, config.partition, config.alpha,
        config.class_presence_ratio, config.seed, config.min_partition_size,
        spread_negatives=config.dataset in SPREAD_NEGATIVES, dirichlet_mode=config.dirichlet_mode,
    )
    client_train = tuple(pool[p] for p in parts)
    client_test = None
    if bundle.task == "singlelabel":
        counts = [class_counts(bundle.train.labels[idx], bundle.num_classes) for idx in client_train]
        if config.local_test_size == 0:  # FedLoGe's code: n_kc / n * n_test per class
            sizes = proportional_test_sizes(np.stack(counts), len(bundle.test))
            client_test = tuple(
                sample_local_test(bundle.test.labels, sizes[k], config.seed + 1 + k) for k in range(len(counts))
            )
        else:
            client_test = tuple(
                local_test_indices(bundle.test.labels, counts[k], config.local_test_size, config.seed + 1 + k)
                for k in range(len(counts))
            )
    return FederatedSplit(bundle, held_out.validation_indices, client_train, client_test)

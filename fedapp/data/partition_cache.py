"""One node's partition on its own disk, so later ClientApp processes of a run skip load + split.

In a deployment every message starts a fresh ClientApp process. Without this cache each one
imports the dataset's loader (scikit-learn for the embedded digits, torchvision for files),
loads the whole dataset and recomputes the federated split, only to keep one partition. After
the first message a node writes what its client uses to

    <cache-dir>/<key>.npz

- the partition's training images and labels, its local test set (single-label data), and the
  dataset's metadata including the class counts of the whole training set, and reads it back in
  the next process instead. ``key`` is a SHA-256 over the run config fields that decide the split
  (dataset, data-root, seed, partition, alpha, ...), ``num-partitions``, ``partition-id`` and the
  source of the data and partition code, so a changed split never reads a stale file.

Only in-memory datasets (:class:`fedapp.data.base.ArrayDataset`, e.g. the embedded digits) are
cached: file-backed datasets decode images per sample (with augmentation), and a decoded copy
of a large partition would be bigger and slower than the files themselves.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path

import numpy as np
from flwr.common import log

from fedapp.atomic_io import atomic_write_bytes
from fedapp.config import RunConfig
from fedapp.data import _SPLIT_FIELDS, FederatedSplit, _federate_cached, federate
from fedapp.data.base import ArrayDataset, DatasetBundle

FORMAT_VERSION = 1
_CODE_DIRS = (Path(__file__).resolve().parent, Path(__file__).resolve().parents[2] / "partitions")


@dataclass(frozen=True)
class PartitionBundle(DatasetBundle):
    """A :class:`DatasetBundle` holding only one partition's samples; ``class_counts`` stays the
    whole training set's (what personalized evaluation and class-balanced losses read)."""

    train_class_counts: np.ndarray | None = None

    def class_counts(self) -> np.ndarray:
        assert self.train_class_counts is not None
        return self.train_class_counts.copy()


def default_cache_dir() -> Path:
    """``$FLWR_HOME/fedapp/partitions`` (``~/.flwr`` when FLWR_HOME is unset): the node's own disk."""
    home = os.environ.get("FLWR_HOME") or str(Path.home() / ".flwr")
    return Path(home) / "fedapp" / "partitions"


def _code_digest() -> str:
    digest = hashlib.sha256()
    for directory in _CODE_DIRS:
        for path in sorted(directory.glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(config: RunConfig, split_fields: tuple[str, ...], num_partitions: int, partition_id: int) -> str:
    """SHA-256 over what decides this node's partition (see the module docstring)."""
    spec = {
        "format": FORMAT_VERSION,
        "fields": {name: getattr(config, name) for name in split_fields},
        "num_partitions": num_partitions,
        "partition_id": partition_id,
        "code": _code_digest(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cacheable(bundle: DatasetBundle) -> bool:
    return isinstance(bundle.train, ArrayDataset) and isinstance(bundle.test, ArrayDataset)


def save_partition(path: Path, split: "FederatedSplit", partition_id: int) -> bool:  # noqa: F821
    """Write ``partition_id``'s part of ``split`` to ``path`` atomically; False if not cacheable."""
    bundle = split.bundle
    if not cacheable(bundle):
        return False
    train = split.train_set(partition_id)
    arrays = {
        "train_images": bundle.train.images[train.indices].numpy(),
        "train_labels": train.labels,
        "train_class_counts": bundle.class_counts(),
    }
    local_test = split.local_test_set(partition_id)
    if local_test is not None:
        arrays["test_images"] = bundle.test.images[local_test.indices].numpy()
        arrays["test_labels"] = local_test.labels
    meta = {"name": bundle.name, "task": bundle.task, "num_classes": bundle.num_classes,
            "class_names": list(bundle.class_names), "input_shape": list(bundle.input_shape)}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buffer.getvalue())  # concurrent writers (two SuperNodes on one disk) never tear it
    return True


def load_partition(path: Path, partition_id: int, num_partitions: int) -> FederatedSplit | None:
    """The split as this node's client sees it, or None if there is no (readable) file."""
    try:
        with np.load(path) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            train = ArrayDataset(data["train_images"], data["train_labels"])
            counts = data["train_class_counts"]
            has_test = "test_images" in data
            test = ArrayDataset(data["test_images"], data["test_labels"]) if has_test else \
                ArrayDataset(np.zeros((0, *meta["input_shape"]), np.float32), data["train_labels"][:0])
    except (OSError, KeyError, ValueError):
        return None
    bundle = PartitionBundle(name=meta["name"], task=meta["task"], num_classes=meta["num_classes"],
                             class_names=tuple(meta["class_names"]), input_shape=tuple(meta["input_shape"]),
                             train=train, test=test, train_class_counts=counts)
    empty = np.zeros(0, dtype=np.int64)
    client_train = tuple(np.arange(len(train)) if k == partition_id else empty for k in range(num_partitions))
    client_test = None
    if has_test:
        client_test = tuple(np.arange(len(test)) if k == partition_id else empty for k in range(num_partitions))
    return FederatedSplit(bundle, empty, client_train, client_test)


def node_split(config: RunConfig, num_partitions: int, partition_id: int,
               cache_dir: Path | None) -> "FederatedSplit":  # noqa: F821
    """``federate(config, num_partitions)`` as this node needs it, through its disk cache.

    The cache is read only by a process that has not split data yet (a fresh ClientApp process);
    a process that already holds splits in memory (a simulation worker) keeps using them.
    ``cache_dir=None`` disables it. A cache that cannot be written is skipped, with a warning.
    """
    if cache_dir is None or _federate_cached.cache_info().currsize:
        return federate(config, num_partitions)
    path = Path(cache_dir) / f"{cache_key(config, _SPLIT_FIELDS, num_partitions, partition_id)}.npz"
    if path.is_file():
        cached = load_partition(path, partition_id, num_partitions)
        if cached is not None:
            return cached
    split = federate(config, num_partitions)
    try:
        save_partition(path, split, partition_id)
    except OSError as error:
        log(WARNING, "partition-cache=%s is not writable (%s); every message reloads the data", cache_dir, error)
    return split

"""Pieces shared by the loaders of the real datasets (read from ``data-root``, never downloaded).

- Normalisation constants (:data:`IMAGENET_MEAN`, :data:`CIFAR10_MEAN`, ...).
- Errors (:mod:`fedapp.data.file_errors`, importable from here): :class:`MissingDataFileError` names
  the exact file expected, where it comes from and the folder layout; :class:`CorruptDataFileError`
  names the file and what is wrong with it; :func:`require_file` and its siblings build them.
- Datasets that keep images compact and convert per item (each exposes ``labels`` as a numpy array,
  int64 ``(N,)`` or float32 multi-hot ``(N, C)``, like :class:`fedapp.data.base.ArrayDataset`):

  * :class:`UInt8ImageDataset`: uint8 ``(N, C, H, W)`` in memory, normalised to float32 per item
    (CIFAR-10/100: 50,000 images are 150 MB as uint8 instead of 600 MB as float32);
  * :class:`CompositeDataset`: the multi-label composites of :mod:`fedapp.data.composites`, built
    lazily from uint8 source images and a plan of source pairs (:func:`composite_plan`), so a
    composite set never exists as one float32 array;
  * :class:`ImageFileDataset`: one image file per sample (JPEG/PNG), decoded with
    ``torchvision.io.decode_image`` and resized with ``transforms.v2`` (:func:`decode_image_file` of
    :mod:`fedapp.data.decode`, importable from here),
    kept decoded in a per-process uint8 cache when the split fits (:data:`DECODE_CACHE_BYTES`).

Every dataset also has ``get_batch(indices) -> (images, targets)``: the same tensors as stacking
``ds[i]`` for each index, bit for bit, computed on the whole batch at once (what
:func:`fedapp.loops.make_loader` uses; one Python call per batch instead of one per image).

Loaders do no data augmentation: they return the deterministic, normalised tensors that both
training and evaluation start from.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from fedapp.data.composites import sample_composite_sources
from fedapp.data.decode import Resize, check_resize, decode_image_file, load_image  # noqa: F401 (re-exported)
from fedapp.data.file_errors import (  # noqa: F401 (re-exported: the loaders import them from here)
    CorruptDataFileError,
    MissingDataFileError,
    PathLike,
    corrupt,
    missing_message,
    read_list_file,
    require_dir,
    require_file,
    require_files,
)

# Per-channel (R, G, B) mean and std of images scaled to [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)


def _stats(values: Sequence[float], channels: int) -> torch.Tensor:
    if len(values) != channels:
        raise ValueError(f"need {channels} per-channel values, got {len(values)}")
    return torch.tensor(values, dtype=torch.float32).view(channels, 1, 1)


def _targets(labels: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(labels, dtype=torch.float32 if labels.ndim == 2 else torch.int64)


def _index_tensor(indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(indices, dtype=np.int64))


def normalize_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """float32 ``(x / 255 - mean) / std`` of uint8 images ``(..., C, H, W)``; ``mean``/``std`` ``(C, 1, 1)``.

    Elementwise, so a batch gives bit for bit the images normalised one by one.
    """
    return (images.float() / 255.0 - mean) / std


class UInt8ImageDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` kept as they are; item ``i`` is ``((x/255 - mean)/std, target)``.

    ``labels``: int64 ``(N,)`` or float32 multi-hot ``(N, num_classes)``.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = np.asarray(labels)
        self._targets = _targets(self.labels)
        self._mean = _stats(mean, images.shape[1])
        self._std = _stats(std, images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_batch(self.images[index], self._mean, self._std), self._targets[index]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (B, C, H, W), targets)`` of ``indices``, equal to stacking ``self[i]``."""
        rows = _index_tensor(indices)
        return normalize_batch(self.images[rows], self._mean, self._std), self._targets[rows]


def composite_plan(
    labels: np.ndarray, num_classes: int, single_fraction: float, per_pair: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The sample plan of :func:`fedapp.data.composites.build_composites`, without building images.

    Returns ``sources`` int64 ``(M, 2)``: the (left, right) source image of each sample, ``-1`` for
    the blank half of a kept single image; and float32 multi-hot ``labels`` ``(M, num_classes)``.
    The first ``round(single_fraction * N)`` rows are the kept singles (on a random half), then
    ``per_pair`` composites for each of the C*(C-1)/2 class pairs. It draws from the random
    generator in the same order as ``build_composites``, so for one seed both give the same samples.
    """
    if not 0.0 <= single_fraction <= 1.0:
        raise ValueError(f"single_fraction must be in [0, 1], got {single_fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    num_singles = int(round(single_fraction * len(labels)))
    kept = np.sort(rng.choice(len(labels), size=num_singles, replace=False)).astype(np.int64)
    pairs = sample_composite_sources(labels, num_classes, per_pair, rng)
    on_left = rng.random(num_singles) < 0.5
    blank = np.full(num_singles, -1, dtype=np.int64)
    singles = np.stack([np.where(on_left, kept, blank), np.where(on_left, blank, kept)], axis=1)
    sources = np.concatenate([singles, pairs]).astype(np.int64)
    multi_hot = np.zeros((len(sources), num_classes), dtype=np.float32)
    multi_hot[np.arange(num_singles), labels[kept]] = 1.0
    rows = num_singles + np.arange(len(pairs))
    multi_hot[rows, labels[pairs[:, 0]]] = 1.0
    multi_hot[rows, labels[pairs[:, 1]]] = 1.0
    return sources, multi_hot


def scaled_per_pair(per_pair: int, num_test_sources: int, num_train_sources: int) -> int:
    """Composites per pair for a test split: ``per_pair`` scaled by the test/train source ratio (>= 1)."""
    if per_pair <= 0:
        return 0
    return max(1, int(round(per_pair * num_test_sources / max(1, num_train_sources))))


class CompositeDataset(Dataset):
    """Multi-label composites, built per item from uint8 source images ``(N, C, H, W)``.

    Sample ``i`` is the normalised source ``sources[i, 0]`` and the normalised source
    ``sources[i, 1]`` side by side, a float32 ``(C, H, 2W)`` tensor; a ``-1`` source is a zero half
    (zero *after* normalisation, i.e. the dataset's mean colour), as ``build_composites`` gives on
    normalised images. ``labels`` is the float32 multi-hot ``(M, num_classes)`` array.
    """

    def __init__(
        self,
        images: np.ndarray,
        sources: np.ndarray,
        labels: np.ndarray,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        images = np.asarray(images)
        sources = np.asarray(sources, dtype=np.int64)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if sources.ndim != 2 or sources.shape[1] != 2 or len(sources) != len(labels):
            raise ValueError(f"sources must be (M, 2) with M = len(labels), got {sources.shape}")
        if len(sources) and (sources.min() < -1 or sources.max() >= len(images)):
            raise ValueError(f"sources must index the {len(images)} images or be -1")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.sources = sources
        self.labels = np.asarray(labels, dtype=np.float32)
        self._targets = _targets(self.labels)
        self._mean = _stats(mean, images.shape[1])
        self._std = _stats(std, images.shape[1])

    def __len__(self) -> int:
        return len(self.sources)

    def _half(self, source: int) -> torch.Tensor:
        if source < 0:
            return torch.zeros(self.images.shape[1:], dtype=torch.float32)
        return normalize_batch(self.images[source], self._mean, self._std)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        left, right = self.sources[index]
        return torch.cat([self._half(int(left)), self._half(int(right))], dim=-1), self._targets[index]

    def _halves(self, sources: np.ndarray) -> torch.Tensor:
        halves = normalize_batch(self.images[torch.from_numpy(np.maximum(sources, 0))], self._mean, self._std)
        halves[torch.from_numpy(sources < 0)] = 0.0
        return halves

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (B, C, H, 2W), targets)`` of ``indices``, equal to stacking ``self[i]``."""
        rows = np.asarray(indices, dtype=np.int64)
        pairs = self.sources[rows]
        images = torch.cat([self._halves(pairs[:, 0]), self._halves(pairs[:, 1])], dim=-1)
        return images, self._targets[torch.from_numpy(rows)]


# The largest decoded split (uint8 bytes) an ImageFileDataset keeps in memory in each process:
# VOC 2012 at 224 px (5,717 train images: 0.86 GB) fits; ChestX-ray14 / ImageNet-LT (~17 GB) do not,
# and are decoded anew each epoch (in DataLoader workers when num-workers > 0).
DECODE_CACHE_BYTES = 4 * 1024**3


def _decode_error(path: Path, err: Exception) -> Exception:
    if not path.is_file():
        return MissingDataFileError(f"missing image file {path} (it was listed when the dataset was built)")
    return CorruptDataFileError(f"corrupt or unexpected data file {path}: cannot decode image ({err})")


class ImageFileDataset(Dataset):
    """One image file per sample; item ``i`` is the decoded, resized, normalised float32
    ``(3, image_size, image_size)`` tensor of ``paths[i]`` and its target.

    ``labels`` (int64 ``(N,)`` or float32 multi-hot ``(N, C)``) is given at construction, so
    partitioners never open an image. See :func:`decode_image_file` for ``resize`` and ``grayscale``.

    Decoding: each image is decoded once per process and kept as uint8 when the whole split fits in
    ``cache_bytes`` (memory is taken as images are first read, so a client touches only its own
    part); otherwise every read decodes the file. DataLoader worker processes read what the
    training process had decoded when they started and decode the rest (their memory is their own).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: np.ndarray,
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize: Resize = "squash",
        grayscale: bool = False,
        cache_bytes: int = DECODE_CACHE_BYTES,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"paths ({len(paths)}) and labels ({len(labels)}) differ in length")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        check_resize(resize)
        self.paths = [Path(path) for path in paths]
        self.labels = np.asarray(labels)
        self.image_size = image_size
        self.resize: Resize = resize
        self.grayscale = grayscale
        self._targets = _targets(self.labels)
        self._mean = _stats(mean, 3)
        self._std = _stats(std, 3)
        self.cached = len(self.paths) * 3 * image_size * image_size <= cache_bytes
        self._cache: torch.Tensor | None = None  # allocated on first use (untouched pages cost nothing)
        self._decoded = np.zeros(len(self.paths), dtype=bool)

    def __len__(self) -> int:
        return len(self.paths)

    def _allocate_cache(self) -> None:
        if self._cache is None and self.cached:
            self._cache = torch.empty((len(self.paths), 3, self.image_size, self.image_size), dtype=torch.uint8)

    def pixels(self, index: int) -> torch.Tensor:
        """The uint8 ``(3, image_size, image_size)`` image ``index``, from the cache when it is there."""
        if self._decoded[index]:
            return self._cache[index]  # type: ignore[index]
        if not self.cached or get_worker_info() is not None:
            # A worker's writes would stay in its own copy of the cache: decode, keep nothing.
            return decode_image_file(self.paths[index], self.image_size, self.resize, self.grayscale)
        self._allocate_cache()
        self._cache[index] = decode_image_file(self.paths[index], self.image_size, self.resize, self.grayscale)
        self._decoded[index] = True
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_batch(self.pixels(index), self._mean, self._std), self._targets[index]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (B, 3, S, S), targets)`` of ``indices``, equal to stacking ``self[i]``.

        Files not decoded yet are decoded on ``torch.get_num_threads()`` threads (decoding and
        resizing run outside the GIL), so the training process fills its cache in parallel.
        """
        rows = np.asarray(indices, dtype=np.int64)
        if len(rows) == 0:
            return normalize_batch(torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.uint8),
                                   self._mean, self._std), self._targets[:0]
        missing = [int(i) for i in dict.fromkeys(rows.tolist()) if not self._decoded[i]]
        threads = min(torch.get_num_threads(), len(missing))
        decoded: dict[int, torch.Tensor] = {}
        if threads > 1:
            self._allocate_cache()  # before the threads, which would each allocate one
            with ThreadPoolExecutor(threads) as pool:
                decoded = dict(zip(missing, pool.map(self.pixels, missing)))
        pixels = torch.stack([decoded[i] if i in decoded else self.pixels(i) for i in rows.tolist()])
        return normalize_batch(pixels, self._mean, self._std), self._targets[torch.from_numpy(rows)]

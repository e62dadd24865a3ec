"""DermaMNIST (MedMNIST v2) from its official ``.npz`` file, as ml-dermamnist.

Expected layout under ``data-root`` (the files exactly as MedMNIST publishes them; only the size
you ask for is needed)::

    <data-root>/
      dermamnist.npz        28x28 images (size=28)
      dermamnist_64.npz     64x64 images (size=64)
      dermamnist_128.npz    128x128 images (size=128)
      dermamnist_224.npz    224x224 images (size=224)

Each file holds ``train_images`` / ``val_images`` / ``test_images`` (uint8 ``(N, size, size, 3)``:
7,007 / 1,003 / 2,005 images) and ``train_labels`` / ``val_labels`` / ``test_labels`` (int
``(N, 1)``), 7 classes in MedMNIST's order (:data:`DERMAMNIST_CLASSES`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from fedapp.data.base import DatasetBundle
from fedapp.data.files import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CompositeDataset,
    PathLike,
    composite_plan,
    corrupt,
    require_file,
    scaled_per_pair,
)

DERMAMNIST_CLASSES: tuple[str, ...] = (
    "actinic keratoses and intraepithelial carcinoma",
    "basal cell carcinoma",
    "benign keratosis-like lesions",
    "dermatofibroma",
    "melanoma",
    "melanocytic nevi",
    "vascular lesions",
)
DERMAMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)
DERMAMNIST_SOURCE = (
    "MedMNIST v2 (Yang et al., 2023), its DermaMNIST file of that name as published on the MedMNIST "
    "Zenodo record (or saved by the `medmnist` package), placed directly in data-root"
)
DERMAMNIST_LAYOUT = """\
<data-root>/
  dermamnist.npz         (size=28)
  dermamnist_64.npz      (size=64)
  dermamnist_128.npz     (size=128)
  dermamnist_224.npz     (size=224)"""
SPLITS = ("train", "val", "test")
TEST_COMPOSITE_SEED = 1  # the test composites are the same for every run seed
DEFAULT_PER_PAIR = 100


def dermamnist_filename(size: int) -> str:
    """``dermamnist.npz`` for 28x28 images, ``dermamnist_<size>.npz`` for the larger variants."""
    if size not in DERMAMNIST_SIZES:
        raise ValueError(f"DermaMNIST size must be one of {DERMAMNIST_SIZES}, got {size}")
    return "dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"


def read_dermamnist(data_root: PathLike, size: int = 28) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"val"|"test": (images uint8 (N, 3, size, size), labels int64 (N,))}`` from the npz."""
    path = require_file(
        Path(data_root) / dermamnist_filename(size), f"DermaMNIST {size}x{size} images",
        DERMAMNIST_SOURCE, DERMAMNIST_LAYOUT,
    )
    wanted = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = sorted(npz.files)
            arrays = {key: npz[key] for key in wanted if key in keys}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise corrupt(path, f"cannot read as .npz ({type(err).__name__}: {err})", DERMAMNIST_SOURCE) from err
    missing = [key for key in wanted if key not in arrays]
    if missing:
        raise corrupt(path, f"missing keys {missing} (has {keys})", DERMAMNIST_SOURCE)
    splits = {}
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
            raise corrupt(path, f"'{split}_images' must be uint8 (N, {size}, {size}, 3), "
                          f"got {images.dtype} {images.shape}", DERMAMNIST_SOURCE)
        if not np.issubdtype(labels.dtype, np.integer) or labels.ndim not in (1, 2) or (
            labels.ndim == 2 and labels.shape[1] != 1
        ):
            raise corrupt(path, f"'{split}_labels' must be integers (N, 1), got {labels.dtype} {labels.shape}",
                          DERMAMNIST_SOURCE)
        labels = labels.reshape(-1).astype(np.int64)
        if len(labels) != len(images):
            raise corrupt(path, f"{len(images)} '{split}_images' but {len(labels)} '{split}_labels'",
                          DERMAMNIST_SOURCE)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(DERMAMNIST_CLASSES)):
            raise corrupt(path, f"'{split}_labels' outside [0, 6]", DERMAMNIST_SOURCE)
        splits[split] = (np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels)
    return splits


def load_ml_dermamnist(
    data_root: PathLike,
    size: int = 28,
    per_pair: int = DEFAULT_PER_PAIR,
    seed: int = 0,
    test_split: Literal["test", "val"] = "test",
) -> DatasetBundle:
    """ml-dermamnist: every DermaMNIST image kept as a one-label sample, plus pairwise composites.

    As the FedNCAlign-ML paper builds it for this naturally long-tailed set: *all* single images are
    kept (preserving the original class distribution, each on a random half of a blank
    ``size x 2*size`` canvas), and ``per_pair`` composites (two images of different classes side by
    side) are added for each of the 21 class pairs. The paper gives no count: the default 100 adds
    2,100 composites to the 7,007 training singles. The evaluation split (``test_split``: the official
    test set by default, or val) is built the same way with ``per_pair`` scaled by its size over the
    train size (29 by default) and a fixed seed; ``seed`` sets the train draw.

    Normalised with the ImageNet mean/std (the paper starts DermaMNIST models from ImageNet weights).
    Returns a multi-label :class:`DatasetBundle` (7 classes, ``input_shape`` ``(3, size, 2*size)``)
    whose splits are :class:`CompositeDataset`.
    """
    if per_pair < 0:
        raise ValueError(f"per_pair must be >= 0, got {per_pair}")
    if test_split not in ("test", "val"):
        raise ValueError(f"test_split must be 'test' or 'val', got {test_split!r}")
    splits = read_dermamnist(data_root, size)
    train_images, train_labels = splits["train"]
    test_images, test_labels = splits[test_split]
    num_classes = len(DERMAMNIST_CLASSES)
    test_per_pair = scaled_per_pair(per_pair, len(test_labels), len(train_labels))
    train_plan = composite_plan(train_labels, num_classes, 1.0, per_pair, seed)
    test_plan = composite_plan(test_labels, num_classes, 1.0, test_per_pair, TEST_COMPOSITE_SEED)
    return DatasetBundle(
        name="ml-dermamnist", task="multilabel", num_classes=num_classes, class_names=DERMAMNIST_CLASSES,
        input_shape=(3, size, 2 * size),
        train=CompositeDataset(train_images, *train_plan, IMAGENET_MEAN, IMAGENET_STD),
        test=CompositeDataset(test_images, *test_plan, IMAGENET_MEAN, IMAGENET_STD),
    )

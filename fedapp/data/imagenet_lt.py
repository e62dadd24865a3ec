"""ImageNet-LT (Liu et al., 2019) from its standard list files, as imagenet-lt (1,000 classes).

Expected layout under ``data-root``::

    <data-root>/
      ImageNet_LT_train.txt     115,846 lines   "train/n01440764/n01440764_10026.JPEG 0"
      ImageNet_LT_val.txt        20,000 lines   (20 per class, drawn from the ILSVRC-2012 train set)
      ImageNet_LT_test.txt       50,000 lines   "val/n01440764/ILSVRC2012_val_00000293.JPEG 0"
      imagenet/                 the ILSVRC-2012 images, paths as written in the lists:
        train/n01440764/n01440764_10026.JPEG ...
        val/n01440764/ILSVRC2012_val_00000293.JPEG ...   (val images sorted into class folders)

Each list line is ``<path relative to imagenet/> <label>``, label an integer in [0, 999]. The
training list is long-tailed (1,280 to 5 images per class); the test list is balanced (50 per class)
and is the test split by default (``test_split="val"`` uses the 20-per-class val list instead).

Items are decoded from JPEG per item, the shorter side resized to ``image_size`` and the central
``image_size x image_size`` square cut (the usual ImageNet evaluation view), normalised with the
ImageNet mean/std. Class names are the WordNet ids (the folder of each class's training images);
a class whose images do not share one folder is named by its label number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from fedapp.data.base import DatasetBundle, black_pixel
from fedapp.data.files import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFileDataset,
    PathLike,
    corrupt,
    read_list_file,
    require_dir,
    require_file,
    require_files,
)

NUM_CLASSES = 1000
IMAGENET_LT_SOURCE = (
    "the ImageNet-LT split lists ImageNet_LT_train.txt / ImageNet_LT_val.txt / ImageNet_LT_test.txt "
    "published with 'Large-Scale Long-Tailed Recognition in an Open World' (Liu et al., CVPR 2019, "
    "OLTR), and the ILSVRC-2012 train and val images (image-net.org) with val sorted into class "
    "folders, under data-root/imagenet/"
)
IMAGENET_LT_LAYOUT = """\
<data-root>/
  ImageNet_LT_train.txt
  ImageNet_LT_val.txt
  ImageNet_LT_test.txt
  imagenet/
    train/<wnid>/<name>.JPEG
    val/<wnid>/<name>.JPEG"""


def read_imagenet_lt_list(list_path: Path, image_dir: Path) -> tuple[list[Path], np.ndarray]:
    """Image paths (under ``image_dir``) and int64 labels ``(N,)`` of one ImageNet-LT list file."""
    paths: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(read_list_file(list_path), start=1):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise corrupt(list_path, f"line {number} is not '<relative path> <label>': {line!r}",
                          IMAGENET_LT_SOURCE)
        label = int(parts[1])
        if not 0 <= label < NUM_CLASSES:
            raise corrupt(list_path, f"line {number}: label {label} outside [0, {NUM_CLASSES - 1}]",
                          IMAGENET_LT_SOURCE)
        paths.append(image_dir / parts[0])
        labels.append(label)
    if not paths:
        raise corrupt(list_path, "lists no image", IMAGENET_LT_SOURCE)
    return paths, np.asarray(labels, dtype=np.int64)


def class_names_from_paths(paths: list[Path], labels: np.ndarray) -> tuple[str, ...]:
    """Each class's folder name (WordNet id) when all its images share one; else its label number."""
    folders: dict[int, set[str]] = {}
    for path, label in zip(paths, labels.tolist()):
        folders.setdefault(label, set()).add(path.parent.name)
    names = [next(iter(folders[c])) if len(folders.get(c, ())) == 1 else str(c) for c in range(NUM_CLASSES)]
    if len(set(names)) != NUM_CLASSES:  # two classes in one folder: folder names do not identify classes
        return tuple(str(c) for c in range(NUM_CLASSES))
    return tuple(names)


def load_imagenet_lt(
    data_root: PathLike, image_size: int = 224, test_split: Literal["test", "val"] = "test"
) -> DatasetBundle:
    """imagenet-lt: long-tailed ``ImageNet_LT_train.txt``, balanced ``ImageNet_LT_<test_split>.txt``.

    Returns a single-label :class:`DatasetBundle` (1,000 classes, ``input_shape``
    ``(3, image_size, image_size)``) whose splits are :class:`ImageFileDataset` with int64 ``labels``
    read from the lists; every listed image is checked to exist when the dataset is built.
    """
    if test_split not in ("test", "val"):
        raise ValueError(f"test_split must be 'test' or 'val', got {test_split!r}")
    root = Path(data_root)
    train_list = require_file(root / "ImageNet_LT_train.txt", "ImageNet-LT training list", IMAGENET_LT_SOURCE,
                              IMAGENET_LT_LAYOUT)
    test_list = require_file(root / f"ImageNet_LT_{test_split}.txt", f"ImageNet-LT {test_split} list",
                             IMAGENET_LT_SOURCE, IMAGENET_LT_LAYOUT)
    image_dir = require_dir(root / "imagenet", "ILSVRC-2012 images", IMAGENET_LT_SOURCE, IMAGENET_LT_LAYOUT)
    train_paths, train_labels = read_imagenet_lt_list(train_list, image_dir)
    test_paths, test_labels = read_imagenet_lt_list(test_list, image_dir)
    require_files(train_paths, "ImageNet-LT training images", IMAGENET_LT_SOURCE, IMAGENET_LT_LAYOUT)
    require_files(test_paths, f"ImageNet-LT {test_split} images", IMAGENET_LT_SOURCE, IMAGENET_LT_LAYOUT)

    def dataset(paths: list[Path], labels: np.ndarray) -> ImageFileDataset:
        return ImageFileDataset(paths, labels, image_size, IMAGENET_MEAN, IMAGENET_STD, "center-crop")

    return DatasetBundle(
        name="imagenet-lt", task="singlelabel", num_classes=NUM_CLASSES,
        class_names=class_names_from_paths(train_paths, train_labels),
        input_shape=(3, image_size, image_size),
        train=dataset(train_paths, train_labels), test=dataset(test_paths, test_labels),
        pad_value=black_pixel(IMAGENET_MEAN, IMAGENET_STD),
    )

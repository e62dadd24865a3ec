"""NIH ChestX-ray14 as a 14-label multi-label dataset (chestx-ray14).

Expected layout under ``data-root`` (the official NIH Clinical Center release, or its Kaggle mirror
"NIH Chest X-rays", extracted as it is)::

    <data-root>/
      Data_Entry_2017.csv       'Image Index', 'Finding Labels' ('|'-separated, or 'No Finding'), ...
      train_val_list.txt        86,524 image names, one per line  -> train split
      test_list.txt             25,596 image names, one per line  -> test split
      images/00000001_000.png ...             (NIH: all archives extracted into one folder)
    or
      images_001/images/00000001_000.png ...  (Kaggle: one folder per archive)
      ...
      images_012/images/...

``Data_Entry_2017_v2020.csv`` (the re-released table, same columns) is read when
``Data_Entry_2017.csv`` is absent.

Targets: float32 multi-hot over :data:`CHESTX_CLASSES` (the paper's order; the CSV spells
"Pleural_Thickening"). "No Finding" is the all-zero vector: those negatives are about 4/7 of the
training set; the partitioner's ``spread_negatives`` spreads them evenly across clients, as the paper
does. The official split is used: train = ``train_val_list.txt`` (the paper's validation set for model
selection, if any, is carved from it by the caller), test = ``test_list.txt``.

Images are 8-bit grayscale PNGs (1024x1024; a few are stored as RGBA): each is decoded as gray and
replicated to 3 channels, resized to ``image_size`` and normalised with the ImageNet mean/std,
because the paper starts ChestX models from ImageNet-pretrained ResNet-18 (3-channel input).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fedapp.data.base import DatasetBundle
from fedapp.data.files import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFileDataset,
    MissingDataFileError,
    PathLike,
    corrupt,
    missing_message,
    read_list_file,
    require_file,
)

CHESTX_CLASSES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)
NO_FINDING = "No Finding"
CHESTX_SOURCE = (
    "the official NIH ChestX-ray14 release (NIH Clinical Center, 'ChestX-ray8'/'NIH Chest X-ray "
    "Dataset': Data_Entry_2017.csv, train_val_list.txt, test_list.txt and the images_001..012 "
    "archives) or its Kaggle mirror 'NIH Chest X-rays', extracted into data-root"
)
CHESTX_LAYOUT = """\
<data-root>/
  Data_Entry_2017.csv
  train_val_list.txt
  test_list.txt
  images/<name>.png                 (or images_001/images/<name>.png ... images_012/images/...)"""
CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
_CLASS_INDEX = {name: index for index, name in enumerate(CHESTX_CLASSES)}


def parse_finding_labels(text: str) -> np.ndarray:
    """float32 multi-hot ``(14,)`` of a 'Finding Labels' cell, e.g. ``"Effusion|Mass"``.

    ``"No Finding"`` gives all zeros. Raises ``ValueError`` for an unknown label, an empty cell, or
    "No Finding" together with a disease.
    """
    names = [name.strip() for name in text.split("|")]
    if names == [NO_FINDING]:
        return np.zeros(len(CHESTX_CLASSES), dtype=np.float32)
    vector = np.zeros(len(CHESTX_CLASSES), dtype=np.float32)
    for name in names:
        if name == NO_FINDING:
            raise ValueError(f"{text!r} combines '{NO_FINDING}' with a disease")
        if name not in _CLASS_INDEX:
            raise ValueError(f"unknown finding {name!r} in {text!r}; allowed: {', '.join(CHESTX_CLASSES)}, "
                             f"or '{NO_FINDING}' alone")
        vector[_CLASS_INDEX[name]] = 1.0
    return vector


def read_chestx_table(data_root: PathLike) -> dict[str, np.ndarray]:
    """``{image name: multi-hot (14,)}`` from ``Data_Entry_2017.csv`` (or its v2020 re-release)."""
    root = Path(data_root)
    candidates = [root / name for name in CSV_NAMES]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        path = require_file(candidates[0], "ChestX-ray14 label table", CHESTX_SOURCE, CHESTX_LAYOUT)
    table: dict[str, np.ndarray] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in ("Image Index", "Finding Labels") if c not in columns]
            if missing:
                raise corrupt(path, f"missing columns {missing} (has {columns})", CHESTX_SOURCE)
            for line, row in enumerate(reader, start=2):
                name = (row["Image Index"] or "").strip()
                if not name:
                    raise corrupt(path, f"line {line}: empty 'Image Index'", CHESTX_SOURCE)
                try:
                    table[name] = parse_finding_labels(row["Finding Labels"] or "")
                except ValueError as err:
                    raise corrupt(path, f"line {line}: {err}", CHESTX_SOURCE) from err
    except (UnicodeDecodeError, csv.Error) as err:
        raise corrupt(path, f"not a readable CSV ({err})", CHESTX_SOURCE) from err
    if not table:
        raise corrupt(path, "has no rows", CHESTX_SOURCE)
    return table


def find_chestx_images(data_root: PathLike) -> dict[str, Path]:
    """``{file name: path}`` of every PNG in ``images/`` and ``images_*/images/`` (first one wins)."""
    root = Path(data_root)
    folders = [root / "images"] + sorted(root.glob("images_*/images"))
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.glob("*.png")):
                found.setdefault(path.name, path)
    if not found:
        raise MissingDataFileError(missing_message(
            root / "images", "folder", f"ChestX-ray14 images: no .png in it nor in {root / 'images_*' / 'images'}",
            CHESTX_SOURCE, CHESTX_LAYOUT,
        ))
    return found


def _split(
    data_root: Path, list_name: str, table: dict[str, np.ndarray], images: dict[str, Path]
) -> tuple[list[Path], np.ndarray]:
    list_path = require_file(data_root / list_name, f"ChestX-ray14 split list {list_name}", CHESTX_SOURCE,
                             CHESTX_LAYOUT)
    names = list(dict.fromkeys(read_list_file(list_path)))
    if not names:
        raise corrupt(list_path, "lists no image", CHESTX_SOURCE)
    unlabeled = [name for name in names if name not in table]
    if unlabeled:
        raise corrupt(list_path, f"{len(unlabeled)} images have no row in the label table, e.g. "
                      f"{unlabeled[:5]}", CHESTX_SOURCE)
    absent = [name for name in names if name not in images]
    if absent:
        raise MissingDataFileError(missing_message(
            data_root / "images" / absent[0], "file",
            f"{len(absent)} of {len(names)} ChestX-ray14 images listed in {list_path} are in neither "
            f"{data_root / 'images'} nor {data_root / 'images_*' / 'images'}, e.g. {absent[:5]}",
            CHESTX_SOURCE, CHESTX_LAYOUT,
        ))
    return [images[name] for name in names], np.stack([table[name] for name in names])


def load_chestx_ray14(data_root: PathLike, image_size: int = 224) -> DatasetBundle:
    """chestx-ray14: official train_val / test split, 14 disease labels, "No Finding" = all zeros.

    Returns a multi-label :class:`DatasetBundle` (``input_shape`` ``(3, image_size, image_size)``)
    whose splits are :class:`ImageFileDataset` (gray PNG replicated to 3 channels, resized to
    ``image_size x image_size``, ImageNet mean/std), ``labels`` read from the CSV at construction.
    """
    root = Path(data_root)
    table = read_chestx_table(root)
    images = find_chestx_images(root)
    train_paths, train_labels = _split(root, "train_val_list.txt", table, images)
    test_paths, test_labels = _split(root, "test_list.txt", table, images)

    def dataset(paths: list[Path], labels: np.ndarray) -> ImageFileDataset:
        return ImageFileDataset(paths, labels, image_size, IMAGENET_MEAN, IMAGENET_STD, "squash", grayscale=True)

    return DatasetBundle(
        name="chestx-ray14", task="multilabel", num_classes=len(CHESTX_CLASSES), class_names=CHESTX_CLASSES,
        input_shape=(3, image_size, image_size),
        train=dataset(train_paths, train_labels), test=dataset(test_paths, test_labels),
    )

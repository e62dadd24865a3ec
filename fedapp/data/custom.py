"""Bring your own images: an ImageFolder tree (image-folder) or a CSV of labels (multilabel-csv).

Both read ``data-root``, resize every image to ``image-size x image-size`` (squashed, aspect ratio
not kept, nothing cut), normalise it with the ImageNet mean/std and go through the same hold-out and
partitions as every other dataset (``partition``, ``alpha``, ``class-presence-ratio``). The data
are taken as they are: ``imbalance-factor`` does not subsample them (a long-tailed folder stays as
long-tailed as it is; many/medium/few-shot groups come from its own class counts).

**image-folder** (single-label, torchvision's ``ImageFolder`` layout; class = sub-folder name,
classes in sorted order)::

    <data-root>/train/<class>/<image>     with a test/ folder beside it:  test = <data-root>/test/
    <data-root>/test/<class>/<image>
  or
    <data-root>/<class>/<image>           no train/: a fixed 20% of each class is the test split

**multilabel-csv** (multi-label): ``<data-root>/labels.csv`` with a header row,

- an image-path column named ``image`` (or ``path``, ``file``, ``filename``): relative to
  ``data-root`` (or absolute);
- either one column per label holding 0/1 (every column that is not the image or split column),
  or one column ``labels`` of label names joined by ``|`` (an empty cell: no label);
- optionally a ``split`` column with ``train`` or ``test`` per row; without it a fixed 20% of the
  rows is the test split.

Split rules (both): the test split is fixed by the files (``test/``, ``split``) or, without them,
drawn with a fixed generator (seed 0, whatever the run's ``seed``), so every run of a sweep is
scored on the same images. The validation split is always ``val-fraction`` of the training split,
drawn with the run's ``seed`` (as for every dataset); a ``val/`` folder or ``val`` rows are refused
rather than silently dropped or mixed in.

Errors name the file, the CSV row (1 = the first data row after the header) and column: a missing
image, an image PIL cannot identify, a label name that no training row has, a 0/1 cell holding
something else, a class with no training image.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from fedapp.data.base import DatasetBundle, Task
from fedapp.data.files import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptDataFileError,
    ImageFileDataset,
    MissingDataFileError,
    PathLike,
    require_dir,
    require_file,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the test split of data without one must not move with the run's seed
IMAGE_COLUMNS = ("image", "path", "file", "filename")
NAMES_COLUMN = "labels"
NAMES_SEPARATOR = "|"
SPLIT_COLUMN = "split"
CSV_NAME = "labels.csv"
FOLDER_SOURCE = "your own images in torchvision's ImageFolder layout (one sub-folder per class)"
FOLDER_LAYOUT = """\
<data-root>/train/<class>/<image>  and  <data-root>/test/<class>/<image>
or <data-root>/<class>/<image>      (20% of each class becomes the test split)"""
CSV_SOURCE = "your own images with a CSV of labels"
CSV_LAYOUT = f"""\
<data-root>/{CSV_NAME}   header: image,<label 1>,<label 2>,...[,split]  (0/1 per label)
                   or: image,labels[,split]  (labels = names joined by '{NAMES_SEPARATOR}')
<data-root>/<image paths as written in the image column>"""


def check_image(path: Path, where: str) -> None:
    """Raise naming ``where`` if ``path`` is missing or not an image PIL can identify (header only)."""
    if not path.is_file():
        raise MissingDataFileError(f"missing image file {path} ({where})")
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise CorruptDataFileError(f"unreadable image file {path} ({where}): {err}") from err


def fixed_test_mask(groups: np.ndarray, fraction: float = TEST_FRACTION) -> np.ndarray:
    """True for a fixed ``fraction`` of each group (at least one sample of a group of two or more).

    Drawn with ``SPLIT_SEED``; ``groups`` is an int array (the class for single-label data, one
    group for multi-label data).
    """
    rng = np.random.default_rng(SPLIT_SEED)
    mask = np.zeros(len(groups), dtype=bool)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        count = int(round(fraction * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        else:
            count = 0
        mask[rng.permutation(members)[:count]] = True
    return mask


# ------------------------------------------------------------------------------------ ImageFolder
def _scan_class_folders(root: Path) -> dict[str, list[Path]]:
    """Image files per class sub-folder of ``root`` (recursively, sorted); other files are skipped."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise MissingDataFileError(
            f"no class folder in {root}: image-folder needs one sub-folder per class\n  expected layout:\n    "
            + FOLDER_LAYOUT.replace("\n", "\n    "))
    found = {}
    for name in classes:
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        found[name] = files
    return found


def read_image_folder(data_root: PathLike) -> tuple[tuple[str, ...], list[Path], np.ndarray, list[Path], np.ndarray]:
    """Class names, train paths/labels and test paths/labels of an ImageFolder tree (see module doc)."""
    root = require_dir(data_root, "image-folder data-root", FOLDER_SOURCE, FOLDER_LAYOUT)
    if (root / "val").is_dir():
        raise CorruptDataFileError(
            f"{root / 'val'}: a val/ folder is not read (the validation split is val-fraction of train/); "
            "move its class folders into train/ or test/")
    if (root / "train").is_dir():
        test_root = require_dir(root / "test", "image-folder test split (train/ exists beside it)",
                                FOLDER_SOURCE, FOLDER_LAYOUT)
        train = _scan_class_folders(root / "train")
        test = _scan_class_folders(test_root)
        unknown = sorted(set(test) - set(train))
        if unknown:
            raise CorruptDataFileError(
                f"{test_root / unknown[0]}: class {unknown[0]!r} has no folder in {root / 'train'} "
                f"(unknown label; training classes: {', '.join(train)})")
    else:
        train, test = _scan_class_folders(root), None
    classes = tuple(train)
    for name, files in train.items():
        if not files:
            folder = (root / "train" / name) if test is not None else (root / name)
            raise CorruptDataFileError(
                f"{folder}: class {name!r} has no image (empty class; image files end in "
                f"{', '.join(IMAGE_EXTENSIONS)})")
    paths = [p for name in classes for p in train[name]]
    labels = np.asarray([c for c, name in enumerate(classes) for _ in train[name]], dtype=np.int64)
    for path in paths + ([p for files in test.values() for p in files] if test else []):
        check_image(path, f"class folder {path.parent.name!r}")
    if test is None:
        mask = fixed_test_mask(labels)
        test_paths = [p for p, m in zip(paths, mask) if m]
        return classes, [p for p, m in zip(paths, mask) if not m], labels[~mask], test_paths, labels[mask]
    index = {name: c for c, name in enumerate(classes)}
    test_paths = [p for name, files in test.items() for p in files]
    test_labels = np.asarray([index[name] for name, files in test.items() for _ in files], dtype=np.int64)
    if not test_paths:
        raise CorruptDataFileError(f"{root / 'test'}: no image in any class folder (the test split is empty)")
    return classes, paths, labels, test_paths, test_labels


def load_image_folder(data_root: PathLike, image_size: int) -> DatasetBundle:
    """image-folder: a single-label :class:`DatasetBundle` of ``(3, image_size, image_size)`` images."""
    return _file_bundle("image-folder", "singlelabel", image_size, *read_image_folder(data_root))


def _file_bundle(
    name: str, task: Task, image_size: int, classes: tuple[str, ...],
    train_paths: list[Path], train_labels: np.ndarray, test_paths: list[Path], test_labels: np.ndarray,
) -> DatasetBundle:
    """Both splits as :class:`ImageFileDataset` s (squashed to ``image_size``, ImageNet statistics)."""
    return DatasetBundle(
        name=name, task=task, num_classes=len(classes), class_names=classes,
        input_shape=(3, image_size, image_size),
        train=ImageFileDataset(train_paths, train_labels, image_size, IMAGENET_MEAN, IMAGENET_STD, "squash"),
        test=ImageFileDataset(test_paths, test_labels, image_size, IMAGENET_MEAN, IMAGENET_STD, "squash"),
    )


# ------------------------------------------------------------------------------------------- CSV
def _where(csv_path: Path, row: int, column: str) -> str:
    return f"{csv_path}, row {row}, column {column!r}"


def read_label_csv(data_root: PathLike) -> tuple[tuple[str, ...], list[Path], np.ndarray, list[Path], np.ndarray]:
    """Class names, train paths/multi-hot labels and test paths/labels of ``labels.csv`` (module doc)."""
    root = Path(data_root)
    csv_path = require_file(root / CSV_NAME, "multilabel-csv label file", CSV_SOURCE, CSV_LAYOUT)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            rows = [row for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise CorruptDataFileError(f"{csv_path}: not a readable UTF-8 CSV file ({err})") from err
    image_col = next((c for c in IMAGE_COLUMNS if c in header), None)
    if image_col is None:
        raise CorruptDataFileError(
            f"{csv_path}: header {header} has no image-path column; name it one of {', '.join(IMAGE_COLUMNS)}")
    if not rows:
        raise CorruptDataFileError(f"{csv_path}: no data row after the header")
    position = {name: i for i, name in enumerate(header)}
    has_split = SPLIT_COLUMN in position
    label_cols = [h for h in header if h not in (image_col, SPLIT_COLUMN)]
    names_mode = label_cols == [NAMES_COLUMN]
    if not label_cols:
        raise CorruptDataFileError(f"{csv_path}: header {header} has no label column (0/1 per label, or "
                                   f"{NAMES_COLUMN!r} with names joined by {NAMES_SEPARATOR!r})")
    paths: list[Path] = []
    splits: list[str] = []
    cells: list[list[str]] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise CorruptDataFileError(f"{csv_path}, row {number}: {len(row)} cells, the header has {len(header)}")
        value = row[position[image_col]].strip()
        if not value:
            raise CorruptDataFileError(f"{_where(csv_path, number, image_col)}: empty image path")
        path = Path(value) if Path(value).is_absolute() else root / value
        check_image(path, _where(csv_path, number, image_col))
        paths.append(path)
        split = row[position[SPLIT_COLUMN]].strip().lower() if has_split else ""
        if has_split and split not in ("train", "test"):
            raise CorruptDataFileError(
                f"{_where(csv_path, number, SPLIT_COLUMN)}: {split!r} is not allowed; allowed: train, test "
                "(the validation split is val-fraction of train)")
        splits.append(split)
        cells.append([row[position[c]].strip() for c in label_cols])
    if has_split:
        is_test = np.asarray([s == "test" for s in splits])
    else:
        is_test = fixed_test_mask(np.zeros(len(rows), dtype=np.int64))
    if is_test.all() or not is_test.any():
        raise CorruptDataFileError(f"{csv_path}: the {'train' if is_test.all() else 'test'} split is empty "
                                   f"({len(rows)} rows)")
    if names_mode:
        classes, labels = _names_to_multi_hot(csv_path, [c[0] for c in cells], is_test)
    else:
        classes, labels = tuple(label_cols), _binary_cells(csv_path, label_cols, cells)
    empty = [c for c in range(len(classes)) if labels[~is_test, c].sum() == 0]
    if empty:
        raise CorruptDataFileError(f"{csv_path}, column {classes[empty[0]]!r}: label {classes[empty[0]]!r} has "
                                   "no positive training row (empty class)")
    train_paths = [p for p, t in zip(paths, is_test) if not t]
    test_paths = [p for p, t in zip(paths, is_test) if t]
    return classes, train_paths, labels[~is_test], test_paths, labels[is_test]


def _binary_cells(csv_path: Path, columns: list[str], cells: list[list[str]]) -> np.ndarray:
    labels = np.zeros((len(cells), len(columns)), dtype=np.float32)
    for number, row in enumerate(cells, start=1):
        for c, value in enumerate(row):
            if value not in ("0", "1"):
                raise CorruptDataFileError(f"{_where(csv_path, number, columns[c])}: {value!r} is not allowed; "
                                           "allowed: 0 or 1")
            labels[number - 1, c] = float(value)
    return labels


def _names_to_multi_hot(csv_path: Path, values: list[str], is_test: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Classes = the sorted names of the training rows; a test row's unknown name is an error."""
    split = [[n.strip() for n in v.split(NAMES_SEPARATOR) if n.strip()] for v in values]
    classes = tuple(sorted({n for names, t in zip(split, is_test) if not t for n in names}))
    index = {name: c for c, name in enumerate(classes)}
    labels = np.zeros((len(values), len(classes)), dtype=np.float32)
    for number, names in enumerate(split, start=1):
        for name in names:
            if name not in index:
                raise CorruptDataFileError(
                    f"{_where(csv_path, number, NAMES_COLUMN)}: unknown label {name!r} (no training row has it; "
                    f"known: {', '.join(classes)})")
            labels[number - 1, index[name]] = 1.0
    return classes, labels


def load_multilabel_csv(data_root: PathLike, image_size: int) -> DatasetBundle:
    """multilabel-csv: a multi-label :class:`DatasetBundle` of ``(3, image_size, image_size)`` images."""
    return _file_bundle("multilabel-csv", "multilabel", image_size, *read_label_csv(data_root))

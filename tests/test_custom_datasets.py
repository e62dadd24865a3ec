"""Bring your own images: ImageFolder trees and CSV-labelled folders written here with PIL."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedapp.config import RunConfig
from fedapp.data import federate, load_dataset
from fedapp.data.custom import TEST_FRACTION, load_image_folder, load_multilabel_csv
from fedapp.data.files import CorruptDataFileError, MissingDataFileError
from fedapp.inprocess import run_inprocess
from tests.conftest import assert_finished

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40)]


def write_image(path: Path, colour: tuple[int, int, int], seed: int, size: int = 20) -> None:
    """A noisy image of one colour (a class a small CNN can learn)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, size=(size, size + 4, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_image_folder(root: Path, per_class: tuple[int, ...] = (40, 20, 10, 6), split: bool = True) -> None:
    """``train/<class>/`` (long-tailed counts) and ``test/<class>/`` (6 each), or one tree without split."""
    for c, count in enumerate(per_class):
        name = f"class_{'abcd'[c]}"
        base = root / "train" if split else root
        for i in range(count):
            write_image(base / name / f"{i}.png", COLOURS[c], seed=100 * c + i)
        if split:
            for i in range(6):
                write_image(root / "test" / name / f"t{i}.jpg", COLOURS[c], seed=10_000 + 100 * c + i)


def write_label_csv(root: Path, rows: int = 60, names: bool = False, split: bool = True) -> list[list[str]]:
    """``labels.csv`` + images: each image is the colours of its labels side by side."""
    rng = np.random.default_rng(1)
    labels = ["cat", "dog", "sun"]
    header = ["image"] + (["labels"] if names else labels) + (["split"] if split else [])
    table = []
    for i in range(rows):
        present = rng.random(3) < 0.45
        if not present.any():
            present[i % 3] = True
        colour = tuple(int(v) for v in np.mean([COLOURS[c] for c in np.flatnonzero(present)], axis=0))
        write_image(root / "images" / f"{i:03d}.png", colour, seed=i)
        cells = ["|".join(n for n, p in zip(labels, present) if p)] if names else [str(int(p)) for p in present]
        table.append([f"images/{i:03d}.png"] + cells + (["test" if i % 5 == 0 else "train"] if split else []))
    with (root / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header] + table)
    return [header] + table


def test_image_folder_reads_classes_splits_and_images(tmp_path):
    write_image_folder(tmp_path)
    bundle = load_image_folder(tmp_path, 16)
    assert bundle.task == "singlelabel" and bundle.class_names == ("class_a", "class_b", "class_c", "class_d")
    assert bundle.class_counts().tolist() == [40, 20, 10, 6]
    assert np.bincount(bundle.test.labels).tolist() == [6, 6, 6, 6]
    image, label = bundle.train[45]
    assert image.shape == (3, 16, 16) and int(label) == 1
    # Red images decode to a high red channel after normalisation.
    red, _ = bundle.train[0]
    assert red[0].mean() > 1.0 > red[2].mean()


def test_image_folder_without_split_holds_out_a_fixed_fifth_per_class(tmp_path):
    write_image_folder(tmp_path, split=False)
    bundle = load_image_folder(tmp_path, 16)
    test_counts = np.bincount(bundle.test.labels, minlength=4)
    assert test_counts.tolist() == [round(TEST_FRACTION * n) for n in (40, 20, 10, 6)]
    assert len(bundle.train) + len(bundle.test) == 76
    again = load_image_folder(tmp_path, 16)
    assert again.test.paths == bundle.test.paths  # the same test images whatever the run


def test_broken_image_is_named(tmp_path):
    write_image_folder(tmp_path)
    bad = tmp_path / "train" / "class_b" / "7.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(CorruptDataFileError, match=r"unreadable image file .*class_b/7\.png"):
        load_image_folder(tmp_path, 16)


def test_empty_class_and_unknown_test_class_are_named(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "train" / "class_e").mkdir()
    with pytest.raises(CorruptDataFileError, match=r"train/class_e: class 'class_e' has no image"):
        load_image_folder(tmp_path, 16)
    (tmp_path / "train" / "class_e").rmdir()
    write_image(tmp_path / "test" / "class_z" / "0.png", COLOURS[0], 0)
    with pytest.raises(CorruptDataFileError, match=r"class 'class_z' has no folder"):
        load_image_folder(tmp_path, 16)


def test_csv_binary_and_names_columns_give_the_same_labels(tmp_path):
    binary, names = tmp_path / "binary", tmp_path / "names"
    table = write_label_csv(binary)
    write_label_csv(names, names=True)
    a, b = load_multilabel_csv(binary, 16), load_multilabel_csv(names, 16)
    assert a.class_names == b.class_names == ("cat", "dog", "sun")
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    expected_train = np.asarray([[float(v) for v in row[1:4]] for row in table[1:] if row[4] == "train"])
    np.testing.assert_array_equal(a.train.labels, expected_train)
    assert len(a.test) == 12 and a.train[0][0].shape == (3, 16, 16)


def test_csv_without_split_column_holds_out_a_fixed_fifth(tmp_path):
    write_label_csv(tmp_path, rows=50, split=False)
    bundle = load_multilabel_csv(tmp_path, 16)
    assert (len(bundle.train), len(bundle.test)) == (40, 10)


@pytest.mark.parametrize("damage, message", [
    (lambda rows, root: rows[3].__setitem__(0, "images/nope.png"),
     r"missing image file .*nope\.png \(.*labels\.csv, row 3, column 'image'\)"),
    (lambda rows, root: rows[2].__setitem__(2, "2"), r"labels\.csv, row 2, column 'dog'.*'2' is not allowed"),
    (lambda rows, root: rows[4].__setitem__(4, "val"), r"labels\.csv, row 4, column 'split'"),
    (lambda rows, root: (root / "images" / "005.png").write_bytes(b"garbage"),
     r"unreadable image file .*005\.png \(.*labels\.csv, row 6, column 'image'\)"),
])
def test_csv_errors_name_file_row_and_column(tmp_path, damage, message):
    rows = write_label_csv(tmp_path)
    damage(rows, tmp_path)
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises((CorruptDataFileError, MissingDataFileError), match=message):
        load_multilabel_csv(tmp_path, 16)


def test_csv_unknown_label_name_and_empty_class_are_named(tmp_path):
    rows = write_label_csv(tmp_path, names=True)
    test_row = next(i for i, row in enumerate(rows) if i and row[2] == "test")
    rows[test_row][1] = "cat|zebra"
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(CorruptDataFileError, match=rf"row {test_row}, column 'labels'.*unknown label 'zebra'"):
        load_multilabel_csv(tmp_path, 16)
    binary = tmp_path / "binary"
    rows = write_label_csv(binary)
    for row in rows[1:]:
        if row[4] == "train":
            row[3] = "0"
    with (binary / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(CorruptDataFileError, match=r"column 'sun'.*no positive training row \(empty class\)"):
        load_multilabel_csv(binary, 16)


def test_own_data_goes_through_the_partitions(tmp_path):
    write_image_folder(tmp_path)
    config = RunConfig(dataset="image-folder", data_root=str(tmp_path), image_size=16, alpha=0.3,
                       min_partition_size=2, local_test_size=8)
    assert load_dataset(config).num_classes == 4
    split = federate(config, 3)
    assert split.client_class_counts().sum() == len(split.bundle.train) - len(split.validation_indices)
    assert all(len(t) == 8 for t in split.client_test)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, dataset, writer", [
    ("fedloge", "image-folder", write_image_folder),
    ("fedncalign-ml", "multilabel-csv", write_label_csv),
])
def test_own_data_trains_one_round(tmp_path, algorithm, dataset, writer):
    data = tmp_path / "data"
    data.mkdir()
    writer(data)
    run_dir = run_inprocess({
        "algorithm": algorithm, "dataset": dataset, "data-root": str(data), "image-size": 16,
        "num-server-rounds": 1, "local-epochs": 1, "min-partition-size": 2, "local-test-size": 8,
        "output-dir": str(tmp_path / "run"), "tensorboard": False,
    }, 2)
    assert_finished(run_dir, 1)
    assert (run_dir / "plots" / "partition.png").is_file() and (run_dir / "report.html").is_file()

"""The real-dataset loaders, on tiny fixtures that each test writes in the published format."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedapp.data.base import DatasetBundle
from fedapp.data.chestx import CHESTX_CLASSES, load_chestx_ray14, parse_finding_labels
from fedapp.data.cifar import load_cifar_lt, load_ml_cifar10
from fedapp.data.composites import build_composites
from fedapp.data.files import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptDataFileError,
    MissingDataFileError,
)
from fedapp.data.imagenet_lt import load_imagenet_lt
from fedapp.data.longtail import longtail_class_counts
from fedapp.data.medmnist import DERMAMNIST_CLASSES, load_ml_dermamnist
from fedapp.data.voc import VOC_CLASSES, load_voc2012

# ---------------------------------------------------------------------------------------------- helpers


def normalize_uint8(images: np.ndarray, mean, std) -> np.ndarray:
    """Reference: float32 ``(images / 255 - mean) / std`` for uint8 images ``(N, C, H, W)``, in numpy."""
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / 255.0) - mean_arr) / std_arr


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_class_per_batch: int = 1, test_per_class: int = 2) -> None:
    """cifar-10-batches-py with 5 training batches of 10*per_class_per_batch images each."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        labels = rng.permutation(np.repeat(np.arange(10), per_class_per_batch)).tolist()
        _pickle(folder / f"data_batch_{i}", {b"batch_label": b"training batch", b"labels": labels,
                                             b"data": _cifar_images(rng, len(labels)),
                                             b"filenames": [b"x.png"] * len(labels)})
    test_labels = rng.permutation(np.repeat(np.arange(10), test_per_class)).tolist()
    _pickle(folder / "test_batch", {b"labels": test_labels, b"data": _cifar_images(rng, len(test_labels))})
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck")]
    _pickle(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 10, b"num_vis": 3072})


def write_cifar100(root: Path, train_per_class: int = 3, test_per_class: int = 1) -> None:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = rng.permutation(np.repeat(np.arange(100), per_class)).tolist()
        _pickle(folder / name, {b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                                b"data": _cifar_images(rng, len(fine))})
    _pickle(folder / "meta", {b"fine_label_names": [f"class{c}".encode() for c in range(100)],
                              b"coarse_label_names": [f"super{c}".encode() for c in range(20)]})


def write_dermamnist(root: Path, size: int = 28, name: str = "dermamnist.npz", drop: str | None = None) -> Path:
    rng = np.random.default_rng(2)
    arrays = {}
    for split, per_class in (("train", 3), ("val", 1), ("test", 2)):
        labels = np.repeat(np.arange(7), per_class).reshape(-1, 1).astype(np.uint8)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(len(labels), size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    if drop:
        del arrays[drop]
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    np.savez_compressed(path, **arrays)
    return path


def _jpeg(path: Path, size: tuple[int, int] = (12, 10), color: tuple[int, int, int] = (200, 30, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")


def _voc_xml(objects: list[tuple[str, int]]) -> str:
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
        f"<ymax>5</ymax></bndbox></object>"
        for name, difficult in objects
    )
    return f"<annotation><folder>VOC2012</folder><filename>x.jpg</filename>{body}</annotation>"


VOC_FIXTURE = {
    "train": {
        "2008_000001": [("person", 0), ("dog", 0)],
        "2008_000002": [("cat", 1)],  # only difficult objects
        "2008_000003": [("car", 0), ("bus", 1), ("car", 0)],
    },
    "val": {"2008_000004": [("diningtable", 0), ("tvmonitor", 0), ("pottedplant", 1), ("chair", 0)]},
}


def write_voc(root: Path, fixture: dict[str, dict[str, list[tuple[str, int]]]] | None = None) -> Path:
    """VOCdevkit/VOC2012 with ``fixture`` ({split: {image id: [(class, difficult), ...]}}, default VOC_FIXTURE)."""
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for split, images in (fixture or VOC_FIXTURE).items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
        for image_id, objects in images.items():
            (voc / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(objects))
            _jpeg(voc / "JPEGImages" / f"{image_id}.jpg")
    return voc


def _vector(names: list[str], classes: tuple[str, ...]) -> np.ndarray:
    vector = np.zeros(len(classes), dtype=np.float32)
    vector[[classes.index(n) for n in names]] = 1.0
    return vector


CHESTX_ROWS = {
    "00000001_000.png": "Cardiomegaly",
    "00000001_001.png": "Effusion|Pleural_Thickening",
    "00000002_000.png": "No Finding",
    "00000003_000.png": "Hernia|Atelectasis|Pneumothorax",
    "00000004_000.png": "No Finding",
}


def write_chestx(root: Path, rows: dict[str, str] = CHESTX_ROWS, num_train: int = 3) -> None:
    """The CSV, split lists (first ``num_train`` rows train_val, the rest test) and gray PNGs of ``rows``."""
    root.mkdir(parents=True, exist_ok=True)
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")
    lines = [f"{name},{labels},0,{i + 1},58,M,PA,2682,2749,0.143,0.143,\n" for i, (name, labels) in
             enumerate(rows.items())]
    (root / "Data_Entry_2017.csv").write_text(header + "".join(lines))
    names = list(rows)
    (root / "train_val_list.txt").write_text("\n".join(names[:num_train]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[num_train:]) + "\n")
    for i, name in enumerate(names):  # both published layouts: images/ and images_00k/images/
        folder = root / "images" if i % 2 == 0 else root / f"images_00{i}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        gray = np.full((20, 20), (40 * i + 10) % 256, dtype=np.uint8)
        gray[:, :10] = (255 - 40 * i) % 256
        Image.fromarray(gray, mode="L").save(folder / name)


IMAGENET_TRAIN = [("train/n01440764/n01440764_1.JPEG", 0), ("train/n01440764/n01440764_2.JPEG", 0),
                  ("train/n01443537/n01443537_1.JPEG", 1), ("train/n15075141/n15075141_9.JPEG", 999)]
IMAGENET_TEST = [("val/n01440764/ILSVRC2012_val_00000293.JPEG", 0),
                 ("val/n15075141/ILSVRC2012_val_00000001.JPEG", 999)]


def write_imagenet_lt(
    root: Path, train: list[tuple[str, int]] = IMAGENET_TRAIN, test: list[tuple[str, int]] = IMAGENET_TEST
) -> None:
    """The three list files (val = the first test entry) and a JPEG for every listed image."""
    root.mkdir(parents=True, exist_ok=True)
    for name, entries in (("train", train), ("test", test), ("val", test[:1])):
        (root / f"ImageNet_LT_{name}.txt").write_text("".join(f"{p} {label}\n" for p, label in entries))
    for path, _ in train + test:
        _jpeg(root / "imagenet" / path, size=(30, 20))


def _check_multilabel(bundle: DatasetBundle, num_classes: int) -> None:
    assert bundle.task == "multilabel" and bundle.num_classes == num_classes
    assert len(bundle.class_names) == num_classes
    for split in (bundle.train, bundle.test):
        assert split.labels.dtype == np.float32 and split.labels.shape == (len(split), num_classes)
        image, target = split[0]
        assert image.dtype == torch.float32 and tuple(image.shape) == bundle.input_shape
        assert target.dtype == torch.float32 and target.shape == (num_classes,)
        assert torch.equal(target, torch.from_numpy(split.labels[0]))


def _check_composites(labels: np.ndarray, singles: int, num_classes: int, per_pair: int) -> None:
    pairs = list(itertools.combinations(range(num_classes), 2))
    assert len(labels) == singles + len(pairs) * per_pair
    assert (labels[:singles].sum(1) == 1).all()
    composite = labels[singles:]
    assert (composite.sum(1) == 2).all()
    seen = [tuple(np.flatnonzero(row)) for row in composite]
    assert all(seen.count(pair) == per_pair for pair in pairs)


# ------------------------------------------------------------------------------------------------ CIFAR


def test_ml_cifar10_composite_counts_and_shapes(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_class_per_batch=1, test_per_class=2)  # 50 train, 20 test sources
    bundle = load_ml_cifar10(tmp_path, single_fraction=0.5, composites_per_pair=2, seed=3)
    assert bundle.name == "ml-cifar10" and bundle.input_shape == (3, 32, 64)
    assert bundle.class_names[0] == "airplane" and bundle.class_names[9] == "truck"
    _check_multilabel(bundle, 10)
    _check_composites(bundle.train.labels, 25, 10, 2)
    _check_composites(bundle.test.labels, 10, 10, 1)  # 2 per pair scaled by 20/50 -> 1
    # the test set does not depend on the run seed; the train draw does
    other = load_ml_cifar10(tmp_path, single_fraction=0.5, composites_per_pair=2, seed=4)
    assert np.array_equal(other.test.sources, bundle.test.sources)
    assert not np.array_equal(other.train.sources, bundle.train.sources)


def test_ml_cifar10_items_equal_build_composites_on_normalised_images(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bundle = load_ml_cifar10(tmp_path, single_fraction=0.6, composites_per_pair=1, seed=7)
    folder = tmp_path / "cifar-10-batches-py"
    raw = []
    for i in range(1, 6):
        with (folder / f"data_batch_{i}").open("rb") as handle:
            raw.append(pickle.load(handle))
    images = np.concatenate([b[b"data"] for b in raw]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([b[b"labels"] for b in raw])
    expected_images, expected_labels = build_composites(
        normalize_uint8(images, CIFAR10_MEAN, CIFAR10_STD), labels, 10, 0.6, 1, 7)
    assert np.array_equal(bundle.train.labels, expected_labels)
    got = torch.stack([bundle.train[i][0] for i in range(len(bundle.train))]).numpy()
    np.testing.assert_allclose(got, expected_images, atol=1e-5)


def test_cifar10_lt_follows_exponential_profile(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_class_per_batch=2, test_per_class=2)  # 10 train images per class
    bundle = load_cifar_lt(tmp_path, num_classes=10, imbalance_factor=10, seed=0)
    assert bundle.name == "cifar10-lt" and bundle.task == "singlelabel" and bundle.input_shape == (3, 32, 32)
    counts = bundle.class_counts()
    assert counts.tolist() == longtail_class_counts(10, 10, 10).tolist()
    assert counts[0] == 10 and counts[-1] == 1
    assert np.bincount(bundle.test.labels, minlength=10).tolist() == [2] * 10  # balanced test
    image, target = bundle.train[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert target.dtype == torch.int64 and int(target) == bundle.train.labels[0]
    assert bundle.train.labels.dtype == np.int64
    raw = bundle.train.images[0].numpy()[None]
    np.testing.assert_allclose(image.numpy(), normalize_uint8(raw, CIFAR10_MEAN, CIFAR10_STD)[0], atol=1e-6)


def test_cifar100_lt(tmp_path: Path) -> None:
    write_cifar100(tmp_path, train_per_class=3, test_per_class=1)
    bundle = load_cifar_lt(tmp_path, num_classes=100, imbalance_factor=3, seed=1)
    assert bundle.name == "cifar100-lt" and bundle.num_classes == 100 and bundle.class_names[5] == "class5"
    assert bundle.class_counts().tolist() == longtail_class_counts(3, 100, 3).tolist()
    assert len(bundle.test) == 100


def test_cifar_missing_batch_names_the_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(MissingDataFileError) as info:
        load_ml_cifar10(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in message
    assert "cifar-10-python.tar.gz" in message and "test_batch" in message  # source and layout
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar_lt(tmp_path, num_classes=100)


def test_cifar_corrupt_batches(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated pickle
    with pytest.raises(CorruptDataFileError, match="data_batch_2.*cannot unpickle"):
        load_cifar_lt(tmp_path)
    _pickle(batch, {b"data": np.zeros((3, 3072), np.uint8)})  # no labels
    with pytest.raises(CorruptDataFileError, match=r"data_batch_2.*missing keys \['labels'\]"):
        load_cifar_lt(tmp_path)
    _pickle(batch, {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]})
    with pytest.raises(CorruptDataFileError, match=r"uint8 \(N, 3072\)"):
        load_cifar_lt(tmp_path)


# ------------------------------------------------------------------------------------------ DermaMNIST


def test_ml_dermamnist_keeps_all_singles(tmp_path: Path) -> None:
    write_dermamnist(tmp_path)  # 21 train, 7 val, 14 test singles
    bundle = load_ml_dermamnist(tmp_path, size=28, per_pair=3, seed=0)
    assert bundle.name == "ml-dermamnist" and bundle.class_names == DERMAMNIST_CLASSES
    assert bundle.input_shape == (3, 28, 56)
    _check_multilabel(bundle, 7)
    _check_composites(bundle.train.labels, 21, 7, 3)
    assert bundle.train.labels[:21].argmax(1).tolist() == np.repeat(np.arange(7), 3).tolist()
    _check_composites(bundle.test.labels, 14, 7, 2)  # 3 * 14/21 -> 2
    val = load_ml_dermamnist(tmp_path, per_pair=3, test_split="val")
    _check_composites(val.test.labels, 7, 7, 1)
    for index in (0, 30):  # a single (one half blank: zeros after normalisation) and a composite
        image = bundle.train[index][0].numpy()
        for half, source in zip((image[..., :28], image[..., 28:]), bundle.train.sources[index]):
            if source < 0:
                assert (half == 0).all()
            else:
                raw = bundle.train.images[source].numpy()[None]
                np.testing.assert_allclose(half, normalize_uint8(raw, IMAGENET_MEAN, IMAGENET_STD)[0], atol=1e-6)
    assert (bundle.train.sources[:21] < 0).sum() == 21 and (bundle.train.sources[21:] >= 0).all()


def test_dermamnist_larger_size_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingDataFileError) as info:
        load_ml_dermamnist(tmp_path, size=64)
    assert str(tmp_path / "dermamnist_64.npz") in str(info.value) and "MedMNIST" in str(info.value)
    write_dermamnist(tmp_path, size=64, name="dermamnist_64.npz")
    bundle = load_ml_dermamnist(tmp_path, size=64, per_pair=1)
    assert bundle.input_shape == (3, 64, 128) and tuple(bundle.test[0][0].shape) == (3, 64, 128)
    with pytest.raises(ValueError, match="size must be one of"):
        load_ml_dermamnist(tmp_path, size=32)


def test_dermamnist_corrupt_files(tmp_path: Path) -> None:
    write_dermamnist(tmp_path, drop="test_labels")
    with pytest.raises(CorruptDataFileError, match=r"dermamnist.npz.*missing keys \['test_labels'\]"):
        load_ml_dermamnist(tmp_path)
    path = write_dermamnist(tmp_path)
    path.write_bytes(path.read_bytes()[:200])  # truncated zip
    with pytest.raises(CorruptDataFileError, match="dermamnist.npz.*cannot read as .npz"):
        load_ml_dermamnist(tmp_path)
    write_dermamnist(tmp_path, size=64)  # 64x64 content under the 28x28 name
    with pytest.raises(CorruptDataFileError, match=r"uint8 \(N, 28, 28, 3\)"):
        load_ml_dermamnist(tmp_path)


# ------------------------------------------------------------------------------------------------- VOC


def test_voc2012_labels_and_difficult_handling(tmp_path: Path) -> None:
    write_voc(tmp_path)
    bundle = load_voc2012(tmp_path, image_size=16)
    assert bundle.name == "voc2012" and bundle.class_names == VOC_CLASSES and bundle.input_shape == (3, 16, 16)
    _check_multilabel(bundle, 20)
    assert len(bundle.train) == 3 and len(bundle.test) == 1
    expected = [["person", "dog"], ["cat"], ["car"]]  # difficult bus ignored; difficult-only cat kept
    for row, names in zip(bundle.train.labels, expected):
        assert np.array_equal(row, _vector(names, VOC_CLASSES))
    assert np.array_equal(bundle.test.labels[0], _vector(["diningtable", "tvmonitor", "chair"], VOC_CLASSES))
    with_difficult = load_voc2012(tmp_path, image_size=16, use_difficult=True)
    assert np.array_equal(with_difficult.train.labels[2], _vector(["car", "bus"], VOC_CLASSES))
    assert np.array_equal(with_difficult.test.labels[0],
                          _vector(["diningtable", "tvmonitor", "pottedplant", "chair"], VOC_CLASSES))
    image = bundle.train[0][0]  # a uniform-colour JPEG: each channel ~ (c/255 - mean)/std
    expected_pixel = (torch.tensor([200, 30, 60]) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(image.mean(dim=(1, 2)), expected_pixel, atol=0.1)


def test_voc2012_missing_and_corrupt_files(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    (voc / "JPEGImages" / "2008_000002.jpg").unlink()
    with pytest.raises(MissingDataFileError, match="2008_000002.jpg") as info:
        load_voc2012(tmp_path)
    assert "VOCtrainval_11-May-2012.tar" in str(info.value)
    _jpeg(voc / "JPEGImages" / "2008_000002.jpg")
    (voc / "Annotations" / "2008_000003.xml").write_text("<annotation><object><name>car</name>")
    with pytest.raises(CorruptDataFileError, match="2008_000003.xml"):
        load_voc2012(tmp_path)
    (voc / "Annotations" / "2008_000003.xml").write_text(_voc_xml([("spaceship", 0)]))
    with pytest.raises(CorruptDataFileError, match="'spaceship' is not one of the 20 VOC classes"):
        load_voc2012(tmp_path)
    (voc / "Annotations" / "2008_000003.xml").write_text(_voc_xml([("car", 0)]))
    (voc / "JPEGImages" / "2008_000001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    bundle = load_voc2012(tmp_path, image_size=8)
    with pytest.raises(CorruptDataFileError, match="2008_000001.jpg.*cannot decode"):
        bundle.train[0]
    (voc / "ImageSets" / "Main" / "val.txt").unlink()
    with pytest.raises(MissingDataFileError, match=r"ImageSets/Main/val\.txt"):
        load_voc2012(tmp_path)


# --------------------------------------------------------------------------------------------- ChestX


def test_chestx_labels_no_finding_and_images(tmp_path: Path) -> None:
    write_chestx(tmp_path)
    bundle = load_chestx_ray14(tmp_path, image_size=8)
    assert bundle.name == "chestx-ray14" and bundle.class_names == CHESTX_CLASSES
    assert bundle.class_names[11] == "Pleural_Thickening" and bundle.input_shape == (3, 8, 8)
    _check_multilabel(bundle, 14)
    assert len(bundle.train) == 3 and len(bundle.test) == 2
    assert np.array_equal(bundle.train.labels[0], _vector(["Cardiomegaly"], CHESTX_CLASSES))
    assert np.array_equal(bundle.train.labels[1], _vector(["Effusion", "Pleural_Thickening"], CHESTX_CLASSES))
    assert not bundle.train.labels[2].any() and not bundle.test.labels[1].any()  # No Finding -> zeros
    assert np.array_equal(bundle.test.labels[0], _vector(["Hernia", "Atelectasis", "Pneumothorax"],
                                                         CHESTX_CLASSES))
    image = bundle.train[1][0]  # from images_001/images/: gray replicated to 3 identical channels
    pixels = image * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[0], pixels[2], atol=1e-5)


def test_chestx_errors(tmp_path: Path) -> None:
    assert not parse_finding_labels("No Finding").any()
    with pytest.raises(ValueError, match="unknown finding 'Pleural Thickening'"):
        parse_finding_labels("Pleural Thickening")
    with pytest.raises(ValueError, match="combines 'No Finding'"):
        parse_finding_labels("No Finding|Mass")
    with pytest.raises(MissingDataFileError, match="Data_Entry_2017.csv") as info:
        load_chestx_ray14(tmp_path)
    assert "train_val_list.txt" in str(info.value) and "NIH" in str(info.value)
    write_chestx(tmp_path)
    next((tmp_path / "images_001" / "images").glob("*.png")).unlink()
    with pytest.raises(MissingDataFileError, match="00000001_001.png"):
        load_chestx_ray14(tmp_path)
    write_chestx(tmp_path, {**CHESTX_ROWS, "00000003_000.png": "Hernia|Cancer"})
    with pytest.raises(CorruptDataFileError, match=r"Data_Entry_2017.csv.*line 5.*'Cancer'"):
        load_chestx_ray14(tmp_path)
    write_chestx(tmp_path)
    (tmp_path / "Data_Entry_2017.csv").write_text("Image,Labels\na.png,Mass\n")
    with pytest.raises(CorruptDataFileError, match="missing columns"):
        load_chestx_ray14(tmp_path)


# ------------------------------------------------------------------------------------------ ImageNet-LT


def test_imagenet_lt_lists_and_images(tmp_path: Path) -> None:
    write_imagenet_lt(tmp_path)
    bundle = load_imagenet_lt(tmp_path, image_size=16)
    assert bundle.name == "imagenet-lt" and bundle.task == "singlelabel" and bundle.num_classes == 1000
    assert bundle.input_shape == (3, 16, 16) and len(bundle.class_names) == 1000
    assert bundle.class_names[0] == "n01440764" and bundle.class_names[999] == "n15075141"
    assert bundle.class_names[5] == "5"  # a class without training images in this fixture
    assert bundle.train.labels.dtype == np.int64 and bundle.train.labels.tolist() == [0, 0, 1, 999]
    assert bundle.test.labels.tolist() == [0, 999]
    assert bundle.train.paths[2] == tmp_path / "imagenet" / "train/n01443537/n01443537_1.JPEG"
    image, target = bundle.test[1]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and target.dtype == torch.int64
    assert load_imagenet_lt(tmp_path, image_size=16, test_split="val").test.labels.tolist() == [0]


def test_imagenet_lt_errors(tmp_path: Path) -> None:
    write_imagenet_lt(tmp_path)
    (tmp_path / "imagenet" / IMAGENET_TEST[1][0]).unlink()
    with pytest.raises(MissingDataFileError, match="ILSVRC2012_val_00000001.JPEG") as info:
        load_imagenet_lt(tmp_path)
    assert "ImageNet_LT_test.txt" in str(info.value) and "imagenet/" in str(info.value)
    (tmp_path / "ImageNet_LT_train.txt").write_text("train/n01440764/n01440764_1.JPEG zero\n")
    with pytest.raises(CorruptDataFileError, match=r"ImageNet_LT_train.txt.*line 1"):
        load_imagenet_lt(tmp_path)
    (tmp_path / "ImageNet_LT_train.txt").write_text("train/n01440764/n01440764_1.JPEG 1000\n")
    with pytest.raises(CorruptDataFileError, match="label 1000 outside"):
        load_imagenet_lt(tmp_path)
    (tmp_path / "ImageNet_LT_train.txt").unlink()
    with pytest.raises(MissingDataFileError, match="ImageNet_LT_train.txt"):
        load_imagenet_lt(tmp_path)

"""Synthetic datasets in the published on-disk formats, for benchmarks that must not download anything.

- :func:`write_cifar10`: ``cifar-10-batches-py`` (five pickled training batches, a test batch, meta);
- :func:`write_image_folder`: ``<root>/<class>/<i>.jpg`` (one sub-folder per class);
- :func:`write_voc2012`: ``VOCdevkit/VOC2012`` (JPEGImages, Annotations, ImageSets/Main/train|val.txt).

Pixels are smooth gradients plus noise, per image and seeded, so JPEG files have a realistic
size and decode cost (flat colours would decode unrealistically fast). Labels are random; the
files only have to exercise the real readers at the real image sizes.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fedapp.data.voc import VOC_CLASSES


def synthetic_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """uint8 ``(height, width, 3)``: a random colour gradient plus pixel noise."""
    corners = rng.uniform(0, 255, (2, 2, 3))
    ys, xs = np.linspace(0, 1, height)[:, None, None], np.linspace(0, 1, width)[None, :, None]
    gradient = (corners[0, 0] * (1 - ys) * (1 - xs) + corners[0, 1] * (1 - ys) * xs
                + corners[1, 0] * ys * (1 - xs) + corners[1, 1] * ys * xs)
    return (gradient + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)


def _write_jpegs(jobs: list[tuple[Path, int]], width: int, height: int, threads: int = 8) -> None:
    """Write ``synthetic_image(seed)`` JPEGs (quality 90) for each ``(path, seed)``; PIL encodes off the GIL."""
    def write(job: tuple[Path, int]) -> None:
        path, seed = job
        Image.fromarray(synthetic_image(np.random.default_rng(seed), width, height)).save(path, quality=90)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, jobs))


def write_cifar10(root: Path, per_batch: int = 10_000, test_size: int = 10_000, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with five training batches of ``per_batch`` 32x32 images; returns root."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int) -> dict:
        images = np.stack([synthetic_image(rng, 32, 32).transpose(2, 0, 1).reshape(-1) for _ in range(n)])
        return {"data": images, "labels": rng.integers(0, 10, n).tolist()}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(test_size)))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return root


def write_image_folder(
    root: Path, classes: int = 10, per_class: int = 50, width: int = 500, height: int = 375, seed: int = 0
) -> list[tuple[Path, int]]:
    """``root/class_<c>/<i>.jpg``, ``per_class`` JPEGs of ``width x height`` per class; ``(path, class)`` pairs."""
    files = []
    for c in range(classes):
        (root / f"class_{c:03d}").mkdir(parents=True, exist_ok=True)
        files.extend((root / f"class_{c:03d}" / f"{i:05d}.jpg", c) for i in range(per_class))
    _write_jpegs([(path, seed * 1_000_003 + n) for n, (path, _) in enumerate(files)], width, height)
    return files


def write_voc2012(
    root: Path, train: int = 5_717, val: int = 5_823, width: int = 500, height: int = 375, seed: int = 0
) -> Path:
    """``root/VOCdevkit/VOC2012`` with ``train`` + ``val`` JPEGs (VOC's counts by default), 1-3 objects each."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"2008_{n:06d}" for n in range(train + val)]
    for image_id in ids:
        names = rng.choice(len(VOC_CLASSES), size=int(rng.integers(1, 4)), replace=False)
        objects = "".join(f"<object><name>{VOC_CLASSES[k]}</name><difficult>0</difficult></object>" for k in names)
        (voc / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{objects}</annotation>")
    _write_jpegs([(voc / "JPEGImages" / f"{image_id}.jpg", seed * 1_000_003 + n) for n, image_id in enumerate(ids)],
                 width, height)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids[:train]) + "\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids[train:]) + "\n")
    return root

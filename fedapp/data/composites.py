"""Multi-label composites built from a single-label dataset (Li et al., 2023a).

This is how the FedNCAlign-ML paper turns CIFAR-10 and DermaMNIST into multi-label datasets: keep
a portion of the single images and add an equal number of two-image composites for every pair of
different classes; a composite is two images of different classes side by side, its label the
union of theirs. Every sample (single or composite) has the same width, 2*W: a kept single image
sits on a random half of a blank (zero) canvas.
"""

from __future__ import annotations

import itertools

import numpy as np


def class_pairs(num_classes: int) -> list[tuple[int, int]]:
    """All unordered pairs ``(a, b)`` with ``a < b``: C * (C - 1) / 2 of them."""
    return list(itertools.combinations(range(num_classes), 2))


def sample_composite_sources(
    labels: np.ndarray, num_classes: int, per_pair: int, rng: np.random.Generator
) -> np.ndarray:
    """Source indices ``(M, 2)`` of ``per_pair`` composites for every class pair, left-right order random.

    Each composite draws one image of each class uniformly (with replacement across composites).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if per_pair < 0:
        raise ValueError(f"per_pair must be >= 0, got {per_pair}")
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    empty = [c for c, members in enumerate(by_class) if len(members) == 0]
    if empty and per_pair > 0:
        raise ValueError(f"cannot build composites: classes {empty} have no images")
    sources = []
    for a, b in class_pairs(num_classes):
        left = rng.choice(by_class[a], size=per_pair)
        right = rng.choice(by_class[b], size=per_pair)
        swap = rng.random(per_pair) < 0.5
        sources.append(np.stack([np.where(swap, right, left), np.where(swap, left, right)], axis=1))
    if not sources:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(sources).astype(np.int64)


def side_by_side(images: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Concatenate ``images[sources[:, 0]]`` and ``images[sources[:, 1]]`` along the width axis."""
    return np.concatenate([images[sources[:, 0]], images[sources[:, 1]]], axis=-1)


def single_on_canvas(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place each ``(C, H, W)`` image on a random half of a zero ``(C, H, 2W)`` canvas."""
    blank = np.zeros_like(images)
    on_left = (rng.random(len(images)) < 0.5)[:, None, None, None]
    return np.where(on_left, np.concatenate([images, blank], -1), np.concatenate([blank, images], -1))


def build_composites(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    single_fraction: float,
    per_pair: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label images ``(N', C, H, 2W)`` and multi-hot float32 labels ``(N', num_classes)``.

    ``single_fraction`` of the single images (chosen at random, in [0, 1]) are kept as one-label
    samples; ``per_pair`` composites are added for each of the C*(C-1)/2 class pairs.
    """
    if not 0.0 <= single_fraction <= 1.0:
        raise ValueError(f"single_fraction must be in [0, 1], got {single_fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    num_singles = int(round(single_fraction * len(labels)))
    kept = np.sort(rng.choice(len(labels), size=num_singles, replace=False))
    sources = sample_composite_sources(labels, num_classes, per_pair, rng)

    single_images = single_on_canvas(images[kept], rng)
    composite_images = side_by_side(images, sources)
    multi_hot = np.zeros((num_singles + len(sources), num_classes), dtype=np.float32)
    multi_hot[np.arange(num_singles), labels[kept]] = 1.0
    rows = num_singles + np.arange(len(sources))
    multi_hot[rows, labels[sources[:, 0]]] = 1.0
    multi_hot[rows, labels[sources[:, 1]]] = 1.0
    return np.concatenate([single_images, composite_images]).astype(np.float32), multi_hot

"""Training augmentation as pure functions over image batches: random crop with padding, horizontal flip.

FedLoGe's code trains on CIFAR-10/100-LT with ``transforms.RandomCrop(32, padding=4)`` and
``transforms.RandomHorizontalFlip()`` before ``Normalize`` (``util/dataset.py``,
github.com/ZackZikaiXiao/FedLoGe), and evaluates without augmentation. Here the same operations
run on whole batches of already-normalised tensors (:func:`random_crop_flip`), drawn from the
training loader's seeded ``torch.Generator`` so a run stays reproducible (see
:func:`fedapp.loops.make_loader`); evaluation never augments.

Run-config ``augment``:

- ``crop-flip``: pad by ``p`` pixels on every side, take a random ``H x W`` window (offsets uniform
  in ``{0, ..., 2p}`` per image, as ``RandomCrop``), then mirror left-right with probability 1/2.
- ``crop``: the crop alone.
- ``none``: no augmentation (this app's behaviour before it followed the authors).
- ``auto`` (default): :data:`AUTO_AUGMENT` by dataset; ``none`` for datasets not listed (the
  multi-label ones).

Padding :func:`crop_padding`: ``p = max(1, round(min(H, W) / 8))``, the authors' 4 of 32 pixels;
the same 1/8 of the side is 1 pixel for the 8x8 digits of ``lt-digits`` (a shift of up to one
pixel, 12.5% of the image, as 4 pixels are of a CIFAR image) and 28 for 224x224 ImageNet-LT crops.
The pad value is a black pixel as the model sees it (``DatasetBundle.pad_value``: ``-mean/std``
per channel after normalisation, 0 for the digits), as ``RandomCrop`` pads before ``Normalize``.

``lt-digits`` is not augmented by ``auto``: mirroring a digit changes what it looks like (2, 3, 4,
5, 6, 7, 9 are not symmetric), and on the validation split (IF 50, alpha 0.5, tuning seeds 100 and
101, 10 rounds) both augmentations lowered accuracy for FedLoGe and FedAvg, crop-flip the most
(docs/results/fedloge-defaults.md has the numbers). ``augment=crop`` / ``crop-flip`` still apply it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop-flip", "crop")
#: What ``augment=auto`` means per dataset (others: ``none``).
AUTO_AUGMENT: dict[str, str] = {
    "cifar10-lt": "crop-flip",  # the authors' CIFAR transform
    "cifar100-lt": "crop-flip",  # the authors' CIFAR transform
    "imagenet-lt": "crop-flip",  # no ImageNet pipeline in the authors' code; the CIFAR one, scaled
    "lt-digits": "none",  # chosen on the validation split: crop and crop-flip both lowered accuracy
}


def resolve_augment(augment: str, dataset: str) -> str:
    """The augmentation a run uses: ``augment`` itself, or :data:`AUTO_AUGMENT`'s entry for ``auto``."""
    if augment == "auto":
        return AUTO_AUGMENT.get(dataset, "none")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment={augment!r} is not allowed; allowed: auto, {', '.join(AUGMENTATIONS)}")
    return augment


def crop_padding(height: int, width: int) -> int:
    """Crop padding ``max(1, round(min(H, W) / 8))``: 4 for 32x32 (the authors'), 1 for 8x8, 28 for 224."""
    return max(1, round(min(height, width) / 8))


def random_crop_flip(
    images: torch.Tensor,
    padding: int,
    flip: bool,
    generator: torch.Generator,
    pad_value: Sequence[float] | float = 0.0,
) -> torch.Tensor:
    """Random crop with ``padding`` (and, with ``flip``, a random horizontal flip) of every image.

    For a batch ``x`` of shape ``(B, C, H, W)``: pad every side by ``p = padding`` with the
    per-channel ``pad_value``, draw offsets ``(i_b, j_b)`` uniform in ``{0, ..., 2p}^2``, and
    return ``y_b = pad(x_b)[:, i_b : i_b + H, j_b : j_b + W]``; with ``flip``, then draw
    ``f_b ~ Bernoulli(1/2)`` and mirror ``y_b`` along W where ``f_b = 1``. The draws, in that order
    (offsets ``(B, 2)`` then flips ``(B,)``), come from ``generator`` on the CPU, so the result
    depends only on the generator's state, not on the device of ``images``. ``padding = 0`` and
    ``flip = False`` return ``images`` unchanged without drawing.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) batch; got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0; got {padding}")
    batch, channels, height, width = images.shape
    out = images
    if padding > 0:
        offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator).to(images.device)
        fill = torch.as_tensor(pad_value, dtype=images.dtype, device=images.device).reshape(-1)
        if fill.numel() not in (1, channels):
            raise ValueError(f"pad_value must be one number or one per channel ({channels}); got {fill.numel()}")
        # Pad with zeros, then add the fill on the border only: F.pad's constant mode takes one scalar.
        padded = F.pad(images - fill.view(1, -1, 1, 1), (padding,) * 4) + fill.view(1, -1, 1, 1)
        rows = offsets[:, 0:1] + torch.arange(height, device=images.device)  # (B, H)
        cols = offsets[:, 1:2] + torch.arange(width, device=images.device)  # (B, W)
        b = torch.arange(batch, device=images.device).view(batch, 1, 1, 1)
        c = torch.arange(channels, device=images.device).view(1, channels, 1, 1)
        out = padded[b, c, rows.view(batch, 1, height, 1), cols.view(batch, 1, 1, width)]
    if flip:
        mirror = (torch.rand(batch, generator=generator) < 0.5).to(images.device)
        out = torch.where(mirror.view(batch, 1, 1, 1), out.flip(-1), out)
    return out


@dataclass(frozen=True)
class BatchAugment:
    """A configured :func:`random_crop_flip`: ``augment(images, generator)``."""

    padding: int
    flip: bool
    pad_value: tuple[float, ...] = (0.0,)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop_flip(images, self.padding, self.flip, generator, self.pad_value)


def build_augment(
    augment: str, dataset: str, input_shape: tuple[int, int, int], pad_value: Sequence[float] = ()
) -> BatchAugment | None:
    """The batch augmentation of run-config ``augment`` for ``dataset``, or None for ``none``."""
    name = resolve_augment(augment, dataset)
    if name == "none":
        return None
    _, height, width = input_shape
    return BatchAugment(crop_padding(height, width), name == "crop-flip", tuple(pad_value) or (0.0,))

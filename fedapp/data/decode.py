"""One image file decoded and resized to a square: :func:`decode_image_file` (torchvision, the data
path of :class:`fedapp.data.files.ImageFileDataset`) and :func:`load_image` (PIL, the same geometry).

Both raise :class:`MissingDataFileError` / :class:`CorruptDataFileError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file

from fedapp.data.file_errors import CorruptDataFileError, MissingDataFileError

Resize = Literal["squash", "center-crop"]


def _missing(path: Path) -> MissingDataFileError:
    return MissingDataFileError(f"missing image file {path} (it was listed when the dataset was built)")


def _undecodable(path: Path, err: Exception) -> CorruptDataFileError:
    return CorruptDataFileError(f"corrupt or unexpected data file {path}: cannot decode image ({err})")


def _decode_error(path: Path, err: Exception) -> Exception:
    return _missing(path) if not path.is_file() else _undecodable(path, err)


def check_resize(resize: str) -> None:
    """Raise unless ``resize`` is one of :data:`Resize`."""
    if resize not in ("squash", "center-crop"):
        raise ValueError(f"resize must be 'squash' or 'center-crop', got {resize!r}")


def _center_crop_box(width: int, height: int, image_size: int) -> tuple[int, int, int, int]:
    """``(new_w, new_h, left, top)``: the shorter side scaled to ``image_size`` (the longer one
    ``round``-ed), and the offsets of the central ``image_size`` square in that resized image."""
    scale = image_size / min(width, height)
    new_w, new_h = max(image_size, round(width * scale)), max(image_size, round(height * scale))
    return new_w, new_h, (new_w - image_size) // 2, (new_h - image_size) // 2


def load_image(path: Path, image_size: int, resize: Resize = "squash", grayscale: bool = False) -> Image.Image:
    """Decode ``path`` with PIL as RGB (gray replicated to 3 channels if ``grayscale``) and resize it.

    ``resize="squash"`` scales to ``image_size x image_size`` (aspect ratio not kept, nothing cut);
    ``"center-crop"`` scales the shorter side to ``image_size`` and cuts the central square.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("L").convert("RGB") if grayscale else opened.convert("RGB")
    except FileNotFoundError as err:
        raise _missing(path) from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise _undecodable(path, err) from err
    if resize == "squash":
        return image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    check_resize(resize)
    new_w, new_h, left, top = _center_crop_box(*image.size, image_size)
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return image.crop((left, top, left + image_size, top + image_size))


def decode_image_file(path: Path, image_size: int, resize: Resize = "squash", grayscale: bool = False) -> torch.Tensor:
    """uint8 ``(3, image_size, image_size)`` of ``path``: ``torchvision.io.decode_image`` + ``transforms.v2``.

    The same geometry as :func:`load_image` (bilinear with antialiasing, the same center-crop box);
    pixel values may differ from PIL's resize by one level. Gray files (or ``grayscale``) are
    replicated to 3 channels.
    """
    try:
        image = decode_image(read_file(str(path)), mode=ImageReadMode.GRAY if grayscale else ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as err:
        raise _decode_error(path, err) from err
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if resize == "squash":
        return TF.resize(image, [image_size, image_size], antialias=True).contiguous()
    check_resize(resize)
    height, width = image.shape[-2:]
    new_w, new_h, left, top = _center_crop_box(width, height, image_size)
    image = TF.resize(image, [new_h, new_w], antialias=True)
    return image[:, top:top + image_size, left:left + image_size].contiguous()

"""PASCAL VOC 2012 as a 20-class multi-label image dataset (voc2012).

Expected layout under ``data-root`` (the official VOC2012 trainval archive, extracted as it is)::

    <data-root>/
      VOCdevkit/
        VOC2012/
          Annotations/<id>.xml          one per image: <object><name>, <difficult>
          JPEGImages/<id>.jpg
          ImageSets/Main/train.txt      5,717 image ids, one per line  -> train split
          ImageSets/Main/val.txt        5,823 image ids, one per line  -> test split

The VOC2012 test-set annotations are not public (evaluation server only), so the official ``val``
list is the test split here, and ``train`` the training split (11,540 images in all, the paper's
"approximately 11,500").

Targets: float32 multi-hot over :data:`VOC_CLASSES` (the XML names, in the standard order), read from
every ``<object><name>`` of the image's annotation when the dataset is built.
Difficult objects (``<difficult>1</difficult>``): with ``use_difficult=False`` (the standard) a class
is positive if the image has at least one non-difficult object of it. An image whose objects are
*all* difficult keeps its difficult classes as positives (the objects are in the image; marking them
absent would give a false all-negative sample).
With ``use_difficult=True`` every object counts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from fedapp.data.base import DatasetBundle
from fedapp.data.files import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFileDataset,
    PathLike,
    corrupt,
    read_list_file,
    require_file,
    require_files,
)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOC_SOURCE = (
    "the official PASCAL VOC 2012 training/validation data, VOCtrainval_11-May-2012.tar (PASCAL VOC "
    "challenge site), extracted into data-root"
)
VOC_LAYOUT = """\
<data-root>/
  VOCdevkit/
    VOC2012/
      Annotations/<id>.xml
      JPEGImages/<id>.jpg
      ImageSets/Main/train.txt
      ImageSets/Main/val.txt"""
_CLASS_INDEX = {name: index for index, name in enumerate(VOC_CLASSES)}


def parse_voc_annotation(path: Path, use_difficult: bool = False) -> np.ndarray:
    """float32 multi-hot ``(20,)`` of one VOC annotation XML (difficult objects as in the module doc)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise corrupt(path, f"not a readable annotation XML ({err})", VOC_SOURCE) from err
    objects = root.findall("object")
    if not objects:
        raise corrupt(path, "no <object> element", VOC_SOURCE)
    easy = np.zeros(len(VOC_CLASSES), dtype=np.float32)
    every = np.zeros(len(VOC_CLASSES), dtype=np.float32)
    for obj in objects:
        name = (obj.findtext("name") or "").strip()
        if name not in _CLASS_INDEX:
            raise corrupt(path, f"object name {name!r} is not one of the 20 VOC classes", VOC_SOURCE)
        difficult_text = (obj.findtext("difficult") or "0").strip()
        if difficult_text not in ("0", "1"):
            raise corrupt(path, f"<difficult> must be 0 or 1, got {difficult_text!r}", VOC_SOURCE)
        every[_CLASS_INDEX[name]] = 1.0
        if difficult_text == "0":
            easy[_CLASS_INDEX[name]] = 1.0
    if use_difficult or not easy.any():
        return every
    return easy


def read_voc_split(
    data_root: PathLike, split: str, use_difficult: bool = False
) -> tuple[list[Path], np.ndarray]:
    """Image paths and float32 multi-hot labels ``(N, 20)`` of ``ImageSets/Main/<split>.txt``."""
    voc = Path(data_root) / "VOCdevkit" / "VOC2012"
    split_file = require_file(voc / "ImageSets" / "Main" / f"{split}.txt", f"VOC2012 {split} image list",
                              VOC_SOURCE, VOC_LAYOUT)
    ids = list(dict.fromkeys(line.split()[0] for line in read_list_file(split_file)))
    if not ids:
        raise corrupt(split_file, "lists no image id", VOC_SOURCE)
    xmls = [voc / "Annotations" / f"{image_id}.xml" for image_id in ids]
    images = [voc / "JPEGImages" / f"{image_id}.jpg" for image_id in ids]
    require_files(xmls, f"VOC2012 {split} annotations", VOC_SOURCE, VOC_LAYOUT)
    require_files(images, f"VOC2012 {split} images", VOC_SOURCE, VOC_LAYOUT)
    labels = np.stack([parse_voc_annotation(xml, use_difficult) for xml in xmls])
    return images, labels


def load_voc2012(data_root: PathLike, image_size: int = 224, use_difficult: bool = False) -> DatasetBundle:
    """voc2012: train = ``train.txt``, test = ``val.txt`` (test labels are not public), 20 classes.

    Items are decoded from JPEG per item, resized to ``image_size x image_size`` without cropping
    (aspect ratio not kept, so no object is cut off) and normalised with the ImageNet mean/std (the
    paper starts VOC models from ImageNet weights). Returns a multi-label :class:`DatasetBundle`
    (``input_shape`` ``(3, image_size, image_size)``) whose splits are :class:`ImageFileDataset`
    with ``labels`` computed from the XML annotations at construction.
    """
    train_paths, train_labels = read_voc_split(data_root, "train", use_difficult)
    test_paths, test_labels = read_voc_split(data_root, "val", use_difficult)
    return DatasetBundle(
        name="voc2012", task="multilabel", num_classes=len(VOC_CLASSES), class_names=VOC_CLASSES,
        input_shape=(3, image_size, image_size),
        train=ImageFileDataset(train_paths, train_labels, image_size, IMAGENET_MEAN, IMAGENET_STD, "squash"),
        test=ImageFileDataset(test_paths, test_labels, image_size, IMAGENET_MEAN, IMAGENET_STD, "squash"),
    )

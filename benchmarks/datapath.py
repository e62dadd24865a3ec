"""Images per second of the training data path alone, next to ResNet-18's training step, on this machine.

    python -m benchmarks.datapath [--cifar-per-batch 2000] [--folder-images 512] [--workers 0 1 2]
                                  [--train-steps 3] [--batch 32] [--out benchmarks/results/datapath.json]

Two fixtures, made by the benchmark in a temporary folder:

- ``cifar-32``: the CIFAR-10 python format (five pickled batches of ``--cifar-per-batch`` 32x32
  images), read by the app's loader (``load_cifar_lt`` at IF 1: uint8 in memory, normalised per batch);
- ``folder-224``: an image folder (one sub-folder per class) of ``--folder-images`` 500x375 JPEGs
  (VOC's typical size), read by :class:`fedapp.data.files.ImageFileDataset` at 224x224 ("squash":
  ``torchvision.io.decode_image`` + ``transforms.v2`` resize, normalised).

Data path rows: one shuffled epoch of :func:`fedapp.loops.make_loader` (batch ``--batch``) with 0,
1 and 2 worker processes, a fresh dataset per worker count, the batches only received (no model).
For ``folder-224``, ``first_epoch_images_per_second`` is the epoch that decodes every file and
``images_per_second`` the epoch after it (served from the per-process decode cache with 0 workers;
workers decode every epoch). Model rows: forward + backward + SGD step of the app's ResNet-18
(``resnet18-cifar`` at 32 px, ``resnet18`` at 224 px, 10 classes, fp32) on a batch of ``--batch``
images, ``--train-steps`` timed steps after one warm-up, with PyTorch's default thread count.

``bottleneck_at_default_workers`` per dataset: at the default ``num-workers`` (0), the data path
runs in the training process, so a step costs ``1/data + 1/model`` seconds per image;
``data_share_of_step`` is the data path's part of that time (``first_epoch_...``: in the epoch that
decodes the files). Wall-clock rates (``time.perf_counter``) and CPU milliseconds per image
(``getrusage``, this process and its workers): on a shared machine the CPU figures and their ratio
(``data_share_of_step_cpu``) are the steadier ones; the load average is reported with the figures. Prints one JSON object as its last line and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from benchmarks import load_average, machine_info, write_report
from benchmarks.fixtures import write_cifar10, write_image_folder
from fedapp.data.cifar import load_cifar_lt
from fedapp.data.files import ImageFileDataset
from fedapp.loops import make_loader
from fedapp.models.backbones import build_backbone
from fedapp.models.nets import PooledLinearNet

DEFAULT_WORKERS = 0  # RunConfig.num_workers's default


def epoch_rate(dataset: torch.utils.data.Dataset, batch: int, workers: int, seed: int) -> tuple[float, float, int]:
    """(images per wall-clock second, CPU ms per image, images) of one shuffled epoch of ``make_loader``.

    Wall clock includes starting the workers; CPU time is this process's and its finished children's
    (the workers exit at the end of the epoch), so it counts the work wherever it ran.
    """
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    seen = 0
    for images, _ in make_loader(dataset, batch, shuffle=True, seed=seed, num_workers=workers):
        seen += len(images)
    return seen / (time.perf_counter() - started), (_cpu_seconds() - cpu_started) * 1000 / seen, seen


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def data_rows(cifar_root: Path, folder_files: list[tuple[Path, int]], workers: Sequence[int], batch: int) -> list[dict]:
    rows = []
    for count in workers:
        cifar = load_cifar_lt(cifar_root, 10, imbalance_factor=1.0).train
        rate, cpu_ms, seen = epoch_rate(cifar, batch, count, seed=count)
        rows.append({"dataset": "cifar-32", "workers": count, "images_per_second": round(rate, 1),
                     "cpu_ms_per_image": round(cpu_ms, 3), "images": seen,
                     "reader": "UInt8ImageDataset (uint8 in memory)"})
        paths, labels = [p for p, _ in folder_files], np.array([c for _, c in folder_files])
        folder = ImageFileDataset(paths, labels, 224)
        first, first_cpu_ms, seen = epoch_rate(folder, batch, count, seed=count)
        later, later_cpu_ms, _ = epoch_rate(folder, batch, count, seed=count + 100)
        rows.append({"dataset": "folder-224", "workers": count, "images_per_second": round(later, 1),
                     "cpu_ms_per_image": round(later_cpu_ms, 3),
                     "first_epoch_images_per_second": round(first, 1),
                     "first_epoch_cpu_ms_per_image": round(first_cpu_ms, 3), "images": seen,
                     "reader": "ImageFileDataset (decode_image + v2 resize, 500x375 JPEG -> 224x224)",
                     "later_epochs": "decode cache" if count == 0 and folder.cached else "decoded again"})
        print(f"[datapath] workers={count}: cifar-32 {rows[-2]['images_per_second']} img/s, folder-224 "
              f"{first:.1f} img/s first epoch, {later:.1f} img/s later", file=sys.stderr, flush=True)
    return rows


def train_rate(backbone: str, size: int, batch: int, steps: int, seed: int) -> tuple[float, float]:
    """(images per wall-clock second, CPU ms per image) of ResNet-18 training steps (fp32, SGD) on
    random ``size x size`` images."""
    torch.manual_seed(seed)
    net = build_backbone(backbone, 3)
    model = PooledLinearNet(net, net.out_dim, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, targets = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()

    step()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started), (_cpu_seconds() - cpu_started) * 1000 / (batch * steps)


def verdicts(rows: list[dict], train: dict[str, float], train_cpu: dict[str, float], workers: int) -> dict[str, dict]:
    """At ``workers`` workers: which of data path and model limits a step, and the data path's share
    of a step's wall time (and of its CPU time, which a loaded machine disturbs less)."""
    out = {}
    for dataset, rate in train.items():
        row = next(r for r in rows if r["dataset"] == dataset and r["workers"] == workers)
        data = row["images_per_second"]
        share = (1 / data) / (1 / data + 1 / rate)
        cpu_share = row["cpu_ms_per_image"] / (row["cpu_ms_per_image"] + train_cpu[dataset])
        out[dataset] = {"workers": workers, "bottleneck": "data path" if data < rate else "model",
                        "data_over_train": round(data / rate, 1), "data_share_of_step": round(share, 4),
                        "data_share_of_step_cpu": round(cpu_share, 4)}
        if "first_epoch_images_per_second" in row:  # the epoch that decodes every file
            first = row["first_epoch_images_per_second"]
            out[dataset].update(first_epoch_bottleneck="data path" if first < rate else "model",
                                first_epoch_data_over_train=round(first / rate, 1),
                                first_epoch_data_share_of_step=round((1 / first) / (1 / first + 1 / rate), 4))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.datapath", description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-per-batch", type=int, default=2000, help="images per CIFAR batch file (x5 train)")
    parser.add_argument("--folder-images", type=int, default=512, help="JPEGs in the image-folder fixture")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=3, help="timed ResNet-18 steps per size (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="datapath-") as tmp:
        cifar_root = write_cifar10(Path(tmp) / "cifar", per_batch=args.cifar_per_batch, test_size=10, seed=args.seed)
        classes = 10
        files = write_image_folder(Path(tmp) / "folder", classes, max(1, args.folder_images // classes), seed=args.seed)
        rows = data_rows(cifar_root, files, args.workers, args.batch)
    train: dict[str, float] = {}
    train_cpu: dict[str, float] = {}
    if args.train_steps > 0:
        for dataset, backbone, size in (("cifar-32", "resnet18-cifar", 32), ("folder-224", "resnet18", 224)):
            rate, cpu_ms = train_rate(backbone, size, args.batch, args.train_steps, args.seed)
            train[dataset], train_cpu[dataset] = round(rate, 2), round(cpu_ms, 2)
        print(f"[datapath] ResNet-18 training: {train} img/s, {train_cpu} CPU ms/img", file=sys.stderr, flush=True)
    result = {
        "benchmark": "datapath",
        "machine": machine_info(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                                cuda=torch.cuda.is_available(), load_average_1m_at_end=round(load_average()[0], 2)),
        "config": {"batch": args.batch, "cifar_train_images": 5 * args.cifar_per_batch,
                   "folder_images": len(files), "folder_source_size": "500x375 JPEG q90", "train_steps": args.train_steps,
                   "train_backbones": {"cifar-32": "resnet18-cifar", "folder-224": "resnet18"}},
        "rows": rows,
        "train_images_per_second": train,
        "train_cpu_ms_per_image": train_cpu,
        "bottleneck_at_default_workers": (verdicts(rows, train, train_cpu, DEFAULT_WORKERS)
                                          if train and DEFAULT_WORKERS in args.workers else {}),
    }
    if args.out:
        write_report(result, args.out, indent=1)
    else:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

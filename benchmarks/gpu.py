"""ResNet-18 federated rounds on one CUDA GPU: round time, images/s and peak memory, per method, image
size, precision and memory layout; and how many simulated clients share the GPU.

    python -m benchmarks.gpu [--out-dir DIR] [--rounds 3] [--clients 10] [--scale 1.0] [--quick]
    python -m benchmarks.gpu --dry-run          # CPU smoke run with tiny fixtures (what the test runs)

Nothing is downloaded: the benchmark writes a CIFAR-10-format fixture (50,000 + 10,000 32x32 images
at ``--scale`` 1) and a VOC2012-format fixture (5,717 train + 5,823 val JPEGs of 500x375, VOC's
counts) under ``--out-dir``, and reads them with the app's own loaders.

Part 1, ``rows``: in-process federations (``fedapp.inprocess``, Flower's server loop, clients one
after another on the GPU) of ``--clients`` clients, full participation, 1 local epoch, batch 32,
``--rounds`` rounds, iid split, checkpoints off. Methods and datasets:

- 32 px: FedAvg and FedNCAlign-ML on ml-cifar10 (32x64 composites), FedAvg and FedLoGe on
  cifar10-lt (IF 100), backbone ``resnet18-cifar``;
- 224 px: FedAvg and FedNCAlign-ML on voc2012, backbone ``resnet18``. FedLoGe at 224 px has no
  dataset here: its SSE-C needs feature dim >= classes - 1, and the only single-label 224 px dataset
  (imagenet-lt, 1,000 classes) exceeds ResNet-18's 512; the row says so instead of a figure.

each with ``amp`` off / bf16 and ``channels-last`` off / on. A row reports the mean round, fit and
evaluation seconds over the rounds after the first (the first pays cuDNN autotuning and the
image decode cache), training ``images_per_second`` (images trained per round / fit seconds) and
``peak_gpu_memory_mb`` (``torch.cuda.max_memory_allocated``), and the images trained and evaluated
per round (what ``benchmarks.preset_time`` scales).

Part 2, ``simulation``: ``python -m fedapp.simulate`` (Flower on Ray) with ``--gpus-per-client``
0.25 / 0.5 / 1: Ray runs ``floor(1 / gpus-per-client)`` clients on the GPU at once (CPUs
permitting); the mean round time shows what sharing the GPU buys.

Prints one JSON object as its last line and writes ``<out-dir>/gpu.json``; ``python -m benchmarks.preset_time``
turns it into the wall time of each paper preset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks import machine_info
from benchmarks.fixtures import write_cifar10, write_voc2012
from fedapp.config import RunConfig
from fedapp.data import federate
from fedapp.results import PROJECT_ROOT
from fedapp.simulate import to_override_string

# (method, dataset, image size, backbone); None as dataset: not runnable (see the module doc).
METHODS: tuple[tuple[str, str | None, int, str], ...] = (
    ("fedavg", "ml-cifar10", 32, "resnet18-cifar"),
    ("fedncalign-ml", "ml-cifar10", 32, "resnet18-cifar"),
    ("fedavg", "cifar10-lt", 32, "resnet18-cifar"),
    ("fedloge", "cifar10-lt", 32, "resnet18-cifar"),
    ("fedavg", "voc2012", 224, "resnet18"),
    ("fedncalign-ml", "voc2012", 224, "resnet18"),
    ("fedloge", None, 224, "resnet18"),
)
FEDLOGE_224_REASON = ("no single-label 224 px dataset with <= 513 classes: FedLoGe's SSE-C needs feature dim >= "
                      "classes - 1, imagenet-lt has 1,000 classes and ResNet-18 512 features")
# --dry-run: ml-cifar10 always builds 22,500 composites (no run-config key shrinks them), too many
# for a CPU smoke run, so ml-digits (the same multi-label composite code path, 8x16) stands in; and
# the 32 px rows and the simulation use the small CNN (ResNet-18 is exercised by the 224 px rows).
DRY_RUN_DATASETS = {"ml-cifar10": "ml-digits"}
DRY_RUN_SMALL_BACKBONE = "cnn"
PRECISIONS = (("off", False), ("off", True), ("bf16", False), ("bf16", True))
GPUS_PER_CLIENT = (0.25, 0.5, 1.0)


def machine() -> dict[str, Any]:
    info = machine_info(torch=torch.__version__, cuda=torch.cuda.is_available())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1024**3, 1),
                    gpu_count=torch.cuda.device_count(), cuda_version=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def make_fixtures(root: Path, scale: float, dry_run: bool) -> dict[str, str]:
    """The data roots by dataset (CIFAR-10 format for ml-cifar10 / cifar10-lt, VOC2012 format)."""
    if dry_run:
        cifar = write_cifar10(root / "cifar", per_batch=40, test_size=40)
        voc = write_voc2012(root / "voc", train=16, val=8, width=96, height=72)
    else:
        cifar = write_cifar10(root / "cifar", per_batch=max(20, round(10_000 * scale)),
                              test_size=max(20, round(10_000 * scale)))
        voc = write_voc2012(root / "voc", train=max(20, round(5_717 * scale)), val=max(20, round(5_823 * scale)))
    return {"ml-cifar10": str(cifar), "cifar10-lt": str(cifar), "voc2012": str(voc), "ml-digits": ""}


def run_overrides(method: str, dataset: str, backbone: str, data_root: str, args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "algorithm": method, "dataset": dataset, "data-root": data_root, "backbone": backbone,
        "num-server-rounds": args.rounds, "local-epochs": 1, "batch-size": 32, "partition": "iid",
        "checkpoint-every": 0, "eval-batch-size": args.eval_batch, "device": args.device,
        "num-workers": args.num_workers,
    }
    if dataset == "cifar10-lt":  # the tiny dry-run fixture has too few images per class for IF 100
        overrides["imbalance-factor"] = 5.0 if args.dry_run else 100.0
    if args.dry_run:
        overrides["min-partition-size"] = 1
    return overrides


def workload(overrides: dict[str, Any], clients: int) -> tuple[int, int]:
    """(images the clients train on, images evaluated) in one round: every client trains ``local-epochs``;
    the server evaluates test + validation, and single-label clients their local test sets."""
    config = RunConfig.from_run_config({**RunConfig.default_values(), **overrides})
    split = federate(config, clients)
    train = int(sum(len(indices) for indices in split.client_train)) * config.local_epochs
    evaluated = len(split.bundle.test) + len(split.validation_indices)
    if split.client_test is not None:
        evaluated += int(sum(len(indices) for indices in split.client_test))
    return train, evaluated


def mean_after_first(rows: list[dict[str, Any]], key: str) -> float:
    """Mean of ``key`` over the rounds after the first (over the only round of a one-round run)."""
    values = [row[key] for row in rows[1:] if key in row] or [row[key] for row in rows if key in row]
    return sum(values) / len(values)


def precisions_for(size: int, args: argparse.Namespace) -> tuple[tuple[str, bool], ...]:
    """(amp, channels-last) pairs to run: all four; ``--quick``: fp32 and bf16 + channels-last.

    ``--dry-run``: bf16 is slow on CPUs without bf16 units (7x fp32 here), so the 32 px rows, whose
    stand-in data is the larger, check channels-last in fp32 and the tiny 224 px rows check bf16.
    """
    if args.dry_run and size == 32:
        return PRECISIONS[:2]
    if args.dry_run or args.quick:
        return PRECISIONS[:1] + PRECISIONS[-1:]
    return PRECISIONS


def round_rows(data_roots: dict[str, str], args: argparse.Namespace) -> list[dict[str, Any]]:
    from fedapp.inprocess import run_inprocess

    out = []
    for method, dataset, size, backbone in METHODS:
        for amp, channels_last in precisions_for(size, args):
            row: dict[str, Any] = {"method": method, "dataset": dataset, "image_size": size, "backbone": backbone,
                                   "amp": amp, "channels_last": channels_last, "clients": args.clients}
            if dataset is None:
                out.append({**row, "skipped": FEDLOGE_224_REASON})
                continue
            if args.dry_run and size == 32:
                dataset, backbone = DRY_RUN_DATASETS.get(dataset, dataset), DRY_RUN_SMALL_BACKBONE
                row.update(dataset=dataset, backbone=backbone)
            overrides = run_overrides(method, dataset, backbone, data_roots[dataset], args)
            overrides.update({"amp": amp, "channels-last": channels_last,
                              "output-dir": str(Path(args.out_dir) / "runs" / f"{method}-{dataset}-{amp}-cl{int(channels_last)}")})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            run_dir = run_inprocess(overrides, args.clients)
            wall = time.perf_counter() - started
            metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
            images, evaluated = workload(overrides, args.clients)
            fit = mean_after_first(metrics, "fit_seconds")
            round_seconds = mean_after_first(metrics, "round_seconds")
            row.update(
                rounds=len(metrics), train_images_per_round=images, eval_images_per_round=evaluated,
                round_seconds=round(round_seconds, 3),
                fit_seconds=round(fit, 3), evaluate_seconds=round(round_seconds - fit, 3),
                first_round_seconds=round(metrics[0]["round_seconds"], 3), wall_seconds=round(wall, 1),
                images_per_second=round(images / fit, 3),
                peak_gpu_memory_mb=round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
            )
            finite = [k for k, v in metrics[-1].items() if k.startswith("test_") and isinstance(v, float)]
            row["final_metrics_finite"] = all(math.isfinite(metrics[-1][k]) for k in finite)
            print(f"[gpu] {method} {dataset} amp={amp} channels-last={channels_last}: {row['round_seconds']} s/round, "
                  f"{row['images_per_second']} img/s, peak {row['peak_gpu_memory_mb']} MB", file=sys.stderr, flush=True)
            out.append(row)
    return out


def simulation_rows(data_roots: dict[str, str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """``fedapp.simulate`` (Ray) at each ``--gpus-per-client``: FedAvg on cifar10-lt, 32 px."""
    shares = (0.0,) if args.dry_run else GPUS_PER_CLIENT
    gpus = torch.cuda.device_count()
    cpus = os.cpu_count() or 1
    rows = []
    for share in shares:
        backbone = DRY_RUN_SMALL_BACKBONE if args.dry_run else "resnet18-cifar"
        overrides = run_overrides("fedavg", "cifar10-lt", backbone, data_roots["cifar10-lt"], args)
        overrides.update({"output-dir": str(Path(args.out_dir) / "sim" / f"gpus-{share}")})
        cpus_per_client = max(1, cpus // max(1, min(args.sim_clients, int(gpus / share)))) if share else 1
        command = [sys.executable, "-m", "fedapp.simulate", "--nodes", str(args.sim_clients),
                   "--cpus-per-client", str(cpus_per_client), "--gpus-per-client", str(share),
                   "--flwr-home", str(Path(args.out_dir) / "flwr"), "-c", to_override_string(overrides)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.sim_timeout, cwd=PROJECT_ROOT)
        wall = time.perf_counter() - started
        row: dict[str, Any] = {"gpus_per_client": share, "cpus_per_client": cpus_per_client, "nodes": args.sim_clients,
                               "returncode": done.returncode, "wall_seconds": round(wall, 1)}
        if share:
            row["clients_sharing_the_gpu"] = min(args.sim_clients, math.floor(gpus / share), cpus // cpus_per_client)
        summary_path = Path(overrides["output-dir"]) / "summary.json"
        if done.returncode == 0 and summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            row["mean_round_seconds"] = summary.get("mean_round_seconds")
        else:
            row["error_tail"] = (done.stdout + done.stderr)[-2000:]
        print(f"[gpu] simulation gpus-per-client={share}: {row.get('mean_round_seconds')} s/round "
              f"(exit {done.returncode})", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="gpu-benchmark", help="fixtures, runs and gpu.json go here")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per configuration (the first is not averaged)")
    parser.add_argument("--clients", type=int, default=10, help="in-process clients per federation")
    parser.add_argument("--scale", type=float, default=1.0, help="fixture size relative to CIFAR-10 / VOC2012")
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0, help="the run's num-workers")
    parser.add_argument("--sim-clients", type=int, default=8, help="SuperNodes of the Ray simulation")
    parser.add_argument("--sim-timeout", type=float, default=900)
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="fp32 and bf16+channels-last only (half the runs; for a short GPU lease)")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU smoke run: tiny fixtures (ml-digits for ml-cifar10, the small CNN at 32 px), 2 clients, 1 round, "
                             "fp32 + one of channels-last / bf16+channels-last (see precisions_for), one CPU-only "
                             "simulation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dry_run:
        args.device, args.rounds, args.clients, args.sim_clients = "cpu", 1, 2, 2
    elif not torch.cuda.is_available():
        print("error: no CUDA device is visible; run with --dry-run for the CPU smoke run", file=sys.stderr)
        return 2
    else:
        args.device = "cuda"
    out_dir = Path(args.out_dir).resolve()
    args.out_dir = str(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data_roots = make_fixtures(out_dir / "data", args.scale, args.dry_run)
    fixture_seconds = time.perf_counter() - started
    print(f"[gpu] fixtures written in {fixture_seconds:.0f} s", file=sys.stderr, flush=True)
    rows = round_rows(data_roots, args)
    simulation = [] if args.skip_simulation else simulation_rows(data_roots, args)
    result = {
        "benchmark": "gpu", "dry_run": args.dry_run, "machine": machine(),
        "config": {"quick": args.quick, "rounds": args.rounds, "clients": args.clients, "local_epochs": 1, "batch_size": 32,
                   "eval_batch_size": args.eval_batch, "num_workers": args.num_workers, "scale": args.scale,
                   "partition": "iid", "fixture_seconds": round(fixture_seconds, 1)},
        "rows": rows, "simulation": simulation,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "gpu.json").write_text(json.dumps(result, indent=1) + "\n")
    for scratch in ("runs", "data"):  # the fixtures are remade on every run; keep gpu.json and sim summaries
        shutil.rmtree(out_dir / scratch, ignore_errors=True)
    print(json.dumps(result))
    return 0 if all(r.get("final_metrics_finite", True) for r in rows) and all(
        s["returncode"] == 0 for s in simulation) else 1


if __name__ == "__main__":
    sys.exit(main())

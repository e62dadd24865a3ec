"""Wall time of each paper preset on one GPU, estimated from ``benchmarks.gpu``'s JSON.

    python -m benchmarks.preset_time benchmarks/results/gpu.json [--rounds 100] [--markdown out.md]

For each paper preset (``fedapp/presets/*.yaml`` without ``-tiny``) and each method that has a
benchmark row, one round is estimated as

    round_seconds = train_images / train_ips + eval_images / eval_ips

- ``train_images`` = training-set size x (1 - val-fraction) x fraction-fit x local-epochs (every
  sampled client trains its whole partition ``local-epochs`` times; the client count does not
  change the total, only how it is split);
- ``eval_images`` = test set + validation split (the server evaluates both every round) + for
  single-label data each evaluating client's local test set (``local-test-size`` x clients x
  fraction-evaluate);
- ``train_ips`` / ``eval_ips``: the benchmark row of the same method (FedAvg's row for every
  baseline) and image size, scaled by pixel count when the preset's images are not the row's
  (e.g. 28x56 DermaMNIST composites from the 32x64 ml-cifar10 row). No preset runs FedLoGe at
  224 px (imagenet-lt's 1,000 classes exceed ResNet-18's SSE-C; see benchmarks.gpu).

Clients run one after another on the GPU (the in-process engine, and Ray at gpus-per-client 1);
``--share`` divides by the speed-up the benchmark's simulation measured at a smaller
gpus-per-client. The estimate covers ``--rounds`` rounds (default 100) and the preset's own
``num-server-rounds``. Not included: process start, dataset loading and the first round's image
decoding and cuDNN autotuning (``first_round_seconds`` in the JSON shows their size).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from fedapp.config import PRESET_DIR, RunConfig, load_preset

# Dataset -> (training-set size, test-set size, (height, width)) at the app's default settings.
DATASET_SIZES: dict[str, tuple[int | None, int, tuple[int, int]]] = {
    "ml-cifar10": (47_500, 9_500, (32, 64)),     # 25,000 singles + 22,500 composites; test 5,000 + 4,500
    "cifar10-lt": (None, 10_000, (32, 32)),      # train from the imbalance factor (longtail_counts)
    "cifar100-lt": (None, 10_000, (32, 32)),
    "ml-dermamnist": (9_107, 2_614, (28, 56)),   # 7,007 singles + 2,100 composites; test 2,005 + 609
    "voc2012": (5_717, 5_823, (224, 224)),
    "chestx-ray14": (86_524, 25_596, (224, 224)),
    "imagenet-lt": (115_846, 50_000, (224, 224)),
}
BENCH_SOURCE = {  # dataset -> the benchmark dataset whose rows it is scaled from
    "ml-cifar10": "ml-cifar10", "ml-dermamnist": "ml-cifar10", "cifar10-lt": "cifar10-lt",
    "cifar100-lt": "cifar10-lt", "voc2012": "voc2012", "chestx-ray14": "voc2012", "imagenet-lt": "voc2012",
}
BENCH_PIXELS = {"ml-cifar10": 32 * 64, "cifar10-lt": 32 * 32, "voc2012": 224 * 224}
MULTILABEL = {"ml-cifar10", "ml-dermamnist", "voc2012", "chestx-ray14"}


def longtail_train_size(num_classes: int, per_class: int, imbalance_factor: float) -> int:
    """sum_c floor(n_max * IF^(-c/(C-1))): the CIFAR-LT training set size (Cao et al., 2019)."""
    return sum(math.floor(per_class * imbalance_factor ** (-c / (num_classes - 1))) for c in range(num_classes))


def preset_nodes(name: str) -> int:
    """The paper's client count: ``--nodes N`` in the preset's ``run:`` comment."""
    match = re.search(r"--nodes (\d+)", (PRESET_DIR / f"{name}.yaml").read_text())
    if not match:
        raise ValueError(f"preset {name!r} names no --nodes in its run: comment")
    return int(match.group(1))


def preset_methods(name: str) -> list[str]:
    """The methods a preset's comment lists (``algorithm='x'`` in its run line), FedAvg first."""
    text = (PRESET_DIR / f"{name}.yaml").read_text()
    named = re.findall(r"algorithm='([a-z0-9-]+)'", text)
    return list(dict.fromkeys(["fedavg", *named]))


def workload(config: RunConfig, nodes: int) -> tuple[float, float]:
    """(training images, evaluation images) of one round of ``config`` on ``nodes`` clients."""
    train, test, _ = DATASET_SIZES[config.dataset]
    if train is None:
        classes, per_class = (10, 5000) if config.dataset == "cifar10-lt" else (100, 500)
        train = longtail_train_size(classes, per_class, config.imbalance_factor)
    pool = train * (1 - config.val_fraction)
    train_images = pool * config.fraction_fit * config.local_epochs
    eval_images = test + train * config.val_fraction
    if config.dataset not in MULTILABEL:
        eval_images += config.local_test_size * nodes * config.fraction_evaluate
    return train_images, eval_images


def rates(rows: list[dict[str, Any]], method: str, dataset: str, amp: str, channels_last: bool) -> tuple[float, float, str] | None:
    """(train images/s, eval images/s, source) for ``method`` on ``dataset``'s benchmark row, scaled by pixels."""
    source = BENCH_SOURCE[dataset]
    _, _, (h, w) = DATASET_SIZES[dataset]
    scale = BENCH_PIXELS[source] / (h * w)

    def row_of(name: str, bench: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["method"] == name and r["dataset"] == bench and r["amp"] == amp
                     and r["channels_last"] == channels_last and "images_per_second" in r), None)

    def eval_rate(row: dict[str, Any]) -> float:
        return row["eval_images_per_round"] / max(row["evaluate_seconds"], 1e-9)

    bench_method = method if method in ("fedncalign-ml", "fedloge") else "fedavg"
    row = row_of(bench_method, source)
    if row is None:
        return None
    note = f"{bench_method}@{source}" + (f" x{scale:.2f} px" if scale != 1 else "")
    return row["images_per_second"] * scale, eval_rate(row) * scale, note


def estimate(bench: dict[str, Any], rounds: int, share: float) -> list[dict[str, Any]]:
    rows = bench["rows"]
    out = []
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if not p.stem.endswith("-tiny"))
    for name in presets:
        values = load_preset(name)
        if values.get("dataset") not in DATASET_SIZES:
            continue  # the digits presets: not a paper dataset
        nodes = preset_nodes(name)
        for method in preset_methods(name):
            config = RunConfig.from_run_config({**RunConfig.default_values(), **values, "algorithm": method,
                                                "preset": ""})
            train_images, eval_images = workload(config, nodes)
            entry: dict[str, Any] = {"preset": name, "method": method, "clients": nodes,
                                     "preset_rounds": config.num_server_rounds, "local_epochs": config.local_epochs,
                                     "train_images_per_round": round(train_images), "eval_images_per_round": round(eval_images)}
            for label, amp, channels_last in (("fp32", "off", False), ("bf16_channels_last", "bf16", True)):
                found = rates(rows, method, config.dataset, amp, channels_last)
                if found is None:
                    entry[label] = None
                    continue
                train_ips, eval_ips, source = found
                seconds = (train_images / train_ips + eval_images / eval_ips) / share
                entry[label] = {"round_seconds": round(seconds, 2), f"hours_{rounds}_rounds": round(seconds * rounds / 3600, 2),
                                "hours_preset_rounds": round(seconds * config.num_server_rounds / 3600, 2),
                                "from": source}
            out.append(entry)
    return out


def markdown(estimates: list[dict[str, Any]], rounds: int, bench: dict[str, Any]) -> str:
    gpu = bench.get("machine", {}).get("gpu", "no GPU (dry run)")
    lines = [f"Estimated on: {gpu}; clients one after another on one GPU.", "",
             f"| preset | method | clients | local epochs | train img/round | fp32 h/{rounds} rounds | "
             f"bf16+CL h/{rounds} rounds | preset rounds | bf16+CL h/preset | scaled from |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in estimates:
        fp32, best = e["fp32"], e["bf16_channels_last"]
        cell = lambda d, k: f"{d[k]:.2f}" if d else "n/a"  # noqa: E731
        lines.append(f"| {e['preset']} | {e['method']} | {e['clients']} | {e['local_epochs']} | "
                     f"{e['train_images_per_round']:,} | {cell(fp32, f'hours_{rounds}_rounds')} | "
                     f"{cell(best, f'hours_{rounds}_rounds')} | {e['preset_rounds']} | "
                     f"{cell(best, 'hours_preset_rounds')} | {(best or fp32 or {}).get('from', 'n/a')} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preset_time", description=__doc__.splitlines()[0])
    parser.add_argument("gpu_json", help="the JSON benchmarks.gpu wrote (gpu.json)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--share", type=float, default=1.0,
                        help="speed-up from clients sharing the GPU (simulation rows: round time at 1 / at 0.25)")
    parser.add_argument("--markdown", default="", help="also write the table here")
    args = parser.parse_args(argv)
    bench = json.loads(Path(args.gpu_json).read_text())
    estimates = estimate(bench, args.rounds, args.share)
    table = markdown(estimates, args.rounds, bench)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table, file=sys.stderr)
    print(json.dumps({"rounds": args.rounds, "share": args.share, "estimates": estimates}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

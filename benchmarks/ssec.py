"""SSE-C construction benchmark: fast construction vs the paper's plain 10,000-step loop.

    python -m benchmarks.ssec --classes 100 --dim 512 [--sparsity 0.6] [--seed 0]
                              [--naive auto|full|extrapolate|skip]
    python -m benchmarks.ssec --all        # C=10/d=64, C=100/d=512, C=1000/d=2048

``--naive full`` runs the paper's loop (FedLoGe Sec. 3.2/A.3: SGD, lr 1e-4, 10,000 steps, exact max,
masked gradient) to the end; ``extrapolate`` times ``--probe-steps`` of it and multiplies the
per-step time by 10,000 (its geometry is then not reported); ``auto`` (default) runs it in full
up to 100 classes and extrapolates above. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from typing import Any

import torch

from benchmarks import load_average, machine_info
from fedapp.models.sse_c import build_sse_c, naive_sse_c

PAPER_STEPS = 10_000
ALL_SHAPES = ((10, 64), (100, 512), (1000, 2048))
PAPER_REFERENCE = {
    "table6_beta0.6_gamma1.0": {
        "norm_mean": 1.00,
        "norm_var": 4.75e-11,
        "mean_angle_deg": 90.06,
        "angle_var_deg2": 0.66,
    },
    "table6_norm_var_range": [3.55e-12, 4.75e-11],
    "table6_mean_angle_range_deg": [90.04, 90.06],
    "construction_1000_classes": "11m52s (712 s), RTX 3090, lr 1e-4, 10,000 steps (Sec. A.3)",
}


def ssec_machine(threads: int) -> dict[str, Any]:
    # The benchmark machine may be shared: the load says how comparable the seconds are.
    return machine_info(processor=platform.processor() or platform.machine(), torch=torch.__version__,
                        torch_threads=threads, load_average_1m_at_start=round(load_average()[0], 2))


def run_one(
    num_classes: int,
    dim: int,
    sparsity: float,
    gamma: float,
    seed: int,
    mask: str,
    naive: str,
    probe_steps: int,
    threads: int,
) -> dict[str, Any]:
    config = {
        "classes": num_classes,
        "dim": dim,
        "sparsity": sparsity,
        "gamma": gamma,
        "seed": seed,
        "mask": mask,
        "etf_angle_deg": math.degrees(math.acos(-1.0 / (num_classes - 1))),
    }
    _, fast = build_sse_c(
        num_classes, dim, sparsity, gamma, seed, mask=mask, num_threads=threads
    )
    result: dict[str, Any] = {"config": config, "fast": fast.as_dict()}
    mode = naive
    if mode == "auto":
        mode = "full" if num_classes <= 100 else "extrapolate"
    if mode == "full":
        _, plain = naive_sse_c(
            num_classes, dim, sparsity, gamma, seed,
            mask=mask, steps=PAPER_STEPS, num_threads=threads,
        )
        result["naive"] = {"mode": "full", **plain.as_dict()}
    elif mode == "extrapolate":
        _, probe = naive_sse_c(
            num_classes, dim, sparsity, gamma, seed,
            mask=mask, steps=probe_steps, num_threads=threads,
        )
        per_step = probe.seconds / probe_steps
        cpu_per_step = probe.cpu_seconds / probe_steps
        result["naive"] = {
            "mode": "extrapolate",
            "probe_steps": probe_steps,
            "seconds_per_step": per_step,
            "cpu_seconds_per_step": cpu_per_step,
            "seconds": per_step * PAPER_STEPS,
            "cpu_seconds": cpu_per_step * PAPER_STEPS,
            "steps": PAPER_STEPS,
            "norm_mean": None,
            "norm_var": None,
            "mean_angle_deg": None,
            "min_angle_deg": None,
            "angle_var_deg2": None,
            "sparsity": probe.sparsity,
            "converged": False,
        }
    if "naive" in result:
        result["speedup_wall"] = result["naive"]["seconds"] / fast.seconds
        result["speedup_cpu"] = result["naive"]["cpu_seconds"] / fast.cpu_seconds
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ssec", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--sparsity", type=float, default=0.6)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask", choices=("per-class", "global"), default="per-class")
    parser.add_argument("--naive", choices=("auto", "full", "extrapolate", "skip"), default="auto")
    parser.add_argument("--probe-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--all", action="store_true", help="run C=10/d=64, 100/512, 1000/2048")
    args = parser.parse_args(argv)
    if args.probe_steps < 1:
        parser.error(f"--probe-steps must be >= 1, got {args.probe_steps}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")

    shapes = ALL_SHAPES if args.all else ((args.classes, args.dim),)
    output: dict[str, Any] = {"machine": ssec_machine(args.threads), "paper": PAPER_REFERENCE}
    runs = []
    for num_classes, dim in shapes:
        try:
            run = run_one(
                num_classes, dim, args.sparsity, args.gamma, args.seed, args.mask,
                args.naive, args.probe_steps, args.threads,
            )
        except ValueError as error:
            parser.error(str(error))
        print(json.dumps(run), file=sys.stderr, flush=True)  # progress for long --all runs
        runs.append(run)
    if args.all:
        output["runs"] = runs
    else:
        output.update(runs[0])
    print(json.dumps(output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

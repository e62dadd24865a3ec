"""Where FedNCAlign-ML's extra round time goes: one training step, FedAvg's model vs FedNCAlign-ML's.

    python -m benchmarks.fedncalign_step [--steps 300] [--batch 32] [--seed 0]

One thread, a batch of ml-digits-shaped composites (1 x 8 x 16, 10 labels, random), SmallCNN width 16
(d = 64), AdamW lr 3e-3 weight decay 0.01: forward + backward + optimizer step, timed with
``time.process_time`` over ``--steps`` steps after 20 warm-up steps, the rows interleaved twice (the
mean of both passes is reported). Rows: FedAvg (pooled feature, linear head, BCE), FedNCAlign-ML
(ETF + LADM + both losses), FedNCAlign-ML with BCE only (the losses' share), LADM alone (forward +
backward of the module on the backbone's 32 tokens). Prints one JSON object as its last line.
The losses are the ``mean-cosine`` formulation (weights 1, tau 0.5, T 0.2, ETF head without scale
or bias), the one ``benchmarks/results/fedncalign-step.json`` was measured with; the default
``authors`` formulation is not timed here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from benchmarks import load_average, machine_info
from benchmarks.steptime import time_rows
from fedapp.models.backbones import SmallCNN
from fedapp.models.ladm import LADM
from fedapp.models.multilabel import build_multilabel_net
from fedapp.models.multilabel_losses import mean_cosine_loss
from fedapp.models.nets import PooledLinearNet

NUM_CLASSES, WIDTH, DIM = 10, 16, 64


def make_steps(batch: int, seed: int) -> dict[str, Callable[[], None]]:
    """One closure per row; each runs one training step (or the LADM-only forward + backward)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, 8, 16, generator=generator)
    targets = (torch.rand(batch, NUM_CLASSES, generator=generator) < 0.2).float()

    def trainer(model: torch.nn.Module, loss_of: Callable[[torch.nn.Module], torch.Tensor]) -> Callable[[], None]:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.01)

        def step() -> None:
            optimizer.zero_grad()
            loss_of(model).backward()
            optimizer.step()
        return step

    def fedncalign(weight: float) -> Callable[[torch.nn.Module], torch.Tensor]:
        def loss(model: torch.nn.Module) -> torch.Tensor:
            logits, features = model.forward_with_features(images)
            return mean_cosine_loss(logits, features, targets, model.prototypes, weight, weight, 0.5, 0.2)[0]
        return loss

    torch.manual_seed(seed)
    fedavg = PooledLinearNet(SmallCNN(1, WIDTH, DIM), DIM, NUM_CLASSES)
    ladm = LADM(DIM, NUM_CLASSES, etf_seed=seed)
    tokens = torch.randn(batch, 32, DIM, generator=generator, requires_grad=True)
    return {
        "fedavg": trainer(fedavg, lambda m: F.binary_cross_entropy_with_logits(m(images), targets)),
        "fedncalign-ml": trainer(build_multilabel_net(SmallCNN(1, WIDTH, DIM), DIM, NUM_CLASSES), fedncalign(1.0)),
        "fedncalign-ml-bce-only": trainer(build_multilabel_net(SmallCNN(1, WIDTH, DIM), DIM, NUM_CLASSES),
                                          fedncalign(0.0)),
        "ladm-only": lambda: ladm(tokens).sum().backward(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fedncalign_step", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ms = time_rows(make_steps(args.batch, args.seed), args.steps)
    result = {
        "benchmark": "fedncalign_step",
        "machine": machine_info(torch=torch.__version__, threads=1, load_average_1m_at_end=round(load_average()[0], 2)),
        "config": {"steps": args.steps, "batch": args.batch, "seed": args.seed, "backbone": f"SmallCNN width {WIDTH}",
                   "dim": DIM, "classes": NUM_CLASSES, "optimizer": "AdamW lr 3e-3 wd 0.01"},
        "ms_per_step": ms,
        "ratio_to_fedavg": {name: value / ms["fedavg"] for name, value in ms.items()},
    }
    for name, value in ms.items():
        print(f"{name:24s} {value:7.2f} ms/step  ({value / ms['fedavg']:.2f}x fedavg)", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

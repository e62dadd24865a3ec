"""Where FedLoGe's extra round time goes: one training step and one client round, FedAvg vs FedLoGe.

    python -m benchmarks.fedloge_step [--steps 30] [--passes 60] [--rounds 20] [--seed 0]

One thread, CPU time (``time.process_time``), rows interleaved, median over ``--passes`` passes
(:func:`benchmarks.steptime.time_rows`). Rows:

- ``step``: forward + backward + optimizer step on one batch of 32 lt-digits-shaped images
  (1 x 8 x 8, 10 classes, random), SmallCNN width 16 (d = 64). FedAvg: pooled feature, linear
  head, CE, AdamW lr 3e-3 wd 0.01. FedLoGe: CE against the fixed SSE-C for theta (same AdamW) plus
  CE of psi and phi_k on the detached feature (SGD lr 0.03), :func:`fedapp.models.fedloge_net.fedloge_loss`.
- ``client-round``: what the 10 clients of a round do on lt-digits (IF 50, alpha 0.5, the project
  defaults): each client is built from its ``context.state`` as for a Flower message, runs ``fit``,
  is built again and runs ``evaluate`` (the app's own client classes; the server's aggregation and
  evaluation are not included).

Prints a table to stderr and one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from flwr.app import RecordDict

from benchmarks import load_average, machine_info
from benchmarks.steptime import time_rows
from clients.base import ClientSetup
from clients.fedloge import OptimizerChain
from fedapp.config import RunConfig
from fedapp.data import federate
from fedapp.loops import make_optimizer
from fedapp.models.backbones import SmallCNN
from fedapp.models.fedloge_net import FedLoGeNet, backbone_and_head_parameters, fedloge_loss, fixed_classifier
from fedapp.models.nets import PooledLinearNet
from fedapp.registry import get_algorithm

NUM_CLASSES, WIDTH, DIM, NODES = 10, 16, 64, 10


def make_steps(batch: int, seed: int) -> dict[str, Callable[[], None]]:
    """One training step of each method's model on the same batch."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, 8, 8, generator=generator)
    targets = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    torch.manual_seed(seed)
    fedavg = PooledLinearNet(SmallCNN(1, WIDTH, DIM), DIM, NUM_CLASSES)
    fedavg_optimizer = make_optimizer(list(fedavg.parameters()), "adamw", 3e-3, 0.01, 0.9)
    fedloge = FedLoGeNet(SmallCNN(1, WIDTH, DIM), DIM, fixed_classifier("sse-c", NUM_CLASSES, DIM, 0.6, 1.0, seed),
                         head_seed=seed + 1)
    theta, heads = backbone_and_head_parameters(fedloge)
    fedloge_optimizer = OptimizerChain([
        make_optimizer(theta, "adamw", 3e-3, 0.01, 0.9), make_optimizer(heads, "sgd", 0.03, 0.01, 0.9),
    ])

    def fedavg_step() -> None:
        fedavg_optimizer.zero_grad()
        F.cross_entropy(fedavg(images), targets).backward()
        fedavg_optimizer.step()

    def fedloge_step() -> None:
        fedloge_optimizer.zero_grad()
        fedloge_loss(fedloge, images, targets)[0].backward()
        fedloge_optimizer.step()

    return {"fedavg": fedavg_step, "fedloge": fedloge_step}


def make_client_rounds(seed: int) -> dict[str, Callable[[], None]]:
    """One round of the 10 clients' work (fit + evaluate) for each method, states kept across calls."""
    rounds = {}
    for algorithm in ("fedavg", "fedloge"):
        config = RunConfig.from_kebab({**RunConfig.default_values(), "algorithm": algorithm, "dataset": "lt-digits",
                                       "imbalance-factor": 50.0, "alpha": 0.5, "seed": seed})
        split = federate(config, NODES)
        states = [RecordDict() for _ in range(NODES)]
        declared = get_algorithm(algorithm)
        client_class = declared.client
        parameters = client_class(ClientSetup(config, 0, split, torch.device("cpu"), states[0], declared)).get_parameters({})

        def one_round(client_class=client_class, config=config, split=split, states=states,
                      parameters=parameters, declared=declared) -> None:
            for partition in range(NODES):
                setup = ClientSetup(config, partition, split, torch.device("cpu"), states[partition], declared)
                client_class(setup).fit(parameters, {"server-round": 1})
                setup = ClientSetup(config, partition, split, torch.device("cpu"), states[partition], declared)
                client_class(setup).evaluate(parameters, {"server-round": 1})
        rounds[algorithm] = one_round
    return rounds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fedloge_step", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per pass")
    parser.add_argument("--passes", type=int, default=60, help="interleaved passes (the median is reported)")
    parser.add_argument("--rounds", type=int, default=20, help="client-round passes (one round each)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = {
        "step": time_rows(make_steps(args.batch, args.seed), args.steps, args.passes, "median"),
        "client-round": time_rows(make_client_rounds(args.seed), 1, args.rounds, "median", warmup=1),
    }
    result = {
        "benchmark": "fedloge_step",
        "machine": machine_info(torch=torch.__version__, threads=1, load_average_1m_at_end=round(load_average()[0], 2)),
        "config": {"steps": args.steps, "passes": args.passes, "client_round_passes": args.rounds,
                   "batch": args.batch, "seed": args.seed, "backbone": f"SmallCNN width {WIDTH}", "dim": DIM,
                   "classes": NUM_CLASSES, "client_round": f"lt-digits IF 50 alpha 0.5, {NODES} clients, fit + evaluate",
                   "statistic": "median over interleaved passes"},
        "ms": rows,
        "ratio_to_fedavg": {row: values["fedloge"] / values["fedavg"] for row, values in rows.items()},
    }
    for row, values in rows.items():
        print(f"{row:13s} fedavg {values['fedavg']:8.2f} ms  fedloge {values['fedloge']:8.2f} ms  "
              f"({values['fedloge'] / values['fedavg']:.3f}x)", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

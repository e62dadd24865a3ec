"""Runs are reproducible whatever node ids Flower draws: clients are sampled and aggregated by partition id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedapp.checkpoint import load_checkpoint
from fedapp.inprocess import run_inprocess
from fedapp.simulate import main as simulate_main, to_override_string
from strategies.sampling import SeededClientManager

PARTIAL = {"algorithm": "fedavg", "dataset": "ml-digits", "alpha": 0.5, "class-presence-ratio": 0.5,
           "local-epochs": 1, "fraction-fit": 0.5}


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def learnt(rows: list[dict]) -> list[tuple]:
    """What must not depend on node ids: the sampled partitions and every metric of every round."""
    skip = {"round_seconds", "fit_seconds", "wall_seconds"}
    return [tuple(sorted((k, json.dumps(v)) for k, v in row.items() if k not in skip)) for row in rows]


class _Proxy:
    def __init__(self, cid: str) -> None:
        self.cid = cid


class _Manager:
    def __init__(self, cids: list[str]) -> None:
        self.clients = {cid: _Proxy(cid) for cid in cids}

    def wait_for(self, num_clients: int, timeout: int) -> bool:
        return True

    def num_available(self) -> int:
        return len(self.clients)

    def all(self) -> dict:
        return self.clients


def test_seeded_sample_follows_the_given_order_not_the_node_ids():
    """The same partitions are drawn when the node ids of the partitions change (as in every flwr run)."""
    def draw(partition_of_node: dict[str, int]) -> list[int]:
        sampler = SeededClientManager(_Manager(list(partition_of_node)), 7, 3, 0, 0,
                                      order=lambda clients: sorted(clients, key=partition_of_node.get))
        return sorted(partition_of_node[p.cid] for p in sampler.sample(4))

    first = draw({str(100 + k): k for k in range(10)})
    scrambled = {str(node): k for k, node in enumerate([9001, 17, 5, 123456, 42, 7, 8, 3141, 2, 66])}
    assert draw(scrambled) == first and len(first) == 4


def test_inprocess_results_do_not_depend_on_node_ids(tmp_path):
    """Partial participation (5 of 10): random node ids give the same sample and bit-identical metrics."""
    settings = {**PARTIAL, "num-server-rounds": 2, "seed": 5}
    plain = run_inprocess({**settings, "output-dir": str(tmp_path / "plain")}, 10)
    shuffled_ids = [int(i) for i in np.random.default_rng(1).choice(10**9, size=10, replace=False)]
    other = run_inprocess({**settings, "output-dir": str(tmp_path / "other")}, 10, node_ids=shuffled_ids)
    a, b = rows_of(plain), rows_of(other)
    assert [r["partitions_ok"] for r in a] == [r["partitions_ok"] for r in b]
    assert all(len(r["partitions_ok"]) == 5 for r in a)
    assert learnt(a) == learnt(b)


@pytest.mark.slow
def test_flower_runs_are_identical_and_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
    """Real ``flwr run`` (Ray), partial participation, where node ids are random every run.

    A: 4 rounds. B: the same config for 2 rounds (identical to A's first two rounds), then
    ``resume=B`` to 4 rounds: every metric of every round and the final parameters equal A's.
    """
    def simulate(run_dir: Path, home: str, **extra) -> None:
        values = {**PARTIAL, "seed": 5, "output-dir": str(run_dir), **extra}
        code = simulate_main(["--nodes", "6", "--flwr-home", str(tmp_path / home), "-c", to_override_string(values)])
        assert code == 0, f"simulate exited with {code}; see {run_dir / 'simulation.log'}"

    full, split = tmp_path / "full", tmp_path / "split"
    simulate(full, "home-a", **{"num-server-rounds": 4})
    simulate(split, "home-b", **{"num-server-rounds": 2})
    assert learnt(rows_of(split)) == learnt(rows_of(full))[:2]
    simulate(split, "home-c", **{"num-server-rounds": 4, "resume": str(split)})
    assert learnt(rows_of(split)) == learnt(rows_of(full))
    a, b = load_checkpoint(full), load_checkpoint(split)
    assert a.server_round == b.server_round == 4
    assert all(np.array_equal(x, y) for x, y in zip(a.parameters, b.parameters))

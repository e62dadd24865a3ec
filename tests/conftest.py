"""Shared fixtures: real Flower simulations and in-process runs, each checked like a user would."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fedapp.simulate import main as simulate_main, to_override_string


def read_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``metrics.jsonl`` rows and ``summary.json`` of a finished run."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows, json.loads((run_dir / "summary.json").read_text())


def assert_finished(run_dir: Path, rounds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The run wrote one line per round and finite final metrics."""
    rows, summary = read_run(run_dir)
    assert [r["round"] for r in rows] == list(range(1, rounds + 1))
    assert summary["rounds"] == rounds
    assert summary["final"], "summary.json has no final metrics"
    for name, value in summary["final"].items():
        assert value is None or math.isfinite(value), f"final {name} is {value}"
    assert math.isfinite(summary["final"][summary["main_metric"]])
    return rows, summary


@pytest.fixture
def flower_run(tmp_path: Path):
    """Run ``python -m fedapp.simulate`` (real ``flwr run`` on Ray); returns the checked run dir.

    ``simulate`` itself fails unless ``flwr ls`` reports ``finished:completed`` and the results
    file has every round with finite metrics.
    """

    def run(overrides: dict[str, Any], nodes: int = 10, rounds: int = 2) -> tuple[Path, list, dict]:
        run_dir = tmp_path / "run"
        values = {"num-server-rounds": rounds, "output-dir": str(run_dir), **overrides}
        code = simulate_main(["--nodes", str(nodes), "--flwr-home", str(tmp_path / "flwr"),
                              "-c", to_override_string(values)])
        assert code == 0, f"simulate exited with {code}; see {run_dir / 'simulation.log'}"
        return (run_dir, *assert_finished(run_dir, rounds))

    return run


@pytest.fixture
def inprocess_run(tmp_path: Path):
    """Run the app in-process (Flower's Server loop, same strategy and clients); returns the run dir."""
    from fedapp.inprocess import run_inprocess

    def run(overrides: dict[str, Any], nodes: int = 10, rounds: int = 2) -> tuple[Path, list, dict]:
        run_dir = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        run_inprocess({"num-server-rounds": rounds, "output-dir": str(run_dir), **overrides}, nodes)
        return (run_dir, *assert_finished(run_dir, rounds))

    return run

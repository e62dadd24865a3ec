"""Tests that fail when a method stops learning: short in-process runs with thresholds that a
working run clears by a wide margin and a broken one (zeroed learning rate, detached loss) cannot.

Each method's block is self-contained (its own constants and test), so blocks for other methods can
be added beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# ------------------------------------------------------------------------------------- FedLoGe

# lt-digits IF 10, seed 0, 4 clients, 4 rounds of 3 local epochs, no augmentation (it slows the
# first rounds, and the threshold should not move with the augmentation default); every other key
# at its default. Measured (CPU): GM .640 / PM .833 after round 4.
FEDLOGE_RUN = {"algorithm": "fedloge", "dataset": "lt-digits", "imbalance-factor": 10.0, "seed": 0,
               "local-epochs": 3, "augment": "none", "checkpoint-every": 0}
FEDLOGE_ROUNDS, FEDLOGE_NODES = 4, 4
FEDLOGE_MIN_GM, FEDLOGE_MIN_PM = 0.40, 0.60  # chance GM is 0.10


def _fedloge_last_round(tmp_path: Path, name: str, **changes: Any) -> dict[str, float]:
    """The last round's metrics of the short FedLoGe run with ``changes``."""
    from fedapp.inprocess import run_inprocess

    run_dir = tmp_path / name
    run_inprocess({**FEDLOGE_RUN, "num-server-rounds": FEDLOGE_ROUNDS, "output-dir": str(run_dir), **changes},
                  FEDLOGE_NODES)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == list(range(1, FEDLOGE_ROUNDS + 1))
    return rows[-1]


@pytest.mark.slow
def test_fedloge_learns_and_a_broken_fedloge_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GM (global model, balanced test set) and PM (personal heads, local test sets) clear their
    thresholds in a working run; with the learning rates zeroed, or with the loss detached from the
    graph (so no parameter gets a gradient), neither does."""
    import clients.fedloge as fedloge_client

    working = _fedloge_last_round(tmp_path, "working")
    assert working["test_accuracy"] >= FEDLOGE_MIN_GM, working
    assert working["test_pm"] >= FEDLOGE_MIN_PM, working

    # lr must be > 0 (config validation): 1e-12 for the backbone's AdamW and the heads' SGD.
    zeroed = _fedloge_last_round(tmp_path, "zero-lr", **{"lr": 1e-12, "fedloge-head-lr": 1e-12})
    assert zeroed["test_accuracy"] < FEDLOGE_MIN_GM and zeroed["test_pm"] < FEDLOGE_MIN_PM, zeroed

    real_loss = fedloge_client.fedloge_loss

    def detached_loss(model, images, targets):
        loss, terms = real_loss(model, images, targets)
        return loss.detach().requires_grad_(), terms  # backward runs, no parameter gets a gradient

    monkeypatch.setattr(fedloge_client, "fedloge_loss", detached_loss)
    detached = _fedloge_last_round(tmp_path, "detached")
    assert detached["test_accuracy"] < FEDLOGE_MIN_GM and detached["test_pm"] < FEDLOGE_MIN_PM, detached

"""FedAvg end to end: update validation, the in-process engine and a real Flower simulation."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.bookkeeping import weighted_means
from strategies.screening import check_update


def test_check_update_accepts_matching_finite_arrays():
    reference = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]
    assert check_update([np.ones((2, 3), np.float32), np.ones(4, np.float32)], reference) is None


@pytest.mark.parametrize(
    "arrays, reason",
    [
        ([np.zeros((2, 3), np.float32)], "expected 2 arrays"),
        ([np.zeros((3, 2), np.float32), np.zeros(4, np.float32)], "shape"),
        ([np.zeros((2, 3), np.float64), np.zeros(4, np.float32)], "dtype"),
        ([np.full((2, 3), np.nan, np.float32), np.zeros(4, np.float32)], "non-finite"),
        ([np.zeros((2, 3), np.float32), np.array([0, 0, np.inf, 0], np.float32)], "non-finite"),
    ],
)
def test_check_update_rejects_with_reason(arrays, reason):
    reference = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]
    assert reason in check_update(arrays, reference)


def test_check_update_norm_bound():
    reference = [np.zeros(4, np.float32)]
    assert check_update([np.full(4, 1.0, np.float32)], reference, max_norm=2.0) is None  # norm 2
    assert "exceeds" in check_update([np.full(4, 1.5, np.float32)], reference, max_norm=2.0)


def test_weighted_means_by_examples():
    means = weighted_means([(1, {"train_loss": 1.0}), (3, {"train_loss": 3.0})])
    assert means == {"train_loss": pytest.approx(2.5)}


def test_fedavg_inprocess_aggregates_and_records(inprocess_run):
    run_dir, rows, summary = inprocess_run({"partition": "iid", "local-epochs": 1}, nodes=3, rounds=2)
    assert rows[0]["clients_ok"] == 3 and rows[0]["clients_rejected"] == 0
    # Each client receives the full model and sends it back: bytes sent == bytes received.
    assert rows[0]["bytes_sent"] == rows[0]["bytes_received"] > 0
    assert summary["bytes_per_round"] == pytest.approx(2 * rows[0]["bytes_sent"])
    assert set(summary["final"]) == {"macro_auc", "micro_auc", "macro_f1", "micro_f1"}
    assert (run_dir / "plots" / "macro_auc.png").stat().st_size > 1000
    assert (run_dir / "config.yaml").is_file()


def test_fedavg_lt_digits_reports_gm_pm_and_shots(inprocess_run):
    _, rows, summary = inprocess_run({"dataset": "lt-digits", "local-epochs": 1}, nodes=4, rounds=2)
    assert {"gm", "pm", "many", "medium", "few", "accuracy"} <= set(summary["final"])
    assert summary["final"]["gm"] == summary["final"]["accuracy"]
    assert rows[-1]["eval_clients"] == 4
    assert 0.0 <= summary["final"]["pm"] <= 1.0


@pytest.mark.slow
def test_fedavg_flower_simulation_10_nodes(flower_run):
    """A real ``flwr run`` on Ray with 10 SuperNodes: finished:completed and a complete results file."""
    run_dir, rows, summary = flower_run({"local-epochs": 1}, nodes=10, rounds=2)
    assert all(r["clients_ok"] == 10 for r in rows)
    assert summary["final"]["macro_auc"] > 0.5  # better than chance after two rounds

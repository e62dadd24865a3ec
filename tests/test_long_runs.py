"""Long runs that survive (issue 10): checkpoint/resume, node state on disk, partial participation,
failing and poisoned clients, the min-fit-clients rule, update validation in every strategy.

Fast tests use the pure functions and the in-process engine (Flower's server loop, same strategy
and clients); the real Flower simulation with a failing SuperNode is marked slow.
"""

from __future__ import annotations

import dataclasses

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common import parameters_to_ndarrays

import fedapp.registry as registry
from clients.base import BaseClient
from fedapp.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointError,
    Generation,
    check_resumable,
    config_differences,
    decode_generations,
    encode_generations,
    load_checkpoint,
    save_checkpoint,
)
from fedapp.config import ConfigError, RunConfig
from fedapp.faults import faults_from_environment, parse_faults
from fedapp.inprocess import run_inprocess
from fedapp.node_state import NodeStateStore, read_record_dict, record_dict_bytes
from fedapp.params import shared_keys
from fedapp.results import RunFailedError, RunRecorder
from strategies.base import FederatedStrategy, InsufficientClientsError
from strategies.sampling import sample_indices
from strategies.screening import check_update, update_norm
from strategies.fedavg import FedAvgStrategy

BASE = {"dataset": "lt-digits", "partition": "iid", "local-epochs": 1, "min-partition-size": 5}


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """PNG plots cost ~15 s of matplotlib per run on this machine and are not what these tests check."""
    monkeypatch.setattr("fedapp.plots.plot_run", lambda rows, out_dir, task: [])


def rows_of(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------- pure functions
def test_update_norm_bound_applies_to_the_delta_from_the_global_model():
    origin = [np.full(4, 10.0, np.float32)]
    update = [np.full(4, 10.5, np.float32)]  # ||w_k - w|| = sqrt(4 * 0.25) = 1, ||w_k|| = 21
    assert update_norm(update, origin) == pytest.approx(1.0)
    assert check_update(update, origin, max_norm=1.0, origin=origin) is None
    reason = check_update(update, origin, max_norm=0.99, origin=origin)
    assert "exceeds max-update-norm" in reason and "= 1" in reason


def test_norm_bound_covers_the_model_arrays_only():
    # A strategy whose clients append extra arrays (a control-variate delta) bounds the model part.
    origin = [np.zeros(2, np.float32)]
    reference = origin + [np.zeros(3, np.float32)]
    update = [np.array([0.6, 0.8], np.float32), np.full(3, 100.0, np.float32)]  # model delta norm 1
    assert check_update(update, reference, max_norm=1.001, origin=origin) is None
    assert "exceeds" in check_update(update, reference, max_norm=0.5, origin=origin)


def test_seeded_sampling_is_a_function_of_seed_round_and_attempt():
    first = sample_indices(1000, 100, seed=0, server_round=3, attempt=0, purpose=0)
    assert first == sample_indices(1000, 100, 0, 3, 0, 0)
    assert len(set(first)) == 100 and first == sorted(first) and max(first) < 1000
    assert first != sample_indices(1000, 100, 0, 4, 0, 0)
    assert first != sample_indices(1000, 100, 0, 3, 1, 0)
    assert sample_indices(5, 7, 0, 1, 0, 0) == [0, 1, 2, 3, 4]


def test_fault_injection_syntax(monkeypatch):
    faults = parse_faults("raise:3:2, nan:5:*")
    assert [(f.kind, f.partition_id, f.server_round) for f in faults] == [("raise", 3, 2), ("nan", 5, None)]
    monkeypatch.setenv("FEDAPP_FAULT_INJECTION", "explode:1:1")
    with pytest.raises(ValueError, match="FEDAPP_FAULT_INJECTION='explode:1:1' is not allowed"):
        faults_from_environment()
    monkeypatch.delenv("FEDAPP_FAULT_INJECTION")
    assert faults_from_environment() == ()
    assert "fault-injection" not in RunConfig.default_values()  # a testing aid, not a run-config key


@pytest.mark.parametrize("key, value", [
    ("checkpoint-every", -1), ("min-fit-clients", 0), ("min-available-clients", 0),
    ("on-insufficient-clients", "ignore"), ("round-retries", -1), ("max-update-norm", -0.5),
    ("fraction-evaluate", 1.5),
])
def test_long_run_keys_are_validated(key, value):
    with pytest.raises(ConfigError, match=f"{key}="):
        RunConfig.from_run_config({**RunConfig.default_values(), key: value})


def make_checkpoint(config: dict[str, Any], server_round: int = 2) -> Checkpoint:
    return Checkpoint(
        server_round=server_round, parameters=[np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.int64)],
        strategy_state={"variate": np.full(3, 0.5, np.float32)}, config=config,
        rows=[{"round": 1, "test_accuracy": 0.5}, {"round": 2, "test_accuracy": float("nan")}],
        generations=[Generation("abc", 0)],
    )


def test_checkpoint_roundtrip_is_exact_and_atomic(tmp_path):
    config = RunConfig().to_kebab()
    save_checkpoint(tmp_path, make_checkpoint(config))
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]  # no temporary file left
    loaded = load_checkpoint(tmp_path)
    assert loaded.server_round == 2 and loaded.config == config
    assert loaded.parameters[0].dtype == np.float32 and loaded.parameters[1].dtype == np.int64
    np.testing.assert_array_equal(loaded.parameters[0], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(loaded.strategy_state["variate"], np.full(3, 0.5, np.float32))
    assert loaded.rows[1]["test_accuracy"] is None  # NaN is stored as JSON null
    assert loaded.generations == [Generation("abc", 0)]
    assert {"python", "numpy_keys", "torch"} <= set(loaded.rng)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip-a-byte"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    save_checkpoint(tmp_path, make_checkpoint(RunConfig().to_kebab()))
    path = tmp_path / CHECKPOINT_FILE
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a zip file at all")
    else:
        with zipfile.ZipFile(path) as archive:  # a byte inside the first parameter's stored data
            info = archive.getinfo("param_0000.npy")
        data[info.header_offset + 30 + len(info.filename) + info.compress_size - 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint.npz"):
        load_checkpoint(tmp_path)


def test_mismatched_config_names_the_differing_keys():
    saved = RunConfig().to_kebab()
    now = dict(saved, algorithm="fedprox", seed=3, **{"num-server-rounds": 40, "output-dir": "/elsewhere"})
    assert config_differences(saved, now) == ["algorithm", "seed"]  # rounds and output-dir may change
    with pytest.raises(CheckpointError) as error:
        check_resumable(make_checkpoint(saved), now)
    message = str(error.value)
    assert "algorithm" in message and "seed" in message and "'fedavg' in the checkpoint" in message
    assert "'fedprox' now" in message


def test_resume_needs_rounds_left():
    saved = RunConfig().to_kebab()
    with pytest.raises(CheckpointError, match="num-server-rounds=2 is not allowed with resume"):
        check_resumable(make_checkpoint(saved, server_round=2), dict(saved, **{"num-server-rounds": 2}))


def test_generation_chain_roundtrip():
    chain = [Generation("aa", 0), Generation("bb", 4)]
    assert decode_generations(encode_generations(chain)) == chain
    assert decode_generations("") == []


def test_record_dict_roundtrip_keeps_every_record_type(tmp_path):
    state = RecordDict()
    state["head"] = ArrayRecord({"w": torch.randn(3, 2), "n": torch.tensor(7, dtype=torch.int64)})
    state["metrics"] = MetricRecord({"loss": 0.25, "seen": [1, 2]})
    state["config"] = ConfigRecord({"name": "x", "blob": b"\x00\x01"})
    path = tmp_path / "s.npz"
    path.write_bytes(record_dict_bytes(state))
    back = read_record_dict(path)
    original = state["head"].to_torch_state_dict()
    restored = back["head"].to_torch_state_dict()
    assert torch.equal(original["w"], restored["w"]) and restored["n"].dtype == torch.int64
    assert dict(back["metrics"]) == {"loss": 0.25, "seen": [1, 2]}
    assert dict(back["config"]) == {"name": "x", "blob": b"\x00\x01"}


def one_array_state(value: float) -> RecordDict:
    state = RecordDict()
    state["head"] = ArrayRecord({"w": torch.full((2,), value)})
    return state


def test_node_state_restores_exactly_the_checkpointed_state_after_a_resume(tmp_path):
    store = NodeStateStore(tmp_path, partition_id=7)
    g0 = Generation("g0", 0)
    for server_round in (1, 2, 3, 5):  # the node trained in these rounds of generation g0
        store.save(one_array_state(server_round), server_round, [g0], checkpoint_every=2)
    # Pruning: checkpoints every 2 rounds, last save in round 5 -> K = 4: keep r5 and the newest <= 4 (r3).
    assert sorted(f.server_round for f in store.files()) == [3, 5]
    # The server crashed after round 5 and resumed from its round-4 checkpoint: r5 must not be used.
    g1 = Generation("g1", 4)
    state, saved_round = store.restore([g0, g1])
    assert saved_round == 3 and state["head"].to_torch_state_dict()["w"][0] == 3
    # Generation g1 trains the node in round 6: from now on its state is the newest.
    store.save(one_array_state(6), 6, [g0, g1], checkpoint_every=2)
    state, saved_round = store.restore([g0, g1])
    assert saved_round == 6
    # The stale r5 of g0 is deleted by the prune; files of other runs are never touched.
    assert sorted(f.server_round for f in store.files()) == [3, 6]
    NodeStateStore(tmp_path, 7).save(one_array_state(9), 9, [Generation("other", 0)], checkpoint_every=2)
    assert store.restore([g0, g1])[1] == 6


def test_recorder_resume_rewrites_metrics_with_the_checkpoint_rows(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2}\n{"round": 3}\n')
    (tmp_path / "summary.json").write_text("{}")
    rows = [{"round": 1, "wall_seconds": 3.0}, {"round": 2, "wall_seconds": 6.0}]
    recorder = RunRecorder(tmp_path, {"seed": 0}, "singlelabel", 4, resume_rows=rows)
    assert [r["round"] for r in rows_of(tmp_path)] == [1, 2]  # round 3 ran after the checkpoint: dropped
    assert not (tmp_path / "summary.json").exists()
    recorder.start_round(3)
    recorder.end_round(3)
    assert [r["round"] for r in rows_of(tmp_path)] == [1, 2, 3]
    assert rows_of(tmp_path)[-1]["wall_seconds"] >= 6.0


# --------------------------------------------------------------- test-only algorithm variants
def all_but_classifier(model: torch.nn.Module) -> list[str]:
    """FedPer-like: the classifier never travels, so it lives in context.state (and state-dir)."""
    return shared_keys(model, exclude_prefixes=["classifier"])


class CountingStrategy(FedAvgStrategy):
    """FedAvg plus server-only state (examples seen so far), checkpointed through the hooks."""

    def __init__(self, setup) -> None:
        super().__init__(setup)
        self.examples_seen = np.zeros(1, np.int64)

    def aggregate_updates(self, server_round, results):
        self.examples_seen += sum(res.num_examples for _, res in results)
        return super().aggregate_updates(server_round, results)

    def strategy_state(self) -> dict[str, np.ndarray]:
        return {"examples_seen": self.examples_seen.copy()}

    def load_strategy_state(self, state: dict[str, np.ndarray]) -> None:
        self.examples_seen = state["examples_seen"].copy()


class CustomAggregateStrategy(FedAvgStrategy):
    """Its own aggregation rule must only ever see validated results."""

    seen: list[int] = []

    def aggregate_updates(self, server_round, results):
        for _, res in results:
            assert all(np.all(np.isfinite(a)) for a in parameters_to_ndarrays(res.parameters))
        CustomAggregateStrategy.seen.append(len(results))
        return super().aggregate_updates(server_round, results)


@pytest.fixture
def register(monkeypatch):
    def use(strategy: type, **changes) -> None:
        fedavg = registry.get_algorithm("fedavg")
        monkeypatch.setitem(registry.algorithms(), "fedavg", dataclasses.replace(fedavg, strategy=strategy, **changes))

    return use


# --------------------------------------------------------------------------- kill and resume
def final_state(run_dir: Path, state_dir: Path) -> tuple[list[np.ndarray], dict[str, np.ndarray], dict]:
    checkpoint = load_checkpoint(run_dir)
    heads = {}
    for node in sorted(state_dir.iterdir()):
        newest = max(node.iterdir(), key=lambda p: p.name)
        heads[node.name] = read_record_dict(newest)["private-model"].to_torch_state_dict()["classifier.weight"].numpy()
    return checkpoint.parameters, heads, checkpoint.strategy_state


def test_killed_run_resumes_to_the_same_final_parameters_bit_exact(tmp_path, register, monkeypatch):
    """Uninterrupted 4 rounds == 2 rounds, a crash in round 3, then resume=<run dir> to round 4.

    With private heads on disk (state-dir), partial participation (fraction-fit 0.67, seeded per
    round) and strategy-only state (CountingStrategy), everything is bit-identical.
    """
    register(CountingStrategy, travelling_keys=all_but_classifier)
    settings = {**BASE, "num-server-rounds": 4, "checkpoint-every": 1, "fraction-fit": 0.67}
    whole = run_inprocess({**settings, "output-dir": str(tmp_path / "whole")}, 3,
                          node_config={"state-dir": str(tmp_path / "whole-state")})

    crash_dir, crash_state = tmp_path / "crash", tmp_path / "crash-state"
    original = FederatedStrategy.configure_fit

    def crash_in_round_3(self, server_round, parameters, client_manager):
        if server_round == 3:
            raise KeyboardInterrupt("machine lost")
        return original(self, server_round, parameters, client_manager)

    with monkeypatch.context() as patch:
        patch.setattr(FederatedStrategy, "configure_fit", crash_in_round_3)
        with pytest.raises(KeyboardInterrupt):
            run_inprocess({**settings, "output-dir": str(crash_dir)}, 3, node_config={"state-dir": str(crash_state)})
    assert load_checkpoint(crash_dir).server_round == 2
    assert [r["round"] for r in rows_of(crash_dir)] == [1, 2]

    resumed = run_inprocess({**settings, "resume": str(crash_dir)}, 3, node_config={"state-dir": str(crash_state)})
    assert resumed == crash_dir
    params_a, heads_a, state_a = final_state(whole, tmp_path / "whole-state")
    params_b, heads_b, state_b = final_state(crash_dir, crash_state)
    assert load_checkpoint(crash_dir).server_round == 4
    for a, b in zip(params_a, params_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert heads_a.keys() == heads_b.keys() and len(heads_a) == 3
    for name in heads_a:
        np.testing.assert_array_equal(heads_a[name], heads_b[name])
    np.testing.assert_array_equal(state_a["examples_seen"], state_b["examples_seen"])
    rows_a, rows_b = rows_of(whole), rows_of(crash_dir)
    assert [r["round"] for r in rows_b] == [1, 2, 3, 4]  # each round once
    for a, b in zip(rows_a, rows_b):
        assert a["partitions_ok"] == b["partitions_ok"]
        assert {k: v for k, v in a.items() if k.startswith("test_")} == {
            k: v for k, v in b.items() if k.startswith("test_")}
    summary = json.loads((crash_dir / "summary.json").read_text())
    assert summary["rounds"] == 4


def test_resume_refuses_another_config_before_touching_the_run(tmp_path):
    run_dir = run_inprocess({**BASE, "num-server-rounds": 1, "output-dir": str(tmp_path / "run")}, 2)
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=r"differs from the checkpoint's in lr, seed"):
        run_inprocess({**BASE, "num-server-rounds": 3, "resume": str(run_dir), "lr": 0.1, "seed": 5}, 2)
    assert (run_dir / "metrics.jsonl").read_text() == before and (run_dir / "summary.json").is_file()


# ------------------------------------------------------------- failing and poisoned clients
def test_raising_and_nan_clients_are_excluded_and_the_run_finishes(tmp_path, register, monkeypatch):
    register(CustomAggregateStrategy)
    CustomAggregateStrategy.seen = []
    original = BaseClient.local_train

    def flaky(self, config):
        if self.partition_id == 1 and int(config["server-round"]) == 1:
            raise RuntimeError("disk full")
        return original(self, config)

    monkeypatch.setattr(BaseClient, "local_train", flaky)
    monkeypatch.setenv("FEDAPP_FAULT_INJECTION", "nan:2:2")
    run_dir = run_inprocess({**BASE, "num-server-rounds": 2, "output-dir": str(tmp_path / "run")}, 4)
    rows = rows_of(run_dir)
    assert (rows[0]["clients_failed"], rows[0]["clients_rejected"], rows[0]["clients_ok"]) == (1, 0, 3)
    assert (rows[1]["clients_failed"], rows[1]["clients_rejected"], rows[1]["clients_ok"]) == (0, 1, 3)
    assert rows[0]["partitions_ok"] == [0, 2, 3] and rows[1]["partitions_ok"] == [0, 1, 3]
    assert not any(r["round_skipped"] for r in rows)
    assert CustomAggregateStrategy.seen == [3, 3]  # the override only ever saw the valid updates
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["clients_failed_total"] == 1 and summary["clients_rejected_total"] == 1
    assert np.isfinite(summary["final"]["accuracy"])


def test_failures_and_rejections_are_logged_with_the_client(tmp_path, caplog, monkeypatch):
    import logging

    flwr_logger = logging.getLogger("flwr")
    propagate = flwr_logger.propagate
    flwr_logger.propagate = True  # Flower's logger does not propagate to caplog's root handler
    try:
        # Both clients of the last round fail or are rejected: the run is marked failed and raises.
        monkeypatch.setenv("FEDAPP_FAULT_INJECTION", "raise:0:2,nan:1:2")
        with caplog.at_level(logging.WARNING, logger="flwr"), pytest.raises(RunFailedError, match="last round"):
            run_inprocess({**BASE, "num-server-rounds": 2, "output-dir": str(tmp_path / "run"),
                           "max-update-norm": 1e6}, 2)
    finally:
        flwr_logger.propagate = propagate
    text = caplog.text
    assert "round 2: a client failed: node 1 (partition 0)" in text and "fault-injection" in text
    assert "round 2: rejected the update of node 2 (partition 1): array 0 has non-finite values" in text


def test_update_norm_bound_rejects_large_updates(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RunFailedError, match="no round aggregated any update"):
        run_inprocess({**BASE, "num-server-rounds": 1, "output-dir": str(run_dir), "max-update-norm": 1e-6}, 2)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    row = rows_of(run_dir)[0]
    assert row["clients_rejected"] == 2 and row["clients_ok"] == 0 and row["round_skipped"]


# ---------------------------------------------------------------------- min-fit-clients rule
def test_round_below_min_fit_clients_is_skipped_not_aggregated(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDAPP_FAULT_INJECTION", "raise:1:2")
    run_dir = run_inprocess({**BASE, "num-server-rounds": 3, "output-dir": str(tmp_path / "run"),
                             "min-fit-clients": 3}, 3)
    rows = rows_of(run_dir)
    assert [r["round_skipped"] for r in rows] == [False, True, False]
    assert rows[1]["clients_ok"] == 2 and rows[1]["clients_failed"] == 1
    assert "min-fit-clients=3" in rows[1]["skip_reason"]
    # Nothing was aggregated in round 2: the global model, hence every metric, is round 1's.
    for key in (k for k in rows[0] if k.startswith(("test_", "val_")) and k != "test_pm"):
        assert rows[1][key] == rows[0][key], key
    assert json.loads((run_dir / "summary.json").read_text())["rounds_skipped"] == 1


def test_on_insufficient_fail_stops_with_a_checkpoint_to_resume_from(tmp_path, monkeypatch):
    settings = {**BASE, "num-server-rounds": 3, "checkpoint-every": 5, "min-fit-clients": 2,
                "on-insufficient-clients": "fail"}
    run_dir = tmp_path / "run"
    with pytest.raises(InsufficientClientsError, match="round 2: 1 valid updates .* min-fit-clients=2"):
        monkeypatch.setenv("FEDAPP_FAULT_INJECTION", "raise:0:2")
        run_inprocess({**settings, "output-dir": str(run_dir)}, 2)
    monkeypatch.delenv("FEDAPP_FAULT_INJECTION")
    rows = rows_of(run_dir)
    assert [r["round"] for r in rows] == [1, 2] and rows[1]["round_skipped"]
    assert load_checkpoint(run_dir).server_round == 1  # written at the failure, not only every 5 rounds
    run_inprocess({**settings, "resume": str(run_dir)}, 2)  # the client is healthy again
    rows = rows_of(run_dir)
    assert [r["round"] for r in rows] == [1, 2, 3] and not any(r["round_skipped"] for r in rows)


def test_on_insufficient_retry_resamples_the_round(tmp_path, monkeypatch):
    # One client per round; round 1's first sample is partition p, which raises: the retry draws again.
    first = sample_indices(3, 1, 0, 1, 0, 0)[0]
    retry = sample_indices(3, 1, 0, 1, 1, 0)[0]
    assert first != retry, "pick a scenario where the retry samples another client"
    monkeypatch.setenv("FEDAPP_FAULT_INJECTION", f"raise:{first}:1")
    run_dir = run_inprocess({**BASE, "num-server-rounds": 1, "output-dir": str(tmp_path / "run"),
                             "fraction-fit": 0.34, "on-insufficient-clients": "retry"}, 3)
    row = rows_of(run_dir)[0]
    assert row["round_attempts"] == 2 and not row["round_skipped"]
    assert row["clients_failed"] == 1 and row["clients_ok"] == 1 and row["partitions_ok"] == [retry]


def test_min_available_clients_beyond_the_federation_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="min-available-clients=5 is not allowed with 2 nodes"):
        run_inprocess({**BASE, "output-dir": str(tmp_path / "run"), "min-available-clients": 5}, 2)


# ------------------------------------------------------------------------- real Flower (slow)
@pytest.mark.slow
def test_flower_simulation_with_a_failing_supernode_finishes_and_resumes(flower_run, tmp_path, monkeypatch):
    """Real ``flwr run`` on Ray, 10 SuperNodes: node 3 raises in round 1, node 5 sends NaN in round 2;
    then ``resume=<run dir>`` continues the finished 2-round run to round 3 through ``flwr run`` too."""
    from fedapp.simulate import main as simulate_main, to_override_string

    # The SuperLink started by fedapp.simulate passes its environment down to the Ray workers.
    monkeypatch.setenv("FEDAPP_FAULT_INJECTION", "raise:3:1,nan:5:2")
    run_dir, rows, summary = flower_run({"local-epochs": 1, "checkpoint-every": 1}, nodes=10, rounds=2)
    assert (rows[0]["clients_failed"], rows[0]["clients_ok"]) == (1, 9)
    assert 3 not in rows[0]["partitions_ok"]
    assert (rows[1]["clients_rejected"], rows[1]["clients_ok"]) == (1, 9)
    assert 5 not in rows[1]["partitions_ok"]
    assert summary["clients_failed_total"] == 1 and summary["clients_rejected_total"] == 1
    assert load_checkpoint(run_dir).server_round == 2
    log = (run_dir / "simulation.log").read_text()
    assert "ClientApp raised: fault-injection: partition 3 raises in round 1" in log
    assert "rejected the update of node" in log and "(partition 5): array 0 has non-finite values" in log

    monkeypatch.delenv("FEDAPP_FAULT_INJECTION")
    code = simulate_main(["--nodes", "10", "--flwr-home", str(tmp_path / "flwr"), "-c", to_override_string(
        {"resume": str(run_dir), "num-server-rounds": 3, "local-epochs": 1})])
    assert code == 0, f"resume failed; see {run_dir / 'simulation.log'}"
    resumed = rows_of(run_dir)
    assert [r["round"] for r in resumed] == [1, 2, 3]
    assert resumed[:2] == rows  # the checkpoint's rows, unchanged
    assert resumed[2]["clients_ok"] == 10 and load_checkpoint(run_dir).server_round == 3
    assert len(load_checkpoint(run_dir).generations) == 2
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 3

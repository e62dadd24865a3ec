"""FedLoGe (issue 5): the model, the client (Algorithm 1, LA-FR), the strategy (class-wise psi,
GA-FR, SSE-C checksum), what travels, private state across rounds, bytes, and real Flower runs.

The math itself (SSE-C, GA-FR, LA-FR, class-wise weights) is tested in ``test_sse_c.py`` and
``test_feature_realignment.py``; here it is checked in the places the algorithm applies it.
"""

from __future__ import annotations

import copy
import json
import math
from logging import WARNING
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy
from torch import nn

from clients.base import ClientSetup
from clients.fedloge import FedLoGeClient, head_accuracy
from fedapp.checkpoint import CheckpointError
from fedapp.config import ConfigError, RunConfig
from fedapp.data import federate, hold_out
from fedapp.models.etf import simplex_etf
from fedapp.models.feature_realignment import ga_fr, la_fr
from fedapp.models.fedloge_net import (
    CHECKSUM_METRIC,
    CLASS_COUNTS_METRIC,
    FedLoGeNet,
    LinearHead,
    decode_counts,
    encode_counts,
    fedloge_loss,
    fixed_classifier,
    global_classifier,
    personal_classifier,
)
from fedapp.models.sse_c import sse_c_checksum
from fedapp.params import payload_bytes
from fedapp.pfl import pooled_features
from fedapp.registry import get_algorithm
from fedapp.server_app import build_server_setup
from strategies.fedloge import FedLoGeStrategy

PSI_KEY, PHI_KEY = "global_head.weight", "local_head.weight"
# Hand vectors (2 classes, 2-D features; rows = classes): psi has norms 5 and 2, phi norms 1 and 5.
PSI = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
PHI = torch.tensor([[1.0, 0.0], [0.0, -5.0]])


def make_config(**changes) -> RunConfig:
    values = {"algorithm": "fedloge", "dataset": "lt-digits", "local-epochs": 1, **changes}
    return RunConfig.from_kebab({**RunConfig.default_values(), **values})


def make_client(state: RecordDict | None = None, partition_id: int = 0, **changes) -> FedLoGeClient:
    config = make_config(**changes)
    setup = ClientSetup(config, partition_id, federate(config, 3), torch.device("cpu"),
                        RecordDict() if state is None else state, get_algorithm(config.algorithm))
    return FedLoGeClient(setup)


def make_strategy(tmp_path, **changes) -> FedLoGeStrategy:
    config = make_config(**{"output-dir": str(tmp_path / "run"), **changes})
    return FedLoGeStrategy(build_server_setup(config))


def hand_net() -> FedLoGeNet:
    """A FedLoGeNet whose features are its input (B, 2, 1, 1) -> (B, 2), with psi and phi set by hand."""
    net = FedLoGeNet(nn.Identity(), 2, fixed_classifier("etf", 2, 2, 0.0, 1.0, 0), head_seed=0)
    with torch.no_grad():
        net.global_head.weight.copy_(PSI)
        net.local_head.weight.copy_(PHI)
    return net


class Proxy(ClientProxy):
    """Just an id: the strategy only reads ``cid`` from a proxy when aggregating."""

    def get_properties(self, *args, **kwargs):
        raise NotImplementedError

    def get_parameters(self, *args, **kwargs):
        raise NotImplementedError

    def fit(self, *args, **kwargs):
        raise NotImplementedError

    def evaluate(self, *args, **kwargs):
        raise NotImplementedError

    def reconnect(self, *args, **kwargs):
        raise NotImplementedError


def fit_res(arrays: list[np.ndarray], num_examples: int, metrics: dict) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), num_examples, metrics)


# ----------------------------------------------------------------------------- fixed classifier
def test_fixed_classifier_is_cached_copied_and_checksummed():
    first = fixed_classifier("sse-c", 10, 64, 0.6, 1.0, 0)
    first.matrix.zero_()  # a caller's copy: must not reach the cache
    second = fixed_classifier("sse-c", 10, 64, 0.6, 1.0, 0)
    assert second.checksum == sse_c_checksum(second.matrix) == first.checksum
    assert (second.matrix == 0).double().mean().item() == pytest.approx(round(0.6 * 64) / 64)
    torch.testing.assert_close(torch.linalg.vector_norm(second.matrix, dim=0), torch.ones(10))
    assert second.report["steps"] > 0 and second.report["min_angle_deg"] > 96.0  # ETF angle 96.38 deg
    assert fixed_classifier("sse-c", 10, 64, 0.6, 1.0, 1).checksum != second.checksum  # another seed


def test_dense_etf_ablation_is_the_simplex_etf_scaled_by_gamma():
    fixed = fixed_classifier("etf", 10, 64, 0.6, 2.0, 3)
    torch.testing.assert_close(fixed.matrix, 2.0 * simplex_etf(10, 64, 3))
    gram = fixed.matrix.T @ fixed.matrix  # closed form: gamma^2 (C/(C-1)) (I - 11^T/C)
    torch.testing.assert_close(gram, 4.0 * (10 / 9) * (torch.eye(10) - 1 / 10), atol=1e-5, rtol=0)
    assert fixed.report["sparsity"] == 0.0


def test_unbuildable_sse_c_names_the_key():
    with pytest.raises(ValueError, match="sparsity=0.9"):
        fixed_classifier("sse-c", 3, 4, 0.9, 1.0, 0)  # round(0.9 * 4) = 4 zeros of 4 entries


@pytest.mark.parametrize("key, value, allowed", [
    ("fedloge-classifier", "dense", "sse-c"), ("sparsity", 1.0, r"\[0, 1\)"), ("sse-c-norm", 0.0, "> 0"),
    ("head-aggregation", "mean", "classwise or fedavg"), ("global-head", "phi", "psi or sse-c"),
    ("la-fr-finetune-epochs", -1, ">= 0"),
])
def test_fedloge_keys_are_validated(key, value, allowed):
    with pytest.raises(ConfigError, match=rf"{key}=.*{allowed}"):
        make_config(**{key: value})


def test_multilabel_data_is_refused_with_the_alternatives():
    config = make_config(dataset="ml-digits")
    with pytest.raises(ValueError, match="single-label data.*lt-digits"):
        get_algorithm("fedloge").build_model(config, hold_out(config).bundle)


# ------------------------------------------------------------------------- model and loss
def test_fixed_classifier_never_travels_and_phi_is_private():
    config = make_config()
    model = get_algorithm("fedloge").build_model(config, hold_out(config).bundle)
    keys = get_algorithm("fedloge").shared_keys(model)
    assert "fixed_classifier" not in model.state_dict()  # non-persistent buffer
    assert PSI_KEY in keys and PHI_KEY not in keys
    assert all(not k.startswith("local_head.") for k in keys)
    assert model.fixed_checksum == fixed_classifier("sse-c", 10, 64, 0.6, 1.0, config.seed).checksum


def test_one_step_on_the_summed_loss_equals_algorithm_1s_three_updates():
    """Line 4 (theta against fixed W) then line 5 (psi, phi on the same features): same parameters."""
    torch.manual_seed(0)
    config = make_config()
    net = get_algorithm("fedloge").build_model(config, hold_out(config).bundle)
    images, targets = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    ours, reference = copy.deepcopy(net), copy.deepcopy(net)

    optimizer = torch.optim.AdamW(ours.parameters(), lr=0.01, weight_decay=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        fedloge_loss(ours, images, targets)[0].backward()
        optimizer.step()

    theta = [p for n, p in reference.named_parameters() if n.startswith("backbone.")]
    opt_theta = torch.optim.AdamW(theta, lr=0.01, weight_decay=0.01)
    opt_psi = torch.optim.AdamW(reference.global_head.parameters(), lr=0.01, weight_decay=0.01)
    opt_phi = torch.optim.AdamW(reference.local_head.parameters(), lr=0.01, weight_decay=0.01)
    ce = nn.functional.cross_entropy
    for _ in range(3):
        for opt in (opt_theta, opt_psi, opt_phi):
            opt.zero_grad()
        h = reference.features(images)
        ce(h @ reference.fixed_classifier, targets).backward()
        opt_theta.step()
        ce(reference.global_head(h.detach()), targets).backward()
        opt_psi.step()
        ce(reference.local_head(h.detach()), targets).backward()
        opt_phi.step()
    for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs")


@pytest.mark.parametrize(
    ("changes", "head_momentum", "head_decay"),
    [
        ({}, 0.5, 0.0),  # defaults: the authors' heads (SGD lr 0.03, momentum 0.5, no weight decay)
        ({"fedloge-head-momentum": 0.9, "fedloge-head-weight-decay": 0.01}, 0.9, 0.01),  # the old heads
    ],
)
def test_local_train_steps_theta_with_the_run_optimizer_and_the_heads_with_sgd(changes, head_momentum, head_decay):
    """theta: AdamW (lr 3e-3, the run's); psi and phi_k: SGD (fedloge-head-lr/-momentum/-weight-decay),
    whatever the run's momentum (0.8 here) says."""
    client = make_client(**{"fedloge-head-lr": 0.05, "momentum": 0.8, "augment": "none", **changes})
    reference = copy.deepcopy(client.model)
    client.local_train({"server-round": 1})

    theta = [p for n, p in reference.named_parameters() if n.startswith("backbone.")]
    heads = list(reference.global_head.parameters()) + list(reference.local_head.parameters())
    opt_theta = torch.optim.AdamW(theta, lr=3e-3, weight_decay=0.01)
    opt_heads = torch.optim.SGD(heads, lr=0.05, momentum=head_momentum, weight_decay=head_decay)
    reference.train()
    for images, targets in client.train_loader({"server-round": 1}):
        opt_theta.zero_grad()
        opt_heads.zero_grad()
        fedloge_loss(reference, images, targets)[0].backward()
        opt_theta.step()
        opt_heads.step()
    for (name, a), b in zip(client.model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs")


# ------------------------------------------------------------- GA-FR / LA-FR in the model
def test_ga_fr_global_model_on_hand_vectors():
    net, h = hand_net(), torch.tensor([[0.0, 1.0], [1.0, 0.2]]).view(2, 2, 1, 1)
    # Raw psi: logits (4, 2) and (3.8, 0.4): class 0 twice. GA-FR psi' = ((.6,.8),(0,1)):
    # logits (.8, 1) -> class 1 and (.76, .2) -> class 0.
    raw = LinearHead(net, global_classifier(net, "psi", realign=False))
    realigned = LinearHead(net, global_classifier(net, "psi", realign=True))
    torch.testing.assert_close(raw(h), torch.tensor([[4.0, 2.0], [3.8, 0.4]]))
    torch.testing.assert_close(realigned(h), torch.tensor([[0.8, 1.0], [0.76, 0.2]]))
    # global-head=sse-c: the fixed W^T, GA-FR not applied (equal norms already).
    torch.testing.assert_close(global_classifier(net, "sse-c", realign=True), net.fixed_classifier.T)


def test_la_fr_personal_model_on_hand_vectors():
    net, h = hand_net(), torch.tensor([[0.0, 1.0]]).view(1, 2, 1, 1)
    # phi' = psi_c/||psi_c|| * ||phi_c|| = ((.6,.8),(0,5)): logits (.8, 5) -> class 1; raw phi: (0, -5) -> 0.
    personal = LinearHead(net, personal_classifier(net, realign=True))
    torch.testing.assert_close(personal(h), torch.tensor([[0.8, 5.0]]))
    torch.testing.assert_close(LinearHead(net, personal_classifier(net, realign=False))(h), torch.tensor([[0.0, -5.0]]))
    assert torch.equal(net.local_head.weight.detach(), PHI), "LA-FR must not modify the stored phi_k"


def test_client_personal_model_is_la_fr_of_received_psi_and_its_own_phi():
    client = make_client()
    psi, phi = torch.randn(10, 64), torch.randn(10, 64)
    with torch.no_grad():
        client.model.local_head.weight.copy_(phi)
    arrays = client.get_parameters({})
    arrays[client.keys.index(PSI_KEY)] = psi.numpy()
    client.receive(arrays, {})
    torch.testing.assert_close(client.personalized_model().weight, la_fr(psi, phi))
    raw = make_client(**{"la-fr": False})
    torch.testing.assert_close(raw.personal_head(), raw.model.local_head.weight.detach())

    loss, count, metrics = client.evaluate(arrays, {})
    assert count == len(client.local_test_set) and loss == pytest.approx(1 - metrics["accuracy"])
    assert metrics["accuracy"] == metrics["accuracy_la_fr"]  # no fine-tuning by default
    assert set(metrics) == {"accuracy", "accuracy_la_fr", "accuracy_local_head", "accuracy_global"}


def test_la_fr_finetune_runs_in_the_last_round_evaluation_only():
    """Algorithm 1 fine-tunes once, after round T: earlier rounds report LA-FR without it."""
    client = make_client(**{"la-fr-finetune-epochs": 2, "num-server-rounds": 3})
    arrays = client.get_parameters({})
    _, _, early = client.evaluate(arrays, {"server-round": 2})
    assert early["accuracy"] == early["accuracy_la_fr"]
    tuned = client.personal_head()
    _, _, last = client.evaluate(arrays, {"server-round": 3})
    features, labels = pooled_features(client.model, client.local_test_set, client.device, 512)
    assert last["accuracy"] == pytest.approx(head_accuracy(features, labels, tuned))


def test_la_fr_finetune_trains_a_copy_of_the_personal_head():
    client = make_client(**{"la-fr-finetune-epochs": 2})
    phi = client.model.local_head.weight.detach().clone()
    tuned = client.personal_head()
    assert not torch.allclose(tuned, personal_classifier(client.model, realign=True))
    assert torch.equal(client.model.local_head.weight.detach(), phi)


# --------------------------------------------------------------- what travels, what stays
def test_fit_returns_theta_and_psi_never_phi_and_reports_checksum_only():
    client = make_client()
    start = client.get_parameters({})
    arrays, num_examples, metrics = client.fit(start, {"server-round": 1})
    phi = client.model.local_head.weight.detach().numpy()
    assert len(arrays) == len(client.keys) == len(start)
    assert np.array_equal(arrays[client.keys.index(PSI_KEY)], client.model.global_head.weight.detach().numpy())
    assert not any(a.shape == phi.shape and np.array_equal(a, phi) for a in arrays), "phi_k was sent"
    assert metrics[CHECKSUM_METRIC] == client.model.fixed_checksum
    # head-aggregation=fedavg (default): the class counts never leave the client.
    assert CLASS_COUNTS_METRIC not in metrics
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["train_local_head_loss"])


def test_fit_reports_class_counts_only_for_classwise_aggregation():
    client = make_client(**{"head-aggregation": "classwise"})
    _, num_examples, metrics = client.fit(client.get_parameters({}), {"server-round": 1})
    counts = decode_counts(metrics[CLASS_COUNTS_METRIC], 10)
    assert counts.sum() == num_examples == len(client.train_set)
    np.testing.assert_array_equal(counts, np.bincount(client.train_set.labels, minlength=10))


def test_phi_persists_across_two_rounds_through_the_same_context_state():
    state = RecordDict()
    first = make_client(state)
    initial = first.model.local_head.weight.detach().clone()
    arrays, _, _ = first.fit(first.get_parameters({}), {"server-round": 1})
    phi_1 = first.model.local_head.weight.detach().clone()
    assert not torch.equal(phi_1, initial)

    second = make_client(state)  # a new message: the client is rebuilt from context.state
    torch.testing.assert_close(second.model.local_head.weight.detach(), phi_1, rtol=0, atol=0)
    second.fit(arrays, {"server-round": 2})
    phi_2 = second.model.local_head.weight.detach().clone()
    assert not torch.equal(phi_2, phi_1)
    torch.testing.assert_close(make_client(state).model.local_head.weight.detach(), phi_2, rtol=0, atol=0)
    # Another node (fresh state) starts from the seeded init, not from this client's head.
    torch.testing.assert_close(make_client().model.local_head.weight.detach(), initial, rtol=0, atol=0)


# ------------------------------------------------------------------------------- strategy
def test_strategy_builds_the_sse_c_and_writes_its_report(tmp_path):
    strategy = make_strategy(tmp_path)
    report = (tmp_path / "run" / "fixed_classifier.json").read_text()
    assert strategy.fixed.checksum in report and '"min_angle_deg"' in report
    torch.testing.assert_close(strategy.setup.model.fixed_classifier, strategy.fixed.matrix, rtol=0, atol=0)


def test_global_model_applies_ga_fr_to_the_aggregated_psi(tmp_path):
    psi = torch.randn(10, 64) * torch.arange(1, 11).view(10, 1)  # long-tailed norms
    for changes, expected in (({}, ga_fr(psi)), ({"ga-fr": False}, psi), ({"global-head": "sse-c"}, None)):
        strategy = make_strategy(tmp_path, **changes)
        arrays = list(strategy.current)
        arrays[strategy.psi_index] = psi.numpy()
        model = strategy.global_model(arrays)
        expected = strategy.fixed.matrix.T if expected is None else expected
        torch.testing.assert_close(model.weight, expected)


def test_server_metrics_report_gm_shots_and_every_head_variant(tmp_path):
    strategy = make_strategy(tmp_path)
    metrics = strategy.server_metrics(strategy.global_model(strategy.current))
    for prefix in ("test", "val"):
        for name in ("accuracy", "many", "medium", "few", "gm_psi_ga_fr", "gm_psi", "gm_fixed"):
            assert 0.0 <= metrics[f"{prefix}_{name}"] <= 1.0
        assert metrics[f"{prefix}_accuracy"] == metrics[f"{prefix}_gm_psi_ga_fr"]  # the default global model


def _updates(strategy: FedLoGeStrategy, psis: list[np.ndarray], counts: list[list[int]], checksums: list[str]):
    results = []
    for cid, (psi, count, checksum) in enumerate(zip(psis, counts, checksums)):
        arrays = [np.full_like(a, float(cid + 1)) for a in strategy.current]
        arrays[strategy.psi_index] = psi
        metrics = {CHECKSUM_METRIC: checksum, CLASS_COUNTS_METRIC: encode_counts(np.array(count))}
        results.append((Proxy(str(cid + 1)), fit_res(arrays, int(sum(count)), metrics)))
    return results


def test_classwise_aggregation_of_psi_and_fedavg_of_theta(tmp_path):
    strategy = make_strategy(tmp_path, **{"head-aggregation": "classwise"})
    psi_a, psi_b = np.ones((10, 64), np.float32), np.full((10, 64), 3.0, np.float32)
    # Client A: 8 of class 0, 2 of class 1; client B: 2 and 6; nobody holds classes 2..9.
    counts = [[8, 2] + [0] * 8, [2, 6] + [0] * 8]
    ok = strategy.fixed.checksum
    parameters, _ = strategy.aggregate_fit(1, _updates(strategy, [psi_a, psi_b], counts, [ok, ok]), [])
    arrays = parameters_to_ndarrays(parameters)
    # theta: FedAvg with n = (10, 8): (10 * 1 + 8 * 2) / 18.
    np.testing.assert_allclose(arrays[0], np.full_like(arrays[0], 26 / 18), rtol=1e-6)
    psi = arrays[strategy.psi_index]
    np.testing.assert_allclose(psi[0], 0.8 * 1 + 0.2 * 3, rtol=1e-6)  # n_kc / n_c = 8/10, 2/10
    np.testing.assert_allclose(psi[1], 0.25 * 1 + 0.75 * 3, rtol=1e-6)  # 2/8, 6/8
    np.testing.assert_allclose(psi[5], (10 * 1 + 8 * 3) / 18, rtol=1e-6)  # unheld class: FedAvg weights

    fedavg = make_strategy(tmp_path, **{"head-aggregation": "fedavg"})
    parameters, _ = fedavg.aggregate_fit(1, _updates(fedavg, [psi_a, psi_b], counts, [ok, ok]), [])
    np.testing.assert_allclose(parameters_to_ndarrays(parameters)[fedavg.psi_index], (10 + 24) / 18, rtol=1e-6)


def test_checksum_mismatch_rejects_the_update_with_a_logged_reason(tmp_path, caplog):
    strategy = make_strategy(tmp_path)
    psi = np.ones((10, 64), np.float32)
    counts = [[5] * 10, [5] * 10]
    other = fixed_classifier("sse-c", 10, 64, 0.6, 1.0, 1).checksum  # a client that used seed 1
    results = _updates(strategy, [psi, psi * 2], counts, [strategy.fixed.checksum, other])
    with caplog.at_level(WARNING):
        parameters, _ = strategy.aggregate_fit(1, results, [])
    arrays = parameters_to_ndarrays(parameters)
    np.testing.assert_allclose(arrays[0], np.ones_like(arrays[0]))  # only client 1's update
    np.testing.assert_allclose(arrays[strategy.psi_index], psi)
    assert strategy.recorder._pending[1]["clients_rejected"] == 1
    assert "rejected the update of node 2" in caplog.text and "checksum" in caplog.text
    # A missing checksum or (class-wise) missing counts are rejected too.
    assert "no 'fixed-classifier-checksum'" in strategy.fedloge_reason({})
    assert strategy.fedloge_reason({CHECKSUM_METRIC: strategy.fixed.checksum}) is None  # fedavg: no counts needed
    classwise = make_strategy(tmp_path / "classwise", **{"head-aggregation": "classwise"})
    assert "class counts" in classwise.fedloge_reason({CHECKSUM_METRIC: classwise.fixed.checksum})


def test_checkpoint_carries_the_fixed_classifier_and_refuses_another(tmp_path):
    strategy = make_strategy(tmp_path)
    state = strategy.strategy_state()
    np.testing.assert_array_equal(state["fixed_classifier"], strategy.fixed.matrix.numpy())
    strategy.load_strategy_state(state)  # same W: fine
    other = make_strategy(tmp_path, seed=1).strategy_state()
    with pytest.raises(CheckpointError, match="another SSE-C"):
        strategy.load_strategy_state(other)


# ------------------------------------------------------------------------- in-process runs
def test_bytes_per_round_are_theta_plus_psi_and_runs_report_all_metrics(inprocess_run):
    run_dir, rows, summary = inprocess_run({"algorithm": "fedloge", "dataset": "lt-digits", "local-epochs": 1},
                                           nodes=3, rounds=2)
    config = make_config()
    model = get_algorithm("fedloge").build_model(config, hold_out(config).bundle)
    keys = get_algorithm("fedloge").shared_keys(model)
    state = model.state_dict()
    theta = sum(state[k].numel() * state[k].element_size() for k in keys if k.startswith("backbone."))
    psi = state[PSI_KEY].numel() * 4
    assert set(keys) == {k for k in keys if k.startswith("backbone.")} | {PSI_KEY}
    for row in rows:
        assert row["bytes_sent"] == row["bytes_received"] == 3 * (theta + psi)
        assert row["clients_rejected"] == 0
        for name in ("test_pm", "test_pm_la_fr", "test_pm_local_head", "test_pm_global", "test_gm_fixed"):
            assert 0.0 <= row[name] <= 1.0
    assert payload_bytes([state[k].numpy() for k in keys]) == theta + psi
    # FedAvg's model differs only by the classifier bias (C floats): FedLoGe adds no traffic.
    fedavg = get_algorithm("fedavg").build_model(config, hold_out(config).bundle)
    fedavg_bytes = payload_bytes([fedavg.state_dict()[k].numpy() for k in get_algorithm("fedavg").shared_keys(fedavg)])
    assert theta + psi == fedavg_bytes - 10 * 4
    for name in ("gm", "pm", "many", "medium", "few"):
        assert math.isfinite(summary["final"][name])
    assert (run_dir / "fixed_classifier.json").is_file()


@pytest.mark.slow
def test_flower_simulation_fedloge_10_nodes(flower_run):
    run_dir, rows, summary = flower_run({"algorithm": "fedloge", "dataset": "lt-digits", "local-epochs": 1})
    for name in ("gm", "pm", "many", "medium", "few"):
        assert math.isfinite(summary["final"][name]), name
    assert all(row["clients_ok"] == 10 and row["clients_rejected"] == 0 for row in rows)
    assert (run_dir / "fixed_classifier.json").is_file()


# --------------------------------------------------------------- benchmarks
def test_step_benchmark_times_steps_and_client_rounds_and_prints_json(capsys):
    from benchmarks.fedloge_step import main as step_main

    assert step_main(["--steps", "1", "--passes", "1", "--rounds", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["ms"]) == {"step", "client-round"}
    for row, values in result["ms"].items():
        assert set(values) == {"fedavg", "fedloge"} and all(v > 0 for v in values.values())
        assert result["ratio_to_fedavg"][row] == pytest.approx(values["fedloge"] / values["fedavg"])


def test_time_rows_median_and_mean_and_bad_statistic():
    from benchmarks.steptime import time_rows

    calls = {"a": 0, "b": 0}
    rows = {"a": lambda: calls.__setitem__("a", calls["a"] + 1), "b": lambda: calls.__setitem__("b", calls["b"] + 1)}
    result = time_rows(rows, count=3, passes=4, statistic="median", warmup=2)
    assert calls == {"a": 2 + 3 * 4, "b": 2 + 3 * 4}  # warm-up once, then count x passes, interleaved
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())
    with pytest.raises(ValueError, match="allowed: mean, median"):
        time_rows(rows, 1, statistic="max")


@pytest.mark.slow
def test_benchmark_runs_each_federation_in_a_fresh_process_and_writes_its_table(tmp_path):
    from benchmarks.fedloge import main as bench_main

    out = tmp_path / "bench"
    assert bench_main(["--imbalance-factors", "50", "--seeds", "1", "--rounds", "2", "--nodes", "3",
                       "--runs", "fedavg,fedloge", "--out", str(out)]) == 0
    result = json.loads((out / "fedloge_benchmark.json").read_text())
    assert {r["run"] for r in result["records"]} == {"fedavg", "fedloge"}
    for record in result["records"]:
        timing = json.loads((Path(record["run_dir"]) / "benchmark-timing.json").read_text())
        assert timing["isolated"] is True and timing["run_cpu_seconds"] > 0  # the child's CPU, not ours
        assert 0.0 <= record["final"]["gm"] <= 1.0 and 0.0 <= record["final"]["pm"] <= 1.0
    rows = {(r["row"], r["imbalance_factor"]) for r in result["table"]}
    assert ("SSE-C + GA-FR + LA-FR (FedLoGe)", 50.0) in rows and ("FedAvg", 50.0) in rows
    assert result["timing"]["fedloge"]["pairs"][0]["wall_ratio"] > 0

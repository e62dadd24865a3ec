"""FedProx, SCAFFOLD, FedCurv and Centralized: each rule against a hand-computed case, what travels
and what stays private, and (slow) a real 10-node Flower simulation per algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from torch import nn
from torch.utils.data import TensorDataset

from clients.base import ClientSetup
from clients.centralized import CentralizedClient, union_train_set
from clients.fedcurv import (
    CONST_METRIC, OWN_FISHER_KEY, SUMS_CONST, SUMS_ROUND, FedCurvClient, diagonal_fisher, fedcurv_penalty,
)
from clients.fedprox import FedProxClient
from fedapp.params import proximal_term
from clients.scaffold import CLIENT_VARIATE_KEY, ScaffoldClient, ScaffoldSGD, scaffold_variate_update
from fedapp.config import ConfigError, RunConfig
from fedapp.data import federate
from fedapp.params import get_arrays
from fedapp.payload import flatten, trainable_keys, unflatten
from fedapp.registry import get_algorithm
from strategies.fedcurv import fedcurv_sums
from strategies.scaffold import scaffold_server_update

SKEWED = {"preset": "ml-digits-skewed"}


def make_client(cls, overrides: dict, num_partitions: int = 3, partition_id: int = 0, state: RecordDict | None = None):
    config = RunConfig.from_run_config({**RunConfig.default_values(), **overrides})
    torch.manual_seed(0)
    setup = ClientSetup(config, partition_id, federate(config, num_partitions), torch.device("cpu"),
                        RecordDict() if state is None else state, get_algorithm(config.algorithm))
    return cls(setup)


def nbytes(arrays) -> int:
    return int(sum(a.nbytes for a in arrays))


# ----------------------------------------------------------------------------------------- payload
def test_flatten_roundtrip():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7.0], np.float32)]
    back = unflatten(flatten(arrays), arrays)
    assert all(np.array_equal(a, b) and a.shape == b.shape for a, b in zip(arrays, back))
    with pytest.raises(ValueError, match="expected 7"):
        unflatten(np.zeros(5, np.float32), arrays)


@pytest.mark.parametrize("key, value", [("mu", -0.1), ("server-lr", 0.0), ("scaffold-local-lr", -1.0),
                                        ("fedcurv-lambda", -2.0)])
def test_new_keys_are_validated(key, value):
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_kebab({key: value})


# ----------------------------------------------------------------------------------------- FedProx
def test_fedprox_gradient_one_step_hand_case():
    """h(w) = 0.5 w^2 + mu/2 ||w - w_g||^2 -> grad = w + mu (w - w_g); one SGD step by hand."""
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    anchor = torch.tensor([0.5, 0.5])
    mu, lr = 0.1, 0.5
    loss = 0.5 * torch.sum(w ** 2) + 0.5 * mu * proximal_term([w], [anchor])
    loss.backward()
    # grad = [1 + 0.1*0.5, -2 + 0.1*(-2.5)] = [1.05, -2.25]
    assert torch.allclose(w.grad, torch.tensor([1.05, -2.25]))
    with torch.no_grad():
        w -= lr * w.grad
    assert torch.allclose(w, torch.tensor([0.475, -0.875]))


def test_fedprox_client_adds_server_mu_term_to_task_loss():
    client = make_client(FedProxClient, {**SKEWED, "algorithm": "fedprox"})
    params = get_arrays(client.model, client.keys)
    client.receive(params, {"server-round": 1})
    client.mu = 0.3  # what local_train sets from the server's "proximal_mu"
    with torch.no_grad():
        for p in client.proximal_params:
            p.add_(0.1)
    images, targets = next(iter(client.train_loader({"server-round": 1})))
    client.model.eval()
    total, terms = client.loss(client.model, images, targets)
    count = sum(p.numel() for p in client.proximal_params)
    expected_prox = count * 0.1 ** 2
    assert terms["proximal"] == pytest.approx(expected_prox, rel=1e-4)
    assert float(total.detach()) == pytest.approx(terms["loss"] + 0.5 * 0.3 * expected_prox, rel=1e-5)


def test_fedprox_strategy_sends_mu(inprocess_run):
    run_dir, rows, _ = inprocess_run({**SKEWED, "algorithm": "fedprox", "mu": 0.5, "local-epochs": 1},
                                     nodes=3, rounds=1)
    assert rows[0]["train_proximal"] > 0
    assert rows[0]["bytes_sent"] == rows[0]["bytes_received"]  # the model down and up, as FedAvg


# ---------------------------------------------------------------------------------------- SCAFFOLD
def test_scaffold_variate_update_option_two_hand_case():
    # c_k+ = c_k - c + (x - y) / (K lr) = 1 - 0.5 + (2 - 1) / (2 * 0.25) = 2.5
    updated = scaffold_variate_update([np.array([1.0])], [np.array([0.5])], [np.array([2.0])],
                                      [np.array([1.0])], steps=2, lr=0.25)
    assert updated[0] == pytest.approx([2.5])


def test_scaffold_corrected_sgd_step_and_constant_gradient_variate():
    """One step is y - lr (g - c_k + c); for a linear loss option II recovers the gradient exactly."""
    g, c, ck, lr, steps = torch.tensor([0.4, -1.0]), torch.tensor([0.1, 0.2]), torch.tensor([0.3, -0.5]), 0.1, 3
    y = nn.Parameter(torch.tensor([1.0, 1.0]))
    optimizer = ScaffoldSGD([y], lr, [c - ck])
    for _ in range(steps):
        optimizer.zero_grad()
        torch.sum(g * y).backward()
        optimizer.step()
    # each step: y -= 0.1 * ([0.4, -1.0] + [-0.2, 0.7]) = y - [0.02, -0.03]
    assert torch.allclose(y.detach(), torch.tensor([1.0 - 3 * 0.02, 1.0 + 3 * 0.03]))
    assert optimizer.steps == steps
    updated = scaffold_variate_update([ck.numpy()], [c.numpy()], [np.array([1.0, 1.0])], [y.detach().numpy()],
                                      steps, lr)
    assert updated[0] == pytest.approx(g.numpy(), abs=1e-6)


def test_scaffold_momentum_variate_matches_the_heavy_ball_closed_form():
    """Constant direction d = g - c_k + c, momentum mu: after K steps x - y = lr d sum_t (1 - mu^t) / (1 - mu),
    so option II with the (1 - mu) factor gives c_k - c + d * (1 - mu (1 - mu^K) / ((1 - mu) K))."""
    g, c, ck = torch.tensor([0.4, -1.0]), torch.tensor([0.1, 0.2]), torch.tensor([0.3, -0.5])
    lr, mu, steps = 0.01, 0.9, 50
    y = nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    optimizer = ScaffoldSGD([y], lr, [(c - ck).double()], momentum=mu)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.sum(g.double() * y).backward()
        optimizer.step()
    direction = (g - ck + c).numpy()
    transient = 1.0 - mu * (1.0 - mu**steps) / ((1.0 - mu) * steps)
    expected_y = 1.0 - lr * direction * sum((1 - mu**t) / (1 - mu) for t in range(1, steps + 1))
    assert y.detach().numpy() == pytest.approx(expected_y, rel=1e-6)
    updated = scaffold_variate_update([ck.numpy()], [c.numpy()], [np.array([1.0, 1.0])], [y.detach().numpy()],
                                      steps, lr, momentum=mu)
    assert updated[0] == pytest.approx(ck.numpy() - c.numpy() + direction * transient, abs=1e-5)


def test_scaffold_weight_decay_is_decoupled():
    """Zero gradient and correction: one step only shrinks p by (1 - lr * weight_decay)."""
    p = nn.Parameter(torch.tensor([2.0, -4.0]))
    optimizer = ScaffoldSGD([p], 0.1, [torch.zeros(2)], weight_decay=0.01, momentum=0.9)
    p.grad = torch.zeros(2)
    optimizer.step()
    assert torch.allclose(p.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.1 * 0.01))


def test_scaffold_server_update_hand_case():
    # x = 1 + 0.5 * mean(2-1, 4-1) = 2; c = 0 + (2/4) * mean(1, 3) = 1
    x, c = scaffold_server_update([np.array([1.0], np.float32)], [np.array([0.0], np.float32)],
                                  [[np.array([2.0])], [np.array([4.0])]], [[np.array([1.0])], [np.array([3.0])]],
                                  num_clients=4, server_lr=0.5)
    assert x[0] == pytest.approx([2.0]) and c[0] == pytest.approx([1.0])
    assert x[0].dtype == np.float32 and c[0].dtype == np.float32


def test_scaffold_client_variate_persists_and_only_its_delta_travels():
    state = RecordDict()
    overrides = {**SKEWED, "algorithm": "scaffold", "local-epochs": 1}
    client = make_client(ScaffoldClient, overrides, state=state)
    model = get_arrays(client.model, client.keys)
    names = trainable_keys(client.model, client.keys)
    server_c = [np.full_like(a, 0.01) for a in client.client_variate]
    sent, n1, _ = client.fit(model + server_c, {"server-round": 1})
    assert n1 == len(client.train_set)
    # What travels: y (model-shaped) then delta c_k (one array per trainable parameter), nothing more.
    assert len(sent) == len(client.keys) + len(names)
    assert nbytes(sent) == nbytes(model) + nbytes(server_c)
    c1 = unflatten(state[CLIENT_VARIATE_KEY].to_torch_state_dict()[CLIENT_VARIATE_KEY].numpy(), server_c)
    delta1 = sent[len(client.keys):]
    assert all(np.allclose(d, c) for d, c in zip(delta1, c1))  # c_k started at 0

    # Next round: a fresh client object (as Flower builds one per message) restores c_k from state.
    client2 = make_client(ScaffoldClient, overrides, state=state)
    assert all(np.array_equal(a, b) for a, b in zip(client2.client_variate, c1))
    sent2, _, _ = client2.fit(sent[: len(client.keys)] + server_c, {"server-round": 2})
    c2 = client2.client_variate
    delta2 = sent2[len(client.keys):]
    assert all(np.allclose(d, b - a, atol=1e-6) for d, a, b in zip(delta2, c1, c2))
    # c_k itself is not in the payload.
    assert not any(np.allclose(d, c) for d, c in zip(delta2, c2) if np.abs(c).max() > 1e-6)


def test_scaffold_inprocess_bytes_are_model_plus_variates(inprocess_run):
    run_dir, rows, _ = inprocess_run({**SKEWED, "algorithm": "scaffold", "local-epochs": 1}, nodes=3, rounds=2)
    client = make_client(ScaffoldClient, {**SKEWED, "algorithm": "scaffold"})
    model_bytes = nbytes(get_arrays(client.model, client.keys))
    variate_bytes = nbytes(client.client_variate)
    for row in rows:
        assert row["clients_ok"] == 3
        assert row["bytes_sent"] == row["bytes_received"] == 3 * (model_bytes + variate_bytes)


def build_strategy(algorithm: str, tmp_path):
    from fedapp.server_app import build_server_setup

    config = RunConfig.from_run_config({**RunConfig.default_values(), **SKEWED, "algorithm": algorithm,
                                        "output-dir": str(tmp_path / algorithm)})
    return get_algorithm(algorithm).strategy(build_server_setup(config))


def test_scaffold_server_variate_survives_a_checkpoint(tmp_path):
    strategy = build_strategy("scaffold", tmp_path)
    strategy.server_variate = [np.random.default_rng(i).normal(size=c.shape).astype(np.float32)
                               for i, c in enumerate(strategy.server_variate)]
    restored = build_strategy("scaffold", tmp_path / "again")
    restored.load_strategy_state(strategy.strategy_state())
    assert all(np.array_equal(a, b) for a, b in zip(restored.server_variate, strategy.server_variate))


# ----------------------------------------------------------------------------------------- FedCurv
def test_fedcurv_penalty_and_gradient_hand_case():
    """Clients j=1,2: F1=[1,2], w1=[0,1]; F2=[3,.5], w2=[2,2]; theta=[1,2].

    penalty = 1*1 + 2*1 + 3*1 + 0.5*0 = 6; gradient = 2 * sum_j F_j (theta - w_j) = [-4, 4].
    """
    fishers = [[np.array([1.0, 2.0])], [np.array([3.0, 0.5])]]
    weights = [[np.array([0.0, 1.0])], [np.array([2.0, 2.0])]]
    products = [[f[0] * w[0]] for f, w in zip(fishers, weights)]
    consts = [float(np.sum(f[0] * w[0] ** 2)) for f, w in zip(fishers, weights)]
    u, v, w_sum = fedcurv_sums(fishers, products, consts)
    assert u[0] == pytest.approx([4.0, 2.5]) and v[0] == pytest.approx([6.0, 3.0]) and w_sum == 16.0
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    penalty = fedcurv_penalty([theta], [torch.as_tensor(u[0])], [torch.as_tensor(v[0])], w_sum)
    assert float(penalty) == pytest.approx(6.0)
    penalty.backward()
    assert torch.allclose(theta.grad, torch.tensor([-4.0, 4.0]))


def test_diagonal_fisher_hand_case():
    """One-logit linear model, w = 0: per-sample grad of BCE = (sigmoid(0) - y) x."""
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    data = TensorDataset(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [0.0]]))
    fisher = diagonal_fisher(model, ["weight"], data, "multilabel", torch.device("cpu"), batch_size=1)
    # grads -0.5 and 1.0 -> mean of squares (0.25 + 1) / 2
    assert fisher[0].item() == pytest.approx(0.625)


def test_fedcurv_client_subtracts_its_own_contribution_and_keeps_it_private():
    state = RecordDict()
    overrides = {**SKEWED, "algorithm": "fedcurv", "local-epochs": 1}
    client = make_client(FedCurvClient, overrides, state=state)
    model = get_arrays(client.model, client.keys)
    count = len(client.curv_names)
    sent, _, metrics = client.fit(model, {"server-round": 1})  # round 1: no sums yet, no penalty
    assert len(sent) == len(client.keys) + 2 * count
    fisher, products = sent[len(client.keys):][:count], sent[len(client.keys):][count:]
    assert all((f >= 0).all() for f in fisher) and any(f.max() > 0 for f in fisher)
    weights = [dict(client.model.named_parameters())[n].detach().numpy() for n in client.curv_names]
    assert all(np.allclose(g, f * w) for g, f, w in zip(products, fisher, weights))
    assert metrics[CONST_METRIC] == pytest.approx(sum(float(np.sum(f * w * w)) for f, w in zip(fisher, weights)),
                                                  rel=1e-5)
    assert OWN_FISHER_KEY in state

    # Round 2: the server's sums contain this client (round 1) and one other client (F = 1, w = 0).
    other_f = [np.ones_like(f) for f in fisher]
    u = [f + o for f, o in zip(fisher, other_f)]
    v = [g.copy() for g in products]  # the other's F * w is 0
    client2 = make_client(FedCurvClient, overrides, state=state)
    config = {"server-round": 2, SUMS_ROUND: 1, SUMS_CONST: metrics[CONST_METRIC]}
    terms_u, terms_v, terms_w = client2.others_terms(u + v, config)
    assert all(np.allclose(t.numpy(), o, atol=1e-6) for t, o in zip(terms_u, other_f))
    assert all(np.allclose(t.numpy(), 0.0, atol=1e-6) for t in terms_v)
    assert terms_w == pytest.approx(0.0, abs=1e-4)
    # Sums from a round this client was not in: nothing to subtract.
    terms_u, _, _ = client2.others_terms(u + v, {**config, SUMS_ROUND: 0})
    assert all(np.allclose(t.numpy(), ui) for t, ui in zip(terms_u, u))


def test_fedcurv_inprocess_bytes_per_round(inprocess_run):
    _, rows, summary = inprocess_run({**SKEWED, "algorithm": "fedcurv", "local-epochs": 1}, nodes=3, rounds=2)
    client = make_client(FedCurvClient, {**SKEWED, "algorithm": "fedcurv"})
    m = nbytes(get_arrays(client.model, client.keys))
    p = sum(dict(client.model.named_parameters())[n].numel() * 4 for n in client.curv_names)
    assert rows[0]["bytes_sent"] == 3 * m  # round 1: the model only
    assert rows[0]["bytes_received"] == rows[1]["bytes_received"] == 3 * (m + 2 * p)  # w, F, F * w
    assert rows[1]["bytes_sent"] == 3 * (m + 2 * p)  # model, U, V
    assert "train_fedcurv_penalty" not in rows[0] and rows[1]["train_fedcurv_penalty"] > 0


def test_fedcurv_sums_survive_a_checkpoint(tmp_path):
    strategy = build_strategy("fedcurv", tmp_path)
    assert strategy.strategy_state() == {}
    zeros = [np.zeros_like(a) for a in strategy.reference[strategy.num_model_arrays:][: strategy.num_curv_arrays]]
    strategy.sums = ([z + 1 for z in zeros], [z + 2 for z in zeros], 3.5)
    strategy.sums_round = 4
    restored = build_strategy("fedcurv", tmp_path / "again")
    restored.load_strategy_state(strategy.strategy_state())
    assert restored.sums_round == 4 and restored.sums[2] == 3.5
    assert all(np.array_equal(a, b) for a, b in zip(restored.sums[0] + restored.sums[1],
                                                    strategy.sums[0] + strategy.sums[1]))
    assert restored.fit_config(5)[SUMS_ROUND] == 4


# ------------------------------------------------------------------------------------- Centralized
def test_centralized_trains_on_the_union_and_writes_the_run_directory(inprocess_run):
    overrides = {**SKEWED, "algorithm": "centralized", "local-epochs": 1}
    run_dir, rows, summary = inprocess_run(overrides, nodes=3, rounds=2)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "plots/macro_auc.png", "plots/train_loss.png"):
        assert (run_dir / name).is_file(), name
    assert set(summary["final"]) == set(summary["best"]) == {"macro_auc", "micro_auc", "macro_f1", "micro_f1"}
    assert summary["best_selected_by"] == "val_macro_auc"
    client = make_client(CentralizedClient, overrides)
    model_bytes = nbytes(get_arrays(client.model, client.keys))
    for row in rows:
        assert row["clients_selected"] == row["clients_ok"] == 1
        assert row["bytes_sent"] == row["bytes_received"] == model_bytes
    split = federate(client.config, 3)
    assert len(client.train_set) == sum(len(p) for p in split.client_train) == len(union_train_set(split))
    assert not set(client.train_set.indices) & set(split.validation_indices)


def test_centralized_single_label_reports_pm(inprocess_run):
    _, rows, summary = inprocess_run({"algorithm": "centralized", "dataset": "lt-digits", "local-epochs": 1},
                                     nodes=3, rounds=1)
    assert rows[0]["eval_clients"] == 3 and 0.0 <= summary["final"]["pm"] <= 1.0


# ------------------------------------------------------------------- real Flower simulations (slow)
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fedprox", "scaffold", "fedcurv", "centralized"])
def test_flower_simulation_10_nodes(flower_run, algorithm):
    """A real ``flwr run`` on Ray: 10 SuperNodes, 2 rounds, ml-digits (alpha 0.5, rho 0.5)."""
    run_dir, rows, summary = flower_run({**SKEWED, "algorithm": algorithm, "local-epochs": 1}, nodes=10, rounds=2)
    expected = 1 if algorithm == "centralized" else 10
    assert all(r["clients_ok"] == expected and r["clients_rejected"] == 0 for r in rows)
    assert all(np.isfinite(v) for v in summary["final"].values())

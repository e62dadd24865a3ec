"""Personalized and long-tail baselines (issue 8): FedBN, FedPer, FedRep, FedBABU, Ditto, FedRoD,
FedETF, Ratio Loss.

Each algorithm's distinctive rule on a small hand-computed case, what travels and what stays,
private state surviving a round trip through ``context.state``, and a real 10-node Flower
simulation per algorithm (slow).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from torch import nn
from torch.utils.data import TensorDataset

import clients.fedrep as fedrep_module
from clients.base import ClientSetup
from clients.ratio_loss import decode_weights, encode_weights
from fedapp.config import RunConfig
from fedapp.data import federate, hold_out
from fedapp.params import payload_bytes, proximal_term
from fedapp.pfl import (
    balanced_softmax_loss,
    batchnorm_prefixes,
    class_ratio_estimates,
    ratio_loss_weights,
    recalibrate_batchnorm,
)
from fedapp.registry import get_algorithm

ALGORITHMS = ("fedbn", "fedper", "fedrep", "fedbabu", "ditto", "fedrod", "fedetf", "ratio-loss")
HEAD = {"classifier.weight", "classifier.bias"}


def make_config(algorithm: str, **changes) -> RunConfig:
    values = {"algorithm": algorithm, "dataset": "lt-digits", "local-epochs": 1, "finetune-epochs": 1,
              "fedrep-head-epochs": 2, **changes}
    return RunConfig.from_kebab({**RunConfig.default_values(), **values})


def make_client(algorithm: str, state: RecordDict | None = None, partition_id: int = 0, **changes):
    config = make_config(algorithm, **changes)
    setup = ClientSetup(config, partition_id, federate(config, 3), torch.device("cpu"),
                        RecordDict() if state is None else state, get_algorithm(config.algorithm))
    return get_algorithm(algorithm).client(setup)


def model_keys(algorithm: str) -> tuple[nn.Module, list[str]]:
    config = make_config(algorithm)
    model = get_algorithm(algorithm).build_model(config, hold_out(config).bundle)
    return model, get_algorithm(algorithm).shared_keys(model)


def fit_arrays(client, round_: int = 1) -> list[np.ndarray]:
    """One fit on the client's own current parameters (the Ratio Loss server's weights set to 1)."""
    parameters = client.get_parameters({})
    config = {"server-round": round_, "ratio-loss-weights": encode_weights(np.ones(client.bundle.num_classes))}
    arrays, num_examples, metrics = client.fit(parameters, config)
    assert num_examples == len(client.train_set)
    assert all(math.isfinite(v) for v in metrics.values())
    return arrays


# ------------------------------------------------------------------------- what travels, bytes
def test_shared_keys_per_algorithm():
    fedavg_model, fedavg_keys = model_keys("fedavg")
    bn = tuple(batchnorm_prefixes(fedavg_model))
    assert len(bn) == 3  # SmallCNN: three BN layers
    bn_keys = {k for k in fedavg_keys if k.startswith(bn)}
    assert len(bn_keys) == 3 * 4  # weight, bias, running mean, running var each

    assert set(model_keys("fedbn")[1]) == set(fedavg_keys) - bn_keys
    for algorithm in ("fedper", "fedrep", "fedbabu"):
        assert set(model_keys(algorithm)[1]) == set(fedavg_keys) - HEAD, algorithm
    for algorithm in ("ditto", "ratio-loss"):
        assert model_keys(algorithm)[1] == fedavg_keys, algorithm

    rod_model, rod_keys = model_keys("fedrod")
    assert set(rod_keys) == set(fedavg_keys)  # body + generic head travel ...
    assert {"personal_head.weight", "personal_head.bias"} <= set(rod_model.state_dict())  # ... personal head stays

    etf_model, etf_keys = model_keys("fedetf")
    assert "scale" in etf_keys and "projection.weight" in etf_keys
    assert not any("etf" in k for k in etf_model.state_dict())  # the fixed ETF never travels
    assert not any(k.startswith("classifier") for k in etf_keys)


def test_payload_bytes_differ_from_fedavg_by_exactly_the_private_tensors():
    fedavg_model, fedavg_keys = model_keys("fedavg")
    state = fedavg_model.state_dict()
    fedavg_bytes = payload_bytes([state[k].numpy() for k in fedavg_keys])
    head_bytes = (64 * 10 + 10) * 4  # float32 Linear(64 -> 10)
    bn_bytes = (16 + 32 + 64) * 4 * 4  # 4 float32 tensors per BN channel
    expected = {"fedper": fedavg_bytes - head_bytes, "fedrep": fedavg_bytes - head_bytes,
                "fedbabu": fedavg_bytes - head_bytes, "fedbn": fedavg_bytes - bn_bytes,
                "ditto": fedavg_bytes, "fedrod": fedavg_bytes, "ratio-loss": fedavg_bytes}
    for algorithm, size in expected.items():
        model, keys = model_keys(algorithm)
        assert payload_bytes([model.state_dict()[k].numpy() for k in keys]) == size, algorithm


def test_fedper_logs_fewer_bytes_than_fedavg_by_the_head_size(inprocess_run):
    _, fedavg_rows, _ = inprocess_run({"dataset": "lt-digits", "local-epochs": 1}, nodes=3, rounds=1)
    _, fedper_rows, summary = inprocess_run(
        {"algorithm": "fedper", "dataset": "lt-digits", "local-epochs": 1}, nodes=3, rounds=1
    )
    head_bytes = (64 * 10 + 10) * 4
    assert fedavg_rows[0]["bytes_sent"] - fedper_rows[0]["bytes_sent"] == 3 * head_bytes
    assert fedavg_rows[0]["bytes_received"] - fedper_rows[0]["bytes_received"] == 3 * head_bytes
    assert 0.0 <= summary["final"]["pm"] <= 1.0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fit_returns_exactly_the_shared_tensors(algorithm):
    client = make_client(algorithm)
    arrays = fit_arrays(client)
    state = client.model.state_dict()
    assert [a.shape for a in arrays] == [tuple(state[k].shape) for k in client.keys]
    for array, key in zip(arrays, client.keys):
        np.testing.assert_array_equal(array, state[key].numpy())


# ---------------------------------------------------------------------------- losses, hand cases
def test_balanced_softmax_hand_case():
    # z = [1, 0], n = [3, 1], y = 1: -log(e^0 / (3 e^1 + 1 e^0)) = log(1 + 3e)
    loss = balanced_softmax_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), np.array([3, 1]))
    assert float(loss) == pytest.approx(math.log(1 + 3 * math.e), rel=1e-6)
    # Equal counts: plain cross-entropy.
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    plain = nn.functional.cross_entropy(logits, torch.tensor([2]))
    assert float(balanced_softmax_loss(logits, torch.tensor([2]), np.array([5, 5, 5]))) == pytest.approx(float(plain))


def test_ditto_proximal_term_and_gradient_hand_case():
    v = torch.tensor([1.0, 2.0], requires_grad=True)
    w = torch.tensor([0.0, 4.0])
    term = 0.5 * 0.5 * proximal_term([v], [w])
    assert float(term.detach()) == pytest.approx(0.25 * (1 + 4))  # (0.5 / 2) * ||[1, -2]||^2
    term.backward()
    np.testing.assert_allclose(v.grad.numpy(), [0.5, -1.0])  # lambda * (v - w)


def test_ditto_personal_model_is_pulled_to_the_global_model():
    """A personal model 1.0 away from w^t in every entry: lambda = 1000 pulls it back (each SGD
    step shrinks v - w by lr * lambda = 10 %), lambda = 0 leaves it where the task loss takes it."""
    distances = {}
    for lam in (0.0, 1000.0):
        client = make_client("ditto", **{"ditto-lambda": lam, "optimizer": "sgd", "lr": 1e-4, "momentum": 0.0,
                                         "weight-decay": 0.0})
        received = [p.detach().clone() for p in client.model.parameters()]
        client.personal = copy.deepcopy(client.model)
        with torch.no_grad():
            for p in client.personal.parameters():
                p.add_(1.0)
        fit_arrays(client)
        distances[lam] = sum(float(torch.sum((p - w) ** 2)) for p, w in zip(client.personal.parameters(), received))
    steps = math.ceil(len(make_client("ditto").train_set) / 32)
    assert distances[1000.0] == pytest.approx(distances[0.0] * 0.9 ** (2 * steps), rel=0.05)


def test_ratio_loss_monitor_hand_case():
    # A linear "model" on 2-d features, W = 0, b = [ln 3, 0, 0]: softmax [0.6, 0.2, 0.2] everywhere.
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([math.log(3.0), 0.0, 0.0]))
    aux = [(torch.tensor([[1.0, 0.0]]), torch.tensor([0])), (torch.tensor([[0.0, 1.0]]), torch.tensor([1])), None]
    ra = class_ratio_estimates(model, model.weight, aux)
    # Row sums of dCE/dW: class-0 sample [-0.4, 0.2, 0.2], class-1 sample [0.6, -0.8, 0.2].
    # Ra_0 = 0.4 / 0.6, Ra_1 = 0.8 / 0.2; class 2 has no auxiliary sample: the largest, 4.
    np.testing.assert_allclose(ra, [2 / 3, 4.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(ratio_loss_weights(ra, 1.0, 0.1), [1 + 0.2 / 3, 1.4, 1.4])
    np.testing.assert_allclose(decode_weights({"ratio-loss-weights": encode_weights(ra)}, 3).numpy(), ra, rtol=1e-6)
    with pytest.raises(ValueError, match="ratio-loss-weights"):
        decode_weights({"ratio-loss-weights": encode_weights(ra)}, 4)


def test_ratio_loss_client_uses_the_server_weights():
    client = make_client("ratio-loss")
    weights = np.arange(1, 11, dtype=np.float64)
    client.class_weights = torch.as_tensor(weights, dtype=torch.float32)
    images, targets = next(iter(client.train_loader({})))
    loss, _ = client.loss(client.model, images, targets)
    per_sample = nn.functional.cross_entropy(client.model(images), targets, reduction="none")
    w = torch.as_tensor(weights, dtype=torch.float32)[targets]
    assert float(loss) == pytest.approx(float((w * per_sample).sum() / w.sum()), rel=1e-5)
    with pytest.raises(ValueError, match="ratio-loss-weights"):
        client.fit(client.get_parameters({}), {"server-round": 1})  # no weights from the server


# ----------------------------------------------------------------------------- training rules
def test_fedrep_trains_head_then_body(monkeypatch):
    calls = []
    real = fedrep_module.train_epochs

    def spy(model, loader, optimizer, loss_fn, epochs, device, after_step=None, **options):
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        named = {n for n, p in model.named_parameters() if id(p) in optimized}
        calls.append((epochs, trainable, named))
        return real(model, loader, optimizer, loss_fn, epochs, device, after_step, **options)

    monkeypatch.setattr(fedrep_module, "train_epochs", spy)
    client = make_client("fedrep", **{"fedrep-head-epochs": 2, "local-epochs": 1})
    before = {k: v.clone() for k, v in client.model.state_dict().items()}
    fit_arrays(client)
    body = {n for n, _ in client.model.named_parameters()} - HEAD
    assert [c[0] for c in calls] == [2, 1]  # head epochs first, then local epochs
    assert calls[0][1] == calls[0][2] == HEAD  # phase 1: only the head trains
    assert calls[1][1] == calls[1][2] == body  # phase 2: only the body trains
    assert all(p.requires_grad for p in client.model.parameters())  # flags restored
    after = client.model.state_dict()
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert not torch.equal(before["backbone.features.0.weight"], after["backbone.features.0.weight"])


def test_fedbabu_head_is_fixed_identical_everywhere_and_finetuned_only_for_pm():
    server_model, keys = model_keys("fedbabu")
    client = make_client("fedbabu")
    other = make_client("fedbabu", partition_id=1)
    head = client.model.classifier.weight.detach().clone()
    torch.testing.assert_close(head, server_model.classifier.weight)  # same seed, no travel
    torch.testing.assert_close(head, other.model.classifier.weight)
    body_before = client.model.backbone.features[0].weight.detach().clone()
    fit_arrays(client)
    torch.testing.assert_close(client.model.classifier.weight, head)  # never updated in training
    assert not torch.equal(client.model.backbone.features[0].weight, body_before)
    personalized = client.personalized_model()
    assert not torch.equal(personalized.classifier.weight, head)  # fine-tuned copy for PM
    torch.testing.assert_close(client.model.classifier.weight, head)  # the client's model untouched


def test_fedrod_personal_head_does_not_move_body_or_generic_head():
    client = make_client("fedrod")
    with torch.no_grad():  # a non-zero personal head, so that its loss depends on the body's input
        client.model.personal_head.weight.normal_()
    images, targets = next(iter(client.train_loader({})))
    model = client.model
    model.zero_grad()
    total, terms = client.loss(model, images, targets)
    total.backward()
    body_grad = model.backbone.features[0].weight.grad.clone()
    generic_grad = model.classifier.weight.grad.clone()
    assert model.personal_head.weight.grad.abs().sum() > 0
    model.zero_grad()
    counts = np.bincount(client.train_set.labels, minlength=10)
    balanced_softmax_loss(model(images), targets, counts).backward()
    torch.testing.assert_close(model.backbone.features[0].weight.grad, body_grad)
    torch.testing.assert_close(model.classifier.weight.grad, generic_grad)
    assert terms["loss"] == pytest.approx(float(balanced_softmax_loss(model(images), targets, counts)), rel=1e-5)


def test_fedrod_personalized_logits_are_generic_plus_personal():
    client = make_client("fedrod")
    with torch.no_grad():
        client.model.personal_head.bias.copy_(torch.arange(10.0))
        client.model.personal_head.weight.zero_()
    images, _ = next(iter(client.train_loader({})))
    client.model.eval()
    expected = client.model(images) + torch.arange(10.0)
    torch.testing.assert_close(client.personalized_model()(images), expected)


def test_fedetf_finetuning_changes_only_projection_and_scale():
    client = make_client("fedetf")
    fit_arrays(client)
    personalized = client.personalized_model()
    global_state, personal_state = client.model.state_dict(), personalized.state_dict()
    for key in global_state:
        changed = not torch.equal(global_state[key], personal_state[key])
        assert changed == key.startswith(("projection.", "scale")), key
    torch.testing.assert_close(personalized.etf, client.model.etf)


def test_recalibrate_batchnorm_uses_the_data_statistics():
    x = torch.tensor([[0.0, 1.0], [2.0, 5.0], [4.0, 3.0]])
    model = nn.Sequential(nn.BatchNorm1d(2))
    recalibrate_batchnorm(model, TensorDataset(x, torch.zeros(3)), torch.device("cpu"))
    torch.testing.assert_close(model[0].running_mean, x.mean(dim=0))
    torch.testing.assert_close(model[0].running_var, x.var(dim=0))  # unbiased, as BN keeps it
    assert model[0].momentum == 0.1  # restored


# ------------------------------------------------------------------------------ private state
PRIVATE = {
    "fedbn": lambda c: {k: v for k, v in c.model.state_dict().items() if k.startswith(tuple(batchnorm_prefixes(c.model)))},
    "fedper": lambda c: {k: v for k, v in c.model.state_dict().items() if k.startswith("classifier.")},
    "fedrep": lambda c: {k: v for k, v in c.model.state_dict().items() if k.startswith("classifier.")},
    "fedrod": lambda c: {k: v for k, v in c.model.state_dict().items() if k.startswith("personal_head.")},
    "ditto": lambda c: c.personal.state_dict(),
}


@pytest.mark.parametrize("algorithm", sorted(PRIVATE))
def test_private_state_persists_across_two_fits_through_context_state(algorithm):
    state = RecordDict()
    first = make_client(algorithm, state)
    fit_arrays(first, round_=1)
    kept = {k: v.clone() for k, v in PRIVATE[algorithm](first).items()}
    assert kept

    second = make_client(algorithm, state)  # a new message: the client is rebuilt from context.state
    restored = PRIVATE[algorithm](second)
    assert set(restored) == set(kept)
    for key in kept:
        torch.testing.assert_close(restored[key], kept[key])
    # The server's arrays overwrite only shared tensors: private ones survive receive().
    second.receive(first.get_parameters({}), {})
    for key, value in PRIVATE[algorithm](second).items():
        torch.testing.assert_close(value, kept[key])
    fit_arrays(second, round_=2)
    trained = PRIVATE[algorithm](second)
    assert any(not torch.equal(trained[k], kept[k]) for k in kept if kept[k].is_floating_point())

    fresh = make_client(algorithm, RecordDict())  # another node: none of that state
    if algorithm == "ditto":
        assert fresh.personal is None
    else:
        fresh_private = PRIVATE[algorithm](fresh)
        assert any(not torch.equal(fresh_private[k], kept[k]) for k in kept if kept[k].is_floating_point())


# ------------------------------------------------------------------------ real Flower simulations
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_flower_simulation_10_nodes(flower_run, algorithm):
    """A real ``flwr run`` on Ray, 10 SuperNodes, 2 rounds of lt-digits: finite GM and PM."""
    _, rows, summary = flower_run(
        {"algorithm": algorithm, "dataset": "lt-digits", "local-epochs": 1, "finetune-epochs": 1,
         "fedrep-head-epochs": 1},
        nodes=10, rounds=2,
    )
    assert all(r["clients_ok"] == 10 and r["eval_clients"] == 10 for r in rows)
    for name in ("gm", "pm", "many", "medium", "few"):
        assert math.isfinite(summary["final"][name]), name
    assert rows[-1]["bytes_sent"] > 0

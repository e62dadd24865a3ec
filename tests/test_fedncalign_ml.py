"""FedNCAlign-ML as a Flower algorithm: config keys, the ablation models built from the config, what
travels (never the ETF), the loss terms each fit logs, and (slow) a real 10-node Flower simulation.

The model parts and the losses have their own hand-computed tests (test_ladm.py,
test_multilabel_losses.py, test_etf.py); here they are checked through the client."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from clients.base import PRIVATE_MODEL_KEY, ClientSetup
from clients.fedavg import FedAvgClient
from clients.fedncalign_ml import FedNCAlignMLClient
from fedapp.config import ConfigError, RunConfig
from strategies.fedncalign_ml import FORMULATIONS, LADM_HEADS
from fedapp.data import federate
from fedapp.models.etf import simplex_etf
from fedapp.models.multilabel import ETFClassifier, GroupLinear, MultiLabelNet
from fedapp.models.multilabel_losses import authors_loss, mean_cosine_loss
from fedapp.models.nets import PooledLinearNet
from fedapp.registry import get_algorithm
from strategies.fedncalign_ml import FedNCAlignMLStrategy

SKEWED = {"preset": "ml-digits-skewed"}
ALGO = {"algorithm": "fedncalign-ml"}
MEAN_COSINE = {"fedncalign-formulation": "mean-cosine"}
D, C = 64, 10  # SmallCNN's output channels, ml-digits' labels


def make_config(**overrides) -> RunConfig:
    return RunConfig.from_run_config({**RunConfig.default_values(), **ALGO, **SKEWED, **overrides})


def make_client(cls=FedNCAlignMLClient, partition_id: int = 0, state: RecordDict | None = None, **overrides):
    config = make_config(**overrides)
    torch.manual_seed(0)
    setup = ClientSetup(config, partition_id, federate(config, 3), torch.device("cpu"),
                        RecordDict() if state is None else state, get_algorithm(config.algorithm))
    return cls(setup)


def nbytes(arrays) -> int:
    return int(sum(a.nbytes for a in arrays))


# ----------------------------------------------------------------------------------------- config
def test_registered_pair():
    algorithm = get_algorithm("fedncalign-ml")
    assert algorithm.strategy is FedNCAlignMLStrategy and algorithm.client is FedNCAlignMLClient


@pytest.mark.parametrize("key, value, allowed", [
    ("lambda-rejection", -1.0, ">= 0"),
    ("lambda-contrastive", -0.5, ">= 0"),
    ("tau", 1.0, r"a margin on a sigmoid probability in \[0, 1\)"),
    ("tau", -0.1, r"a margin on a sigmoid probability in \[0, 1\)"),
    ("temperature", 0.0, "> 0"),
    ("fedncalign-formulation", "paper", "authors or mean-cosine"),
    ("classifier", "linear", "etf or fc"),
    ("ladm-queries", "learned", "etf, etf-learnable or random-learnable"),
])
def test_keys_are_validated_with_key_value_and_allowed(key, value, allowed):
    with pytest.raises(ConfigError, match=rf"{key}={value!r} is not allowed; allowed: .*{allowed}"):
        RunConfig.from_kebab({key: value})


@pytest.mark.parametrize("value", [1.0, -1.5])
def test_mean_cosine_tau_is_a_cosine_threshold(value):
    with pytest.raises(ConfigError, match=rf"tau={value!r} is not allowed; allowed: a cosine threshold in \[-1, 1\)"):
        RunConfig.from_kebab({**MEAN_COSINE, "tau": value})
    assert RunConfig.from_kebab({**MEAN_COSINE, "tau": -0.5}).tau == -0.5


def test_formulation_sets_the_loss_defaults_below_preset_and_explicit_keys():
    authors, earlier = FORMULATIONS["authors"], FORMULATIONS["mean-cosine"]
    assert authors == {"lambda-rejection": 0.01, "tau": 0.3, "temperature": 0.07}
    assert earlier == {"lambda-rejection": 1.0, "tau": 0.5, "temperature": 0.2}
    defaults = RunConfig.default_values()
    assert {k: defaults[k] for k in authors} == authors  # the declared (and pyproject) defaults are the authors'
    assert defaults["fedncalign-formulation"] == "authors" and defaults["fedncalign-warmup"] is False

    def loss_keys(config: RunConfig) -> dict:
        return {k: config.to_kebab()[k] for k in authors}

    assert loss_keys(make_config()) == authors
    assert loss_keys(make_config(**MEAN_COSINE)) == earlier
    assert loss_keys(RunConfig.from_kebab(MEAN_COSINE)) == earlier  # a partial mapping too
    assert make_config(**MEAN_COSINE, tau=0.2).tau == 0.2  # a key set in the run config wins
    # A preset's value wins over the formulation's (voc2012-s1 sets lambda-rejection 0.01).
    assert make_config(**MEAN_COSINE, preset="voc2012-s1").lambda_rejection == 0.01


@pytest.mark.parametrize("overrides, key", [
    ({"classifier": "fc"}, "lambda-rejection"),
    ({"classifier": "fc", "lambda-rejection": 0.0}, "lambda-contrastive"),
    ({"use-ladm": False}, "lambda-rejection"),
    ({"use-ladm": False, "lambda-rejection": 0.0, "lambda-contrastive": 0.0, "ladm-queries": "etf-learnable"},
     "ladm-queries"),
])
def test_combinations_without_etf_features_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=rf"{key}=.* is not allowed; allowed: "):
        make_config(**overrides)


def test_combinations_only_bind_fedncalign_ml():
    # Another algorithm ignores these keys, so their combinations are not its business.
    assert make_config(algorithm="fedavg", classifier="fc").classifier == "fc"


def test_non_multilabel_dataset_is_refused():
    config = RunConfig.from_kebab({**ALGO, "dataset": "lt-digits"})
    from fedapp.data import hold_out

    with pytest.raises(ValueError, match="needs a multi-label dataset; dataset='lt-digits'"):
        get_algorithm("fedncalign-ml").build_model(config, hold_out(config).bundle)


# ------------------------------------------------------------------------- the ablation models
NO_LOSSES = {"lambda-rejection": 0.0, "lambda-contrastive": 0.0}


@pytest.mark.parametrize("overrides, net_type, head_type, has_ladm, learnable_queries", [
    ({}, MultiLabelNet, ETFClassifier, True, False),  # the method (Table 7 last row)
    ({"ladm-queries": "etf-learnable"}, MultiLabelNet, ETFClassifier, True, True),  # Table 8
    ({"ladm-queries": "random-learnable"}, MultiLabelNet, ETFClassifier, True, True),  # Table 8
    ({**NO_LOSSES, "classifier": "fc"}, MultiLabelNet, GroupLinear, True, False),  # FC head on LADM
    ({**NO_LOSSES, "use-ladm": False}, MultiLabelNet, ETFClassifier, False, False),  # ETF on pooled feature
    ({**NO_LOSSES, "use-ladm": False, "classifier": "fc"}, PooledLinearNet, None, False, False),  # FedAvg's
])
def test_config_switches_build_the_documented_models(overrides, net_type, head_type, has_ladm, learnable_queries):
    client = make_client(**overrides)
    net = client.model
    assert type(net) is net_type
    if net_type is MultiLabelNet:
        assert isinstance(net.classifier, head_type)
        assert (net.ladm is not None) == has_ladm
        if has_ladm:
            assert net.ladm.attention.num_heads == LADM_HEADS
            assert isinstance(net.ladm.queries, torch.nn.Parameter) == learnable_queries
    images, _ = next(iter(torch.utils.data.DataLoader(client.train_set, batch_size=4)))
    assert net(images).shape == (4, C)


def test_no_ladm_fc_row_has_exactly_the_fedavg_model():
    ours = make_client(**NO_LOSSES, **{"use-ladm": False, "classifier": "fc"})
    fedavg = make_client(FedAvgClient, algorithm="fedavg")
    assert [(k, v.shape) for k, v in ours.model.state_dict().items()] == \
        [(k, v.shape) for k, v in fedavg.model.state_dict().items()]


def test_etf_is_rebuilt_from_the_seed_on_every_party():
    client, server_model = make_client(), get_algorithm("fedncalign-ml").build_model(make_config(), make_client().bundle)
    etf = simplex_etf(C, D, seed=0)
    for net in (client.model, server_model):
        assert torch.equal(net.prototypes, etf)
        assert torch.equal(net.ladm.queries, etf.T)  # one ETF: queries and classifier
    assert not torch.equal(make_client(seed=1).model.prototypes, etf)


# ------------------------------------------------------------------------------ what travels
@pytest.mark.parametrize("formulation, head_floats", [("authors", 1 + C), ("mean-cosine", 0)])
def test_fit_sends_exactly_the_trainable_shared_tensors_never_the_etf(formulation, head_floats):
    client = make_client(**{"local-epochs": 1, "fedncalign-formulation": formulation})
    state = client.model.state_dict()
    expected_keys = [k for k in state if not k.endswith("num_batches_tracked")]
    assert all("etf" not in k and k != "ladm.queries" for k in expected_keys)
    assert ({"classifier.scale", "classifier.bias"} <= set(expected_keys)) == (formulation == "authors")
    arrays, n, _ = client.fit(client.get_parameters({}), {"server-round": 1})
    assert n == len(client.train_set)
    assert [a.shape for a in arrays] == [tuple(state[k].shape) for k in expected_keys]
    # Nothing sent is the ETF (d x C) or its transpose (the fixed queries).
    assert not any(a.shape in ((D, C), (C, D)) for a in arrays)
    # Backbone + LADM's W^Q, W^K, W^V (3d x d + 3d) and W^O (d x d + d) [+ the ETF head's s and b], float32.
    backbone = [a for k, a in zip(expected_keys, arrays) if k.startswith("backbone.")]
    assert nbytes(arrays) - nbytes(backbone) == 4 * (4 * D * (D + 1) + head_floats)
    # The bytes versus FedAvg on the same backbone: FedAvg's head is a d x C linear layer.
    fedavg = make_client(FedAvgClient, algorithm="fedavg")
    assert nbytes(fedavg.get_parameters({})) == nbytes(backbone) + 4 * (D * C + C)


def test_authors_head_has_a_learnable_scale_from_10_and_a_bias_that_train():
    client = make_client(**{"local-epochs": 1})
    head = client.model.classifier
    assert isinstance(head.scale, torch.nn.Parameter) and head.scale.item() == 10.0
    assert isinstance(head.bias, torch.nn.Parameter) and torch.equal(head.bias.detach(), torch.zeros(C))
    images, _ = next(iter(torch.utils.data.DataLoader(client.train_set, batch_size=4)))
    features = client.model.class_features(images)
    # z_cc, the BCE logit, is the diagonal of every class feature's logits against all classes.
    torch.testing.assert_close(torch.diagonal(head.class_logits(features), dim1=1, dim2=2), head(features))
    torch.testing.assert_close(head(features), 10.0 * (features * client.model.prototypes.T).sum(-1))
    client.fit(client.get_parameters({}), {"server-round": 1})
    assert head.scale.item() != 10.0 and torch.count_nonzero(head.bias.detach()) == C
    earlier = make_client(**MEAN_COSINE).model.classifier
    assert not isinstance(earlier.scale, torch.nn.Parameter) and earlier.scale.item() == 1.0 and earlier.bias is None


def test_learnable_queries_travel_fixed_ones_do_not():
    fixed = make_client().get_parameters({})
    learnable = make_client(**{"ladm-queries": "etf-learnable"}).get_parameters({})
    assert nbytes(learnable) - nbytes(fixed) == 4 * C * D
    etf_rows = simplex_etf(C, D, 0).T.numpy()
    assert any(a.shape == etf_rows.shape and np.allclose(a, etf_rows) for a in learnable)


def test_only_bn_counters_stay_private_and_persist_across_rounds():
    state = RecordDict()
    client = make_client(state=state, **{"local-epochs": 1})
    arrays, _, _ = client.fit(client.get_parameters({}), {"server-round": 1})
    private = state[PRIVATE_MODEL_KEY].to_torch_state_dict()
    assert set(private) == {k for k in client.model.state_dict() if k.endswith("num_batches_tracked")}
    steps = int(private["backbone.features.1.num_batches_tracked"])
    assert steps == len(client.train_loader({}))  # one epoch of batches
    again = make_client(state=state, **{"local-epochs": 1})  # a new client object in round 2, same node
    assert int(again.model.state_dict()["backbone.features.1.num_batches_tracked"]) == steps


# --------------------------------------------------------------------------- loss terms logged
def test_client_loss_is_eq9_on_the_models_features():
    client = make_client(**{"lambda-rejection": 0.5, "lambda-contrastive": 2.0, "tau": 0.1, "temperature": 0.3})
    images, targets = next(iter(torch.utils.data.DataLoader(client.train_set, batch_size=16)))
    client.model.eval()
    total, terms = client.loss(client.model, images, targets)
    logits, features = client.model.forward_with_features(images)
    class_logits = client.model.classifier.class_logits(features)
    expected, parts = authors_loss(logits, class_logits, features, targets, client.model.prototypes, 0.5, 2.0, 0.1, 0.3)
    torch.testing.assert_close(total, expected)
    assert terms == pytest.approx({"loss": float(expected.detach()), **{k: float(v) for k, v in parts.items()}})
    assert terms["rejection"] > 0 and terms["contrastive"] > 0


def test_client_loss_mean_cosine_formulation():
    client = make_client(**MEAN_COSINE, **{"lambda-rejection": 0.5, "lambda-contrastive": 2.0, "tau": 0.1})
    images, targets = next(iter(torch.utils.data.DataLoader(client.train_set, batch_size=16)))
    client.model.eval()
    total, terms = client.loss(client.model, images, targets)
    logits, features = client.model.forward_with_features(images)
    expected, parts = mean_cosine_loss(logits, features, targets, client.model.prototypes, 0.5, 2.0, 0.1, 0.2)
    torch.testing.assert_close(total, expected)
    assert terms == pytest.approx({"loss": float(expected.detach()), **{k: float(v) for k, v in parts.items()}})


def test_warmup_zeroes_the_weights_in_round_1_and_still_logs_the_terms():
    client = make_client(**{"local-epochs": 1, "fedncalign-warmup": True, "num-server-rounds": 11})
    _, _, first = client.fit(client.get_parameters({}), {"server-round": 1})
    assert first["train_rejection"] > 0 and first["train_contrastive"] > 0
    assert first["train_loss"] == pytest.approx(first["train_bce"], rel=1e-6)  # both factors 0 at p = 0
    _, _, last = client.fit(client.get_parameters({}), {"server-round": 11})
    assert last["train_loss"] == pytest.approx(
        last["train_bce"] + 0.01 * last["train_rejection"] + last["train_contrastive"], rel=1e-5)


def test_fit_logs_each_term_and_the_total_is_their_weighted_sum():
    client = make_client(**{"local-epochs": 1, "lambda-rejection": 0.5, "lambda-contrastive": 2.0, "tau": 0.0})
    _, _, metrics = client.fit(client.get_parameters({}), {"server-round": 1})
    assert set(metrics) == {"train_loss", "train_bce", "train_rejection", "train_contrastive"}
    assert metrics["train_rejection"] > 0 and metrics["train_contrastive"] > 0
    # Step means of a linear combination = the combination of the step means.
    assert metrics["train_loss"] == pytest.approx(
        metrics["train_bce"] + 0.5 * metrics["train_rejection"] + 2.0 * metrics["train_contrastive"], rel=1e-5)


def test_zero_weights_log_zero_terms():
    client = make_client(**{"local-epochs": 1, **NO_LOSSES})
    _, _, metrics = client.fit(client.get_parameters({}), {"server-round": 1})
    assert metrics["train_rejection"] == 0.0 and metrics["train_contrastive"] == 0.0
    assert metrics["train_loss"] == pytest.approx(metrics["train_bce"])


# -------------------------------------------------------------------------------- federations
def test_inprocess_round_records_terms_and_bytes_against_fedavg(inprocess_run):
    common = {**SKEWED, "local-epochs": 1}
    _, rows, summary = inprocess_run({**common, **ALGO}, nodes=3, rounds=1)
    _, fedavg_rows, fedavg_summary = inprocess_run({**common, "algorithm": "fedavg"}, nodes=3, rounds=1)
    row = rows[0]
    assert row["clients_ok"] == 3 and row["clients_rejected"] == 0
    assert {"train_bce", "train_rejection", "train_contrastive", "train_loss"} <= set(row)
    per_client = nbytes(make_client().get_parameters({}))
    assert row["bytes_sent"] == row["bytes_received"] == 3 * per_client
    # LADM's projections and the ETF head's s and b replace FedAvg's linear head:
    # 4d(d+1) + 1 + C - (dC + C) more floats per message.
    extra = 4 * (4 * D * (D + 1) + 1 + C - (D * C + C))
    assert row["bytes_sent"] - fedavg_rows[0]["bytes_sent"] == 3 * extra
    assert summary["bytes_per_round"] - fedavg_summary["bytes_per_round"] == 2 * 3 * extra
    assert set(summary["best"]) == {"macro_auc", "micro_auc", "macro_f1", "micro_f1"}


@pytest.mark.slow
def test_fedncalign_ml_flower_simulation_10_nodes(flower_run):
    """A real ``flwr run`` on Ray: 10 SuperNodes, 2 rounds, ml-digits (alpha 0.5, rho 0.5)."""
    run_dir, rows, summary = flower_run({**SKEWED, **ALGO, "local-epochs": 1}, nodes=10, rounds=2)
    assert all(r["clients_ok"] == 10 and r["clients_rejected"] == 0 for r in rows)
    assert all(np.isfinite(r[f"train_{t}"]) for r in rows for t in ("bce", "rejection", "contrastive"))
    assert all(np.isfinite(v) for v in summary["final"].values())
    assert all(np.isfinite(v) for v in summary["best"].values())


# ---------------------------------------------------------------------------------- benchmark plan
def test_benchmark_plan_rows_are_valid_configs_and_ablations_stay_on_their_settings(tmp_path):
    from benchmarks.fedncalign import ROWS, plan

    specs = plan(["ml-digits-skewed", "ml-digits-alpha0.1"], list(ROWS), 2, 30, tmp_path, {},
                 ablation_settings=["ml-digits-skewed"])
    on_main = {s.algorithm for s in specs if s.setting == "ml-digits-skewed"}
    on_second = {s.algorithm for s in specs if s.setting == "ml-digits-alpha0.1"}
    assert on_main == set(ROWS) and on_second == {"fedavg", "fedncalign-ml"}
    assert len(specs) == 2 * (len(ROWS) + 2)
    assert all(s.overrides["num-server-rounds"] == 30 for s in specs)
    with pytest.raises(ConfigError, match="--rows"):
        plan(["ml-digits-skewed"], ["no-such-row"], 1, 30, tmp_path, {})


def test_step_benchmark_times_every_row_and_prints_json(capsys):
    from benchmarks.fedncalign_step import main as step_main

    assert step_main(["--steps", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["ms_per_step"]) == {"fedavg", "fedncalign-ml", "fedncalign-ml-bce-only", "ladm-only"}
    assert all(value > 0 for value in result["ms_per_step"].values())
    assert result["ratio_to_fedavg"]["fedavg"] == 1.0

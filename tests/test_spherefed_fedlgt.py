"""SphereFed and FedLGT: their distinctive rules on hand cases, what travels, and end-to-end runs."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from clients.base import ClientSetup
from clients.fedlgt import FedLGTClient
from clients.spherefed import CALIBRATE_KEY, CROSS_KEY, GRAM_KEY, SphereFedClient, sphere_features
from fedapp.config import ConfigError, RunConfig
from fedapp.data import federate, load_dataset
from fedapp.models.lgt import (
    NEGATIVE,
    POSITIVE,
    UNKNOWN,
    client_aware_states,
    embedding_file,
    isometric_reduce,
    label_and_state_embeddings,
    read_text_embeddings,
    sample_known_mask,
    unknown_label_bce,
)
from fedapp.models.sphere import (
    CalibratedSphereNet,
    SphereNet,
    decode_matrix,
    encode_matrix,
    feature_statistics,
    ridge_classifier,
    target_matrix,
)
from fedapp.models.backbones import SmallCNN
from fedapp.params import shared_keys
from fedapp.registry import get_algorithm

SKEWED = {"partition": "dirichlet", "alpha": 0.5, "class-presence-ratio": 0.5}


def make_client(cls, config: RunConfig, partition_id: int = 0, nodes: int = 3, state: RecordDict | None = None):
    split = federate(config, nodes)
    return cls(ClientSetup(config, partition_id, split, torch.device("cpu"), state if state is not None else RecordDict(),
                           get_algorithm(config.algorithm)))


# ---------------------------------------------------------------- SphereFed: calibration math
def test_ridge_classifier_hand_case():
    # Z = [[1,0],[0,1],[1,0]], Y = [1,0,1]^T, lambda = 1:
    # Z^T Z + I = diag(3, 2), Z^T Y = [2, 0]  ->  W* = [2/3, 0].
    z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = np.array([[1.0], [0.0], [1.0]])
    gram, cross = feature_statistics(z, y)
    np.testing.assert_allclose(gram, [[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(ridge_classifier([gram], [cross], 1.0), [[2.0 / 3.0], [0.0]])


def test_ridge_from_client_sums_equals_centralized_solve_and_lstsq():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(9, 4))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = (rng.random((9, 3)) < 0.4).astype(np.float64)
    ridge = 0.3
    parts = [slice(0, 2), slice(2, 6), slice(6, 9)]  # three clients of different sizes
    stats = [feature_statistics(z[p], y[p]) for p in parts]
    federated = ridge_classifier([a for a, _ in stats], [b for _, b in stats], ridge)
    solved = np.linalg.solve(z.T @ z + ridge * np.eye(4), z.T @ y)
    augmented_z = np.vstack([z, math.sqrt(ridge) * np.eye(4)])  # ridge = least squares on an augmented system
    augmented_y = np.vstack([y, np.zeros((4, 3))])
    lstsq = np.linalg.lstsq(augmented_z, augmented_y, rcond=None)[0]
    np.testing.assert_allclose(federated, solved, atol=1e-12)
    np.testing.assert_allclose(federated, lstsq, atol=1e-10)


def test_ridge_zero_on_singular_system_names_the_key():
    gram, cross = feature_statistics(np.array([[1.0, 0.0]]), np.array([[1.0]]))
    with pytest.raises(np.linalg.LinAlgError, match="spherefed-ridge"):
        ridge_classifier([gram], [cross], 0.0)


def test_target_matrix_one_hot_and_multi_hot():
    np.testing.assert_array_equal(target_matrix(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    multi = np.array([[1, 0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(target_matrix(multi, 3), multi)
    with pytest.raises(ValueError, match="columns"):
        target_matrix(multi, 4)


def test_matrix_wire_format_round_trip_and_errors():
    matrix = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    np.testing.assert_array_equal(decode_matrix(encode_matrix(matrix), (2, 3)), matrix)
    with pytest.raises(ValueError, match="expected 48 bytes"):
        decode_matrix(encode_matrix(matrix)[:-8], (2, 3))
    with pytest.raises(ValueError, match="non-finite"):
        decode_matrix(encode_matrix(np.full((2, 3), np.nan)), (2, 3))


# ---------------------------------------------------------------- SphereFed: the network
def sphere_net(scale: float = 16.0, seed: int = 0) -> SphereNet:
    torch.manual_seed(1)
    return SphereNet(SmallCNN(1), 64, 10, scale, seed)


def test_features_on_unit_sphere_and_logits_are_scaled_cosines():
    net = sphere_net(scale=5.0)
    x = torch.rand(6, 1, 8, 16)
    logits, z = net.forward_with_features(x)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(net.classifier.T @ net.classifier, torch.eye(10), atol=1e-5, rtol=0)
    cosines = torch.nn.functional.cosine_similarity(z.unsqueeze(2), net.classifier.unsqueeze(0), dim=1)
    torch.testing.assert_close(logits, 5.0 * cosines, atol=1e-5, rtol=0)


def test_fixed_classifier_gets_no_gradient_and_never_travels():
    net = sphere_net()
    assert "classifier" not in net.state_dict()
    assert all(p is not net.classifier for p in net.parameters())
    assert not any(k.startswith("classifier") for k in shared_keys(net))
    before = net.classifier.clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    loss = net(torch.rand(4, 1, 8, 16)).sum()
    loss.backward()
    optimizer.step()
    assert net.classifier.grad is None and not net.classifier.requires_grad
    torch.testing.assert_close(net.classifier, before)
    # Every party rebuilds the same classifier from the seed; another seed gives another one.
    torch.testing.assert_close(sphere_net(seed=0).classifier, before)
    assert not torch.allclose(sphere_net(seed=1).classifier, before)


def test_calibrated_net_logits():
    net = sphere_net(scale=3.0).eval()
    weight = np.random.default_rng(0).normal(size=(64, 10))
    x = torch.rand(5, 1, 8, 16)
    with torch.no_grad():
        expected = 3.0 * (net.features(x) @ torch.as_tensor(weight, dtype=torch.float32) - 0.5)
        torch.testing.assert_close(CalibratedSphereNet(net, weight)(x), expected)
    with pytest.raises(ValueError, match="shape"):
        CalibratedSphereNet(net, weight[:, :3])


def test_spherefed_client_sends_model_only_and_statistics_of_its_own_data():
    config = RunConfig(algorithm="spherefed", local_epochs=1)
    client = make_client(SphereFedClient, config)
    initial = client.get_parameters({})
    assert len(initial) == len(client.keys) == len(shared_keys(client.model))
    arrays, n, _ = client.fit(initial, {"server-round": 1})
    assert n == len(client.train_set)
    assert [a.shape for a in arrays] == [a.shape for a in initial]  # the backbone only, no classifier

    # Statistics of the *received* model on the client's own training data.
    loss, n_eval, metrics = client.evaluate(initial, {CALIBRATE_KEY: True})
    d, c = 64, 10
    gram, cross = decode_matrix(metrics[GRAM_KEY], (d, d)), decode_matrix(metrics[CROSS_KEY], (d, c))
    fresh = make_client(SphereFedClient, config)
    fresh.receive(initial, {})
    z = sphere_features(fresh.model, fresh.train_set, torch.device("cpu"), 512)
    np.testing.assert_allclose(gram, z.T @ z, atol=1e-9)
    np.testing.assert_allclose(cross, z.T @ fresh.train_set.labels.astype(np.float64), atol=1e-9)
    assert n_eval == len(client.train_set) and np.trace(gram) == pytest.approx(n_eval)  # unit features
    assert GRAM_KEY not in client.evaluate(initial, {CALIBRATE_KEY: False})[2]


def test_spherefed_inprocess_records_calibrated_and_uncalibrated_metrics(inprocess_run):
    nodes = 3
    _, rows, summary = inprocess_run({"algorithm": "spherefed", "local-epochs": 1, **SKEWED}, nodes=nodes, rounds=2)
    per_client = (64 * 64 + 64 * 10) * 8
    for row in rows:
        assert row["calibration_clients"] == nodes
        assert row["calibration_bytes_received"] == nodes * per_client
        assert row["bytes_received"] == row["calibration_bytes_received"] + row["bytes_sent"] - row["calibration_bytes_sent"]
        assert {"test_macro_auc", "uncalibrated_test_macro_auc", "val_macro_auc"} <= set(row)
    assert math.isfinite(summary["final"]["macro_auc"])


def test_spherefed_calibrate_only_after_last_round(inprocess_run):
    overrides = {"algorithm": "spherefed", "local-epochs": 1, "spherefed-calibrate-every": 0, **SKEWED}
    _, rows, summary = inprocess_run(overrides, nodes=3, rounds=2)
    assert "test_macro_auc" not in rows[0] and "uncalibrated_test_macro_auc" in rows[0]
    assert "calibration_bytes_sent" not in rows[0]
    assert "test_macro_auc" in rows[1] and summary["best_round"] == 2


# ---------------------------------------------------------------- FedLGT: label embeddings
@pytest.mark.parametrize("dataset", ["ml-digits", "ml-cifar10", "ml-dermamnist", "voc2012", "chestx-ray14"])
def test_stored_label_embeddings_cover_the_multilabel_datasets(dataset):
    record = json.loads(embedding_file(dataset).read_text())
    found = read_text_embeddings(dataset, record["class_names"])
    assert not isinstance(found, str), found
    labels, states = found
    assert labels.shape == (len(record["class_names"]), 384) and states.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(labels, axis=1), 1.0, atol=1e-4)
    assert record["state_texts"] == ["negative", "positive"]


def test_ml_digits_embeddings_match_the_dataset_class_names():
    bundle = load_dataset(RunConfig())
    labels, states = read_text_embeddings("ml-digits", bundle.class_names)
    assert labels.shape == (bundle.num_classes, 384)
    record = json.loads(embedding_file("ml-digits").read_text())
    assert record["texts"][0] == "The photo contains zero." and record["texts"][9] == "The photo contains nine."


def test_isometric_reduce_preserves_inner_products():
    vectors = np.random.default_rng(0).normal(size=(12, 384))
    reduced = isometric_reduce(vectors, 64, seed=3)
    assert reduced.shape == (12, 64)
    np.testing.assert_allclose(reduced @ reduced.T, vectors @ vectors.T, atol=1e-9)
    np.testing.assert_array_equal(reduced, isometric_reduce(vectors, 64, seed=3))


def test_missing_embeddings_fall_back_to_random_orthonormal_with_warning(caplog):
    label_and_state_embeddings.cache_clear()
    with caplog.at_level(logging.WARNING):
        labels, states = label_and_state_embeddings("no-such-dataset", ("a", "b", "c"), 16, "text", 0)
    assert "no stored label embeddings" in caplog.text
    vectors = torch.cat([labels, states])
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(5), atol=1e-5, rtol=0)
    # Class names that differ from the stored ones are not matched by position either.
    with caplog.at_level(logging.WARNING):
        label_and_state_embeddings("ml-digits", tuple("abcdefghij"), 16, "text", 0)
    assert "was made for class names" in caplog.text


# ---------------------------------------------------------------- FedLGT: label states and loss
def test_client_aware_states_hand_case():
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    known = torch.tensor([[True, True, False, True]])
    global_probs = torch.tensor([[0.9, 0.49, 0.9, 0.53]])  # label 1 uncertain at margin 0.02
    states = client_aware_states(targets, known, global_probs, margin=0.02)
    assert states.tolist() == [[POSITIVE, UNKNOWN, UNKNOWN, NEGATIVE]]
    assert client_aware_states(targets, known, global_probs, margin=0.0).tolist() == [[POSITIVE, NEGATIVE, UNKNOWN, NEGATIVE]]


def test_unknown_label_bce_hand_case():
    logits = torch.tensor([[0.0, 2.0, -1.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    states = torch.tensor([[UNKNOWN, POSITIVE, UNKNOWN]])
    loss = unknown_label_bce(logits, targets, states)
    expected = (math.log(2.0) + math.log(1.0 + math.exp(-1.0))) / 2  # entries 0 and 2 only
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert logits.grad[0, 1] == 0.0  # a known label contributes nothing
    all_known = torch.full_like(states, POSITIVE)
    assert float(unknown_label_bce(logits, targets, all_known)) == 0.0


def test_sample_known_mask_bounds():
    torch.manual_seed(0)
    mask = sample_known_mask(500, 10, 0.75)
    counts = mask.sum(dim=1)
    assert counts.max() == 7 and counts.min() == 0  # floor(0.75 * 10)
    assert not sample_known_mask(50, 10, 0.0).any()


# ---------------------------------------------------------------- FedLGT: the network and the client
def test_fedlgt_embeddings_fixed_and_not_sent():
    config = RunConfig(algorithm="fedlgt", local_epochs=1, fedlgt_layers=1)
    client = make_client(FedLGTClient, config)
    model = client.model
    labels, _ = label_and_state_embeddings("ml-digits", tuple(client.bundle.class_names), 64, "text", config.seed)
    torch.testing.assert_close(model.label_embeddings, labels)
    assert model.label_embeddings.shape == (10, 64) and model.state_table.shape == (3, 64)
    assert not {"label_embeddings", "state_table"} & set(model.state_dict())
    assert all(not p is model.label_embeddings for p in model.parameters())
    before = (model.label_embeddings.clone(), model.state_table.clone())
    initial = client.get_parameters({})
    arrays, _, metrics = client.fit(initial, {"server-round": 1})
    assert [a.shape for a in arrays] == [a.shape for a in initial] and len(arrays) == len(shared_keys(model))
    torch.testing.assert_close(model.label_embeddings, before[0])
    torch.testing.assert_close(model.state_table, before[1])
    assert 0.0 < metrics["train_unknown_fraction"] <= 1.0
    # The text embeddings keep their geometry in the model's token space.
    text, _ = read_text_embeddings("ml-digits", client.bundle.class_names)
    np.testing.assert_allclose((labels @ labels.T).numpy(), text @ text.T, atol=1e-4)


def test_fedlgt_state_embeddings_change_the_prediction():
    config = RunConfig(algorithm="fedlgt", fedlgt_layers=1)
    model = get_algorithm("fedlgt").build_model(config, load_dataset(config)).eval()
    x = torch.rand(2, 1, 8, 16)
    unknown = model(x)
    assert unknown.shape == (2, 10)
    torch.testing.assert_close(model(x, torch.zeros(2, 10, dtype=torch.long)), unknown)
    assert not torch.allclose(model(x, torch.full((2, 10), POSITIVE)), unknown)


def test_fedlgt_rejects_single_label_data():
    config = RunConfig(algorithm="fedlgt", dataset="lt-digits")
    with pytest.raises(ConfigError, match="multi-label"):
        get_algorithm("fedlgt").build_model(config, load_dataset(config))


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="fedlgt-max-known-fraction"):
        RunConfig(fedlgt_max_known_fraction=1.0).validate()
    with pytest.raises(ConfigError, match="fedlgt-label-embeddings"):
        RunConfig(fedlgt_label_embeddings="clip").validate()
    with pytest.raises(ConfigError, match="spherefed-scale"):
        RunConfig(spherefed_scale=0.0).validate()
    with pytest.raises(ConfigError, match="spherefed-calibrate-every"):
        RunConfig(spherefed_calibrate_every=-1).validate()


def test_fedlgt_inprocess_two_rounds(inprocess_run):
    _, rows, summary = inprocess_run({"algorithm": "fedlgt", "local-epochs": 1, "fedlgt-layers": 1, **SKEWED}, nodes=3, rounds=2)
    assert all(row["clients_ok"] == 3 for row in rows)
    assert rows[0]["bytes_sent"] == rows[0]["bytes_received"] > 0
    assert math.isfinite(summary["final"]["macro_auc"])


# ---------------------------------------------------------------- real Flower simulations
@pytest.mark.slow
def test_spherefed_flower_simulation_10_nodes(flower_run):
    _, rows, summary = flower_run({"algorithm": "spherefed", "local-epochs": 1}, nodes=10, rounds=2)
    assert all(row["clients_ok"] == 10 and row["calibration_clients"] == 10 for row in rows)
    assert summary["final"]["macro_auc"] > 0.5


@pytest.mark.slow
def test_fedlgt_flower_simulation_10_nodes(flower_run):
    _, rows, summary = flower_run({"algorithm": "fedlgt", "local-epochs": 1}, nodes=10, rounds=2)
    assert all(row["clients_ok"] == 10 for row in rows)
    assert all(math.isfinite(v) for v in summary["final"].values())

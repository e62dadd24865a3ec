"""The NumPyClient every algorithm's client subclasses, with the shared local train/evaluate loops.

A client is rebuilt for every message (that is how Flower's ClientApp works), so anything that must
outlive a round lives in ``context.state``. This base class does that for model tensors: every
``state_dict`` entry that does not travel (see the declaration's ``travelling_keys``) is saved after
``fit`` and restored when the client is built, which is all FedPer, FedBN or FedLoGe's local head
need. Algorithms with other private objects (control variates, a personal model) override
:meth:`private_arrays` / :meth:`load_private_arrays`.

Hooks for subclasses, in the order a round uses them: ``receive`` (apply the server's arrays),
``local_train`` (by default ``local-epochs`` of ``loss``), ``personalized_model`` (for federated
evaluation). The network and which of its tensors travel come from the algorithm's declaration
(``setup.algorithm.build_model`` / ``shared_keys``), which the server uses too.

What happens around every message (node state on disk, fault injection, the partition id in
every reply) is composed in :func:`fedapp.client_app.client_fn`, where the ClientApp is built;
:class:`PartitionClient` is the innermost of those layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.client import Client, NumPyClient
from flwr.common import (
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
    Status,
)
from torch import nn

from fedapp.algorithm import Algorithm
from fedapp.config import RunConfig
from fedapp.data import FederatedSplit
from fedapp.data.augment import build_augment
from fedapp.loops import (
    TrainOptions,
    evaluate_model,
    make_loader,
    make_optimizer,
    prepare_model,
    task_loss,
    train_epochs,
)
from fedapp.params import get_arrays, set_arrays
from fedapp.protocol import NUM_PARTITIONS_METRIC, PARTITION_METRIC, server_round_of

PRIVATE_MODEL_KEY = "private-model"


@dataclass(frozen=True)
class ClientSetup:
    """What a client is built from: the run config, its partition, its device, its state and its algorithm."""

    config: RunConfig
    partition_id: int
    split: FederatedSplit
    device: torch.device
    state: RecordDict
    algorithm: Algorithm


class BaseClient(NumPyClient):
    """Plain local training (FedAvg's client) plus the plumbing every algorithm shares."""

    def __init__(self, setup: ClientSetup) -> None:
        self.setup = setup
        self.config = setup.config
        self.partition_id = setup.partition_id
        self.device = setup.device
        self.state = setup.state
        self.bundle = setup.split.bundle
        self.train_set = setup.split.train_set(setup.partition_id)
        # evaluate-test=false (tuning): no local test set, so nothing on the client can read the test split.
        self.local_test_set = setup.split.local_test_set(setup.partition_id) if self.config.evaluate_test else None
        self.train_options = TrainOptions.from_config(self.config)
        self.model = prepare_model(
            setup.algorithm.build_model(self.config, self.bundle).to(self.device), self.train_options
        )
        self.keys = setup.algorithm.shared_keys(self.model)
        if PRIVATE_MODEL_KEY in self.state:
            private = self.state[PRIVATE_MODEL_KEY]
            self.model.load_state_dict(private.to_torch_state_dict(), strict=False)
        self.load_private_arrays()

    # ------------------------------------------------------------------ hooks
    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        """The local objective: ``(loss, {term: value})``; the task loss by default."""
        return task_loss(self.bundle.task)(model, images, targets)

    def receive(self, parameters: list[np.ndarray], config: dict[str, Any]) -> None:
        """Load the server's arrays into the model."""
        set_arrays(self.model, self.keys, parameters)

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        """``local-epochs`` passes over the local data with the configured optimizer."""
        optimizer = self.make_optimizer(self.model.parameters())
        return train_epochs(
            self.model, self.train_loader(config), optimizer, self.loss,
            self.config.local_epochs, self.device, options=self.train_options,
        )

    def personalized_model(self) -> nn.Module:
        """The model this client would deploy locally; the global model unless overridden."""
        return self.model

    def private_arrays(self) -> dict[str, np.ndarray]:
        """Extra private arrays to keep in ``context.state`` (none by default)."""
        return {}

    def load_private_arrays(self) -> None:
        """Restore what :meth:`private_arrays` saved (nothing by default)."""

    # ---------------------------------------------------------------- helpers
    def make_optimizer(self, params) -> torch.optim.Optimizer:
        cfg = self.config
        return make_optimizer(params, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)

    def train_loader(self, config: dict[str, Any]) -> torch.utils.data.DataLoader:
        """Shuffled, augmented (run-config ``augment``) local data; order and augmentation depend on
        (seed, round, partition) only."""
        server_round = server_round_of(config)
        seed = self.config.seed * 1_000_003 + server_round * 1009 + self.partition_id
        torch.manual_seed(seed)
        return make_loader(self.train_set, self.config.batch_size, shuffle=True, seed=seed,
                           num_workers=self.config.num_workers, device=self.device, augment=self.augmentation())

    def augmentation(self):
        """The training batch augmentation of this run (None: ``augment`` resolves to ``none``)."""
        bundle = self.bundle
        return build_augment(self.config.augment, bundle.name, bundle.input_shape, bundle.pad_value)

    def save_state(self) -> None:
        """Keep every non-travelling model tensor and the extra private arrays in ``context.state``."""
        shared = set(self.keys)
        private = {k: v for k, v in self.model.state_dict().items() if k not in shared}
        if private:
            self.state[PRIVATE_MODEL_KEY] = ArrayRecord(private)
        for name, array in self.private_arrays().items():
            self.state[name] = ArrayRecord({name: torch.as_tensor(array)})

    def load_state_array(self, name: str) -> np.ndarray | None:
        """One array saved by :meth:`private_arrays` under ``name``, or None before the first save."""
        if name not in self.state:
            return None
        return self.state[name].to_torch_state_dict()[name].numpy()

    # ----------------------------------------------------------- NumPyClient
    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return get_arrays(self.model, self.keys)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]):
        self.receive(parameters, config)
        metrics = self.local_train(config)
        self.save_state()
        return self.get_parameters(config), len(self.train_set), {f"train_{k}": v for k, v in metrics.items()}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]):
        """Personalized evaluation on the local test set; ``loss`` is the error rate."""
        if self.local_test_set is None:
            raise RuntimeError(f"dataset {self.bundle.name!r} has no local test sets (multi-label)")
        self.receive(parameters, config)
        metrics = evaluate_model(
            self.personalized_model(), self.local_test_set, self.bundle.task, self.device,
            self.bundle.class_counts(), self.config.eval_batch_size,
        )
        return 1.0 - metrics["accuracy"], len(self.local_test_set), {"accuracy": metrics["accuracy"]}


class PartitionClient(Client):
    """Flower's Client for one partition: builds the algorithm's NumPyClient when a message needs it
    and tags every fit/evaluate reply with the partition (see :mod:`fedapp.protocol`).

    Building late lets the layers around it (``fedapp.node_state.NodeStateClient``) restore
    ``context.state`` first; ``get_properties`` answers without building anything.
    """

    def __init__(self, build: Callable[[], BaseClient], partition_id: int, num_partitions: int) -> None:
        self.build = build
        self.partition_id = partition_id
        self.num_partitions = num_partitions
        self._numpy_client: BaseClient | None = None
        self._client: Client | None = None

    def numpy_client(self) -> BaseClient:
        """The algorithm's NumPyClient, built on first use."""
        if self._numpy_client is None:
            self._numpy_client = self.build()
        return self._numpy_client

    def client(self) -> Client:
        if self._client is None:
            self._client = self.numpy_client().to_client()
        return self._client

    def tags(self) -> dict[str, int]:
        return {PARTITION_METRIC: self.partition_id, NUM_PARTITIONS_METRIC: self.num_partitions}

    def get_properties(self, ins: GetPropertiesIns) -> GetPropertiesRes:
        return GetPropertiesRes(Status(Code.OK, ""), {PARTITION_METRIC: self.partition_id})

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        return self.client().get_parameters(ins)

    def fit(self, ins: FitIns) -> FitRes:
        res = self.client().fit(ins)
        res.metrics.update(self.tags())
        return res

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        res = self.client().evaluate(ins)
        res.metrics.update(self.tags())
        return res

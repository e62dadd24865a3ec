"""The NumPyClient every algorithm's client subclasses, with the shared local train/evaluate loops.

A client is rebuilt for every message (that is how Flower's ClientApp works), so anything that must
outlive a round lives in ``context.state``. This base class does that for model tensors: every
``state_dict`` entry that does not travel (see :meth:`BaseClient.shared_keys_of`) is saved after
``fit`` and restored when the client is built, which is all FedPer, FedBN or FedLoGe's local head
need. Algorithms with other private objects (control variates, a personal model) override
:meth:`private_arrays` / :meth:`load_private_arrays`.

Hooks for subclasses, in the order a round uses them: ``build_model`` (classmethod, also used by
the server), ``shared_keys_of`` (classmethod), ``receive`` (apply the server's arrays),
``local_train`` (by default ``local-epochs`` of ``loss``), ``personalized_model`` (for federated
evaluation).

Around every fit/evaluate (in :meth:`BaseClient.to_client`, so it holds for subclasses that
override ``fit`` too):

- ``state-dir`` (run config, or node config per SuperNode): on the first message a node gets in a
  run, its ``context.state`` is restored from disk and the client rebuilt from it *before* any of
  its code runs; after each fit, ``context.state`` is written back (see :mod:`fedapp.node_state`).
  So a restarted SuperNode, or a resumed run, keeps its personalization.
- Fit and evaluate replies carry the bookkeeping metrics ``partition-id`` and ``num-partitions``
  (and ``get_properties`` answers ``partition-id``), so the server orders clients by partition, not
  by Flower's per-run node ids, its logs and ``metrics.jsonl`` (``partitions_ok``) name clients by
  partition, and it can redraw the partition (``plots/partition.png``) and file per-client metrics.
- ``fault-injection`` (a TESTING AID, off by default; :mod:`fedapp.faults`) makes a chosen client
  raise or send NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.client import NumPyClient
from torch import nn

from flwr.app import ConfigRecord
from flwr.client import Client
from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, ndarrays_to_parameters, parameters_to_ndarrays

from fedapp.checkpoint import decode_generations
from fedapp.config import RunConfig
from fedapp.data import FederatedSplit
from fedapp.faults import InjectedFault, fault_for
from fedapp.node_state import RESTORED_MARKER, NodeStateStore, load_into, warn_unrestorable
from fedapp.data.augment import build_augment
from fedapp.data.base import DatasetBundle
from fedapp.loops import (
    TrainOptions,
    evaluate_model,
    make_loader,
    make_optimizer,
    prepare_model,
    task_loss,
    train_epochs,
)
from fedapp.models.backbones import build_backbone
from fedapp.models.nets import PooledLinearNet
from fedapp.params import get_arrays, set_arrays, shared_keys

PRIVATE_MODEL_KEY = "private-model"
# Must equal strategies.base.SERVER_ROUND_KEY / GENERATIONS_KEY / PARTITION_METRIC /
# NUM_PARTITIONS_METRIC (clients do not import the server package).
SERVER_ROUND_KEY = "server-round"
GENERATIONS_KEY = "state-generations"
PARTITION_METRIC = "partition-id"
NUM_PARTITIONS_METRIC = "num-partitions"


@dataclass(frozen=True)
class ClientSetup:
    """What a client is built from: the run config, its partition, its device and its state."""

    config: RunConfig
    partition_id: int
    split: FederatedSplit
    device: torch.device
    state: RecordDict


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
        self.model = prepare_model(self.build_model(self.config, self.bundle).to(self.device), self.train_options)
        self.keys = self.shared_keys_of(self.model)
        if PRIVATE_MODEL_KEY in self.state:
            private = self.state[PRIVATE_MODEL_KEY]
            self.model.load_state_dict(private.to_torch_state_dict(), strict=False)
        self.load_private_arrays()

    # ------------------------------------------------------------------ hooks
    @classmethod
    def build_model(cls, config: RunConfig, bundle: DatasetBundle) -> nn.Module:
        """The algorithm's network; the server builds the same one for initialisation and evaluation."""
        backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
        return PooledLinearNet(backbone, backbone.out_dim, bundle.num_classes)

    @classmethod
    def shared_keys_of(cls, model: nn.Module) -> list[str]:
        """Names of the tensors that travel to and from the server, in order."""
        return shared_keys(model)

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
        server_round = int(config.get("server-round", 0))
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
    def get_properties(self, config: dict[str, Any]) -> dict[str, Any]:
        """``{"partition-id": k}``: the server orders clients by it (node ids change every run)."""
        return {PARTITION_METRIC: self.partition_id}

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

    # ------------------------------------------------- around every message
    def to_client(self) -> Client:
        """Flower's Client for this NumPyClient, with node-state restore/persist and fault injection."""
        client = super().to_client()
        numpy_fit, numpy_evaluate = client.fit, client.evaluate

        def fit(ins: FitIns) -> FitRes:
            actual = self.restored(ins.config)
            client.numpy_client = actual  # type: ignore[attr-defined]
            server_round = int(ins.config.get(SERVER_ROUND_KEY, 0))
            fault = fault_for(self.config.fault_injection, self.partition_id, server_round)
            if fault == "raise":
                raise InjectedFault(f"fault-injection: partition {self.partition_id} raises in round {server_round}")
            res = numpy_fit(ins)
            actual.persist_node_state(ins.config)
            if fault == "nan":
                poisoned = [np.full_like(a, np.nan) if np.issubdtype(a.dtype, np.floating) else a
                            for a in parameters_to_ndarrays(res.parameters)]
                res.parameters = ndarrays_to_parameters(poisoned)
            res.metrics.update(self.bookkeeping_metrics())
            return res

        def evaluate(ins: EvaluateIns) -> EvaluateRes:
            client.numpy_client = self.restored(ins.config)  # type: ignore[attr-defined]
            res = numpy_evaluate(ins)
            res.metrics.update(self.bookkeeping_metrics())
            return res

        client.fit = fit  # type: ignore[method-assign]
        client.evaluate = evaluate  # type: ignore[method-assign]
        return client

    def bookkeeping_metrics(self) -> dict[str, int]:
        """Which partition replied, and of how many (the server files per-client results by it)."""
        return {PARTITION_METRIC: self.partition_id, NUM_PARTITIONS_METRIC: len(self.setup.split.client_train)}

    def restored(self, config: dict[str, Any]) -> "BaseClient":
        """This client, or, on a node's first message in a run, one rebuilt from its ``state-dir`` state."""
        if not self.config.state_dir or RESTORED_MARKER in self.state:
            return self
        self.state[RESTORED_MARKER] = ConfigRecord({"round": int(config.get(SERVER_ROUND_KEY, 0))})
        chain = decode_generations(str(config.get(GENERATIONS_KEY, "")))
        if not chain:
            warn_unrestorable(self.partition_id, f"the server sent no {GENERATIONS_KEY!r} config key")
            return self
        found = NodeStateStore(self.config.state_dir, self.partition_id).restore(chain)
        if found is None:
            return self
        saved, saved_round = found
        load_into(self.state, saved)
        self.state[RESTORED_MARKER] = ConfigRecord({"round": int(config.get(SERVER_ROUND_KEY, 0)),
                                                    "saved-round": saved_round})
        return type(self)(self.setup)  # built from the restored context.state, like a live node

    def persist_node_state(self, config: dict[str, Any]) -> None:
        """Write ``context.state`` to ``state-dir`` after a fit (no-op without ``state-dir``)."""
        if not self.config.state_dir:
            return
        chain = decode_generations(str(config.get(GENERATIONS_KEY, "")))
        if not chain:
            warn_unrestorable(self.partition_id, f"not saved: the server sent no {GENERATIONS_KEY!r} config key")
            return
        NodeStateStore(self.config.state_dir, self.partition_id).save(
            self.state, int(config.get(SERVER_ROUND_KEY, 0)), chain, self.config.checkpoint_every
        )

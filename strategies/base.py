"""What every strategy of this app shares, on top of Flower's FedAvg.

- **Update validation**: each client update must have the global model's number of arrays, shapes
  and dtypes, and finite values; bad updates are dropped with a logged reason and counted.
- **Bookkeeping**: bytes sent and received, round wall time, weighted means of the clients'
  ``train_*`` metrics, server-side evaluation on the global validation and test sets, and
  personalized accuracy (PM) from federated evaluation; one line per round goes to the
  :class:`~fedapp.results.RunRecorder`, which writes ``metrics.jsonl`` and, after the last round,
  ``summary.json`` and the plots.

Subclasses override the Flower hooks they change (``configure_fit``, ``aggregate_fit``, ...) or the
smaller hooks here: :meth:`aggregate_updates` (the aggregation rule) and :meth:`global_model` (the
model the server evaluates).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any, Callable

import numpy as np
import torch
from flwr.common import (
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.strategy.aggregate import aggregate_inplace
from torch import nn

from fedapp.config import RunConfig
from fedapp.data import HeldOut
from fedapp.loops import evaluate_model
from fedapp.params import get_arrays, payload_bytes, set_arrays
from fedapp.results import RunRecorder


@dataclass
class ServerSetup:
    """What a strategy is built from (see ``fedapp.server_app``)."""

    config: RunConfig
    data: HeldOut  # global test set + validation split
    model: nn.Module  # the global model's architecture, with its initial weights
    keys: list[str]  # names of the travelling tensors, in order
    device: torch.device
    recorder: RunRecorder
    extras: dict[str, Any] = field(default_factory=dict)


def check_update(
    arrays: list[np.ndarray], reference: list[np.ndarray], max_norm: float | None = None
) -> str | None:
    """Why an update cannot be aggregated, or None if it can.

    Checks, in order: the number of arrays, each shape and dtype against ``reference``, finiteness,
    and (if ``max_norm``) the global L2 norm of the update.
    """
    if len(arrays) != len(reference):
        return f"expected {len(reference)} arrays, got {len(arrays)}"
    for index, (array, expected) in enumerate(zip(arrays, reference)):
        if array.shape != expected.shape:
            return f"array {index} has shape {array.shape}, expected {expected.shape}"
        if array.dtype != expected.dtype:
            return f"array {index} has dtype {array.dtype}, expected {expected.dtype}"
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            return f"array {index} has non-finite values"
    if max_norm is not None:
        norm = float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))
        if norm > max_norm:
            return f"update norm {norm:.3g} exceeds the bound {max_norm:.3g}"
    return None


class FederatedStrategy(FedAvg):
    """FedAvg plus validation and bookkeeping; the base of every strategy in ``strategies/``."""

    def __init__(self, setup: ServerSetup, **fedavg_kwargs: Any) -> None:
        self.setup = setup
        self.config = setup.config
        self.recorder = setup.recorder
        task = setup.data.bundle.task
        initial = get_arrays(setup.model, setup.keys)
        defaults: dict[str, Any] = dict(
            fraction_fit=self.config.fraction_fit,
            # Personalized accuracy (PM) is defined for single-label data only.
            fraction_evaluate=1.0 if task == "singlelabel" else 0.0,
            min_fit_clients=1,
            min_evaluate_clients=1,
            min_available_clients=1,
            initial_parameters=ndarrays_to_parameters(initial),
            on_fit_config_fn=self.fit_config,
            on_evaluate_config_fn=self.fit_config,
        )
        defaults.update(fedavg_kwargs)
        super().__init__(**defaults)
        self.reference = initial  # shapes and dtypes every update must match
        self.current = initial
        self._round_start = 0.0

    # ------------------------------------------------------------- small hooks
    def fit_config(self, server_round: int) -> dict[str, Scalar]:
        """The config dict sent with every fit/evaluate instruction."""
        return {"server-round": server_round}

    def aggregate_updates(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[np.ndarray]:
        """The aggregation rule over validated results: FedAvg's weighted mean by default."""
        return aggregate_inplace(results)

    def global_model(self, arrays: list[np.ndarray]) -> nn.Module:
        """The model the server evaluates for ``arrays`` (the shared model by default)."""
        set_arrays(self.setup.model, self.setup.keys, arrays)
        return self.setup.model

    # ------------------------------------------------------------ Flower hooks
    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._round_start = time.perf_counter()
        self.recorder.start_round(server_round)
        instructions = super().configure_fit(server_round, parameters, client_manager)
        sent = sum(payload_bytes(parameters_to_ndarrays(ins.parameters)) for _, ins in instructions)
        self.recorder.add(server_round, bytes_sent=sent, clients_selected=len(instructions))
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        accepted, rejected = self.validate_results(server_round, results)
        received = sum(payload_bytes(parameters_to_ndarrays(res.parameters)) for _, res in results)
        train_metrics = weighted_means([(res.num_examples, res.metrics) for _, res in accepted])
        self.recorder.add(
            server_round, bytes_received=received, clients_ok=len(accepted),
            clients_rejected=rejected, clients_failed=len(failures), **train_metrics,
        )
        for failure in failures:
            log(WARNING, "round %s: a client failed: %r", server_round, _describe(failure))
        if not accepted:
            log(WARNING, "round %s: no valid update; the global model stays as it was", server_round)
            return None, {}
        self.current = self.aggregate_updates(server_round, accepted)
        return ndarrays_to_parameters(self.current), train_metrics

    def validate_results(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> tuple[list[tuple[ClientProxy, FitRes]], int]:
        """The results that pass :func:`check_update`, and how many were rejected (logged)."""
        accepted = []
        # Replies arrive in completion order; a fixed order makes aggregation bit-reproducible.
        for proxy, res in sorted(results, key=lambda pair: str(pair[0].cid)):
            reason = check_update(parameters_to_ndarrays(res.parameters), self.reference)
            if reason is None and res.num_examples <= 0:
                reason = f"num_examples={res.num_examples}"
            if reason is None:
                accepted.append((proxy, res))
            else:
                log(WARNING, "round %s: rejected the update of node %s: %s", server_round, proxy.cid, reason)
        return accepted, len(results) - len(accepted)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """Server-side metrics of the global model on the validation and the global test set."""
        if server_round == 0:
            return None  # no evaluation of the untrained initial model
        model = self.global_model(parameters_to_ndarrays(parameters))
        metrics = self.server_metrics(model)
        self.recorder.add(server_round, **metrics)
        if self.fraction_evaluate == 0.0:
            self.end_round(server_round)
        main = self.recorder.main_metric
        return 1.0 - metrics[f"test_{main}"], metrics

    def server_metrics(self, model: nn.Module) -> dict[str, float]:
        """``val_*`` and ``test_*`` metrics of ``model``."""
        data, cfg = self.setup.data, self.config
        counts = data.bundle.class_counts()
        metrics: dict[str, float] = {}
        sets = {"test": data.bundle.test}
        if len(data.validation_indices):
            sets["val"] = data.validation
        for prefix, dataset in sets.items():
            values = evaluate_model(
                model, dataset, data.bundle.task, self.setup.device, counts,
                cfg.eval_batch_size, cfg.many_shot_min, cfg.few_shot_max,
            )
            metrics.update({f"{prefix}_{k}": v for k, v in values.items()})
        return metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """PM: the unweighted mean over clients of their personalized local-test accuracy."""
        accuracies = [float(res.metrics["accuracy"]) for _, res in results]
        pm = float(np.mean(accuracies)) if accuracies else float("nan")
        self.recorder.add(server_round, test_pm=pm, eval_clients=len(accuracies), eval_failed=len(failures))
        self.end_round(server_round)
        return (1.0 - pm if accuracies else None), {"pm": pm}

    def end_round(self, server_round: int) -> None:
        self.recorder.add(server_round, round_seconds=time.perf_counter() - self._round_start)
        self.recorder.end_round(server_round)
        if server_round == self.config.num_server_rounds:
            self.recorder.finish()


def weighted_means(pairs: list[tuple[int, dict[str, Scalar]]]) -> dict[str, float]:
    """Example-weighted mean of each numeric metric the clients returned."""
    total = sum(n for n, _ in pairs)
    if total == 0:
        return {}
    names = sorted({k for _, m in pairs for k, v in m.items() if isinstance(v, (int, float))})
    return {name: float(sum(n * float(m.get(name, 0.0)) for n, m in pairs) / total) for name in names}


def _describe(failure: Any) -> str:
    if isinstance(failure, BaseException):
        return repr(failure)
    proxy, res = failure
    return f"node {proxy.cid}: {res.status.message}"


StrategyFactory = Callable[[ServerSetup], FederatedStrategy]

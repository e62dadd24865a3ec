"""What every strategy of this app shares, on top of Flower's FedAvg.

Longer than 350 lines because it is the one class Flower's server loop calls in every phase of a
round (configure, screen, aggregate, evaluate, checkpoint); its pure parts live beside it in
:mod:`strategies.screening`, :mod:`strategies.sampling` and :mod:`strategies.bookkeeping`.

- **Update validation**: each client update must have the expected number of arrays, shapes and
  dtypes (``self.reference``), finite values and, with ``max-update-norm`` > 0, an update delta
  ``||w_k - w_global||_2`` within the bound (over the model arrays ``self.current``; extra arrays a
  strategy appends, such as control variates, are checked for shape, dtype and finiteness only).
  Bad updates are dropped with the client id and the reason logged, and counted.
- **Partial participation**: ``fraction-fit``/``fraction-evaluate`` of the connected clients are
  sampled each round, with a seeded draw per (seed, round, attempt) over the clients ordered by
  *partition id*, so that a run, a repeated run and a resumed run sample the same partitions;
  ``min-available-clients`` must be connected first.
- **A fixed order**: replies are aggregated in partition-id order. Flower's node ids are random
  for every ``flwr run`` (and a resumed run gets new ones), so neither the draw nor the floating-point
  sum may depend on them. Fit and evaluate replies carry ``partition-id``; before a partial sample,
  clients whose partition is not known yet are asked once (``get_properties``). A round with
  fewer valid updates than ``min-fit-clients`` is never aggregated: it is skipped (the global model
  stays), retried with a new sample, or stops the run, as ``on-insufficient-clients`` says
  (``skip``, ``retry`` up to ``round-retries`` times then skip, ``fail``).
- **Checkpoints**: every ``checkpoint-every`` rounds and after the last one,
  ``<run dir>/checkpoint.npz`` (see :mod:`fedapp.checkpoint`); ``resume=<run dir>`` restores it.
- **Bookkeeping**: bytes sent and received, round wall time, weighted means of the clients'
  ``train_*`` metrics, server-side evaluation on the global validation and test sets, personalized
  accuracy (PM) from federated evaluation, and per round ``clients_selected``, ``clients_ok``,
  ``clients_rejected``, ``clients_failed``, ``round_skipped``; one line per round goes to the
  :class:`~fedapp.results.RunRecorder` (``metrics.jsonl``, then ``summary.json`` and the plots).

Hooks for subclasses: :meth:`aggregate_updates` (the aggregation rule), :meth:`global_model` (the
model the server evaluates), :meth:`fit_config`, :meth:`server_metrics`, :meth:`end_round`,
:meth:`strategy_state` / :meth:`load_strategy_state` (what a checkpoint must carry besides the
global parameters), plus Flower's own ``configure_fit``/``configure_evaluate``/``evaluate``/
``aggregate_evaluate`` (never ``aggregate_fit``: it screens the updates; a test checks that no
declared strategy overrides it).

Contract for subclasses:

- :meth:`aggregate_fit` is the one place that screens a round's replies (validation, failure
  logging, the ``min-fit-clients`` rule); :meth:`aggregate_updates` then receives the accepted
  ``(proxy, FitRes)`` pairs, sorted by partition id, and what it returns becomes ``self.current``
  (the arrays the next round sends and the checkpoint saves). Override ``aggregate_updates``, not
  ``aggregate_fit``.
- A strategy whose clients return more arrays than the global model (e.g. model + control-variate
  delta) extends ``self.reference`` in ``__init__`` with arrays of the extra shapes/dtypes.
- State that lives only in the strategy (server control variates, SSE-C, sums of Fisher terms,
  ...) must be returned by :meth:`strategy_state` and restored by :meth:`load_strategy_state`, or a
  resumed run silently starts it over.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any, Sequence

import numpy as np
import torch
from flwr.common import (
    EvaluateIns,
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

from fedapp.checkpoint import (
    Checkpoint,
    CheckpointError,
    capture_rng,
    encode_generations,
    new_generation,
    restore_rng,
    save_checkpoint,
)
from fedapp.config import RunConfig
from fedapp.data import HeldOut, federate
from fedapp.loops import evaluate_model
from fedapp.params import get_arrays, payload_bytes, set_arrays
from fedapp.protocol import (
    BOOKKEEPING_METRICS,
    GENERATIONS_KEY,
    NUM_PARTITIONS_METRIC,
    PARTITION_METRIC,
    SERVER_ROUND_KEY,
)
from fedapp.results import RunRecorder
from strategies.bookkeeping import client_mean, per_client_multilabel_scores, sent_bytes, weighted_means
from strategies.sampling import PartitionOrder, SeededClientManager
from strategies.screening import check_update


@dataclass
class ServerSetup:
    """What a strategy is built from (see ``fedapp.server_app``)."""

    config: RunConfig
    data: HeldOut  # global test set + validation split
    model: nn.Module  # the global model's architecture, with its initial weights
    keys: list[str]  # names of the travelling tensors, in order
    device: torch.device
    recorder: RunRecorder
    checkpoint: Checkpoint | None = None  # set when resuming (resume=<run dir>)


class InsufficientClientsError(RuntimeError):
    """A round got fewer valid updates than ``min-fit-clients`` under ``on-insufficient-clients=fail``."""


class FederatedStrategy(FedAvg):
    """FedAvg plus validation, partial participation, checkpoints and bookkeeping.

    The base of every strategy in ``strategies/``.
    """

    has_global_model = True  # False where no global model exists (FedPer, FedRep): tables print GM as "–"

    def __init__(self, setup: ServerSetup, **fedavg_kwargs: Any) -> None:
        self.setup = setup
        self.config = setup.config
        self.recorder = setup.recorder
        cfg = self.config
        task = setup.data.bundle.task
        initial = get_arrays(setup.model, setup.keys)
        defaults: dict[str, Any] = dict(
            fraction_fit=cfg.fraction_fit,
            # Personalized accuracy (PM) is defined for single-label data only.
            # Without the test split (evaluate-test=false) there are no local test sets either.
            fraction_evaluate=cfg.fraction_evaluate if task == "singlelabel" and cfg.evaluate_test else 0.0,
            min_fit_clients=cfg.min_fit_clients,
            min_evaluate_clients=1,
            min_available_clients=cfg.min_available_clients,
            initial_parameters=ndarrays_to_parameters(initial),
            on_fit_config_fn=self.fit_config,
            on_evaluate_config_fn=self.fit_config,
        )
        defaults.update(fedavg_kwargs)
        super().__init__(**defaults)
        self.reference = initial  # shapes and dtypes every update must match (subclasses may extend it)
        self.current = parameters_to_ndarrays(self.initial_parameters) if self.initial_parameters else initial
        checkpoint = setup.checkpoint
        self.first_round = checkpoint.server_round + 1 if checkpoint else 1
        self.generations = (
            checkpoint.generations + [new_generation(checkpoint.server_round)] if checkpoint else [new_generation()]
        )
        self._round_start = 0.0
        self._attempts: dict[int, int] = {}
        self._retry_round: int | None = None
        self.partitions = PartitionOrder()  # node id -> partition id, learnt from replies
        self.partition_counts: np.ndarray | None = None  # (K, C) training samples per client and class

    # ------------------------------------------------------------- small hooks
    def fit_config(self, server_round: int) -> dict[str, Scalar]:
        """The config dict sent with every fit/evaluate instruction."""
        return {SERVER_ROUND_KEY: server_round}

    def aggregate_updates(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[np.ndarray]:
        """The aggregation rule over validated results: FedAvg's weighted mean by default."""
        return aggregate_inplace(results)

    def global_model(self, arrays: list[np.ndarray]) -> nn.Module:
        """The model the server evaluates for ``arrays`` (the shared model by default)."""
        set_arrays(self.setup.model, self.setup.keys, arrays)
        return self.setup.model

    def strategy_state(self) -> dict[str, np.ndarray]:
        """The strategy's own state a checkpoint must carry, as named arrays (none by default).

        Called when a checkpoint is written, after the round's aggregation and evaluation. Names
        must be valid identifiers-ish (they become ``.npz`` member names); scalars go in 0-d or
        1-element arrays. Example, SCAFFOLD: ``{"c_0": c[0], "c_1": c[1], ...}``.
        """
        return {}

    def load_strategy_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`strategy_state` returned; called once, before the first resumed round.

        ``self.current`` already holds the checkpoint's parameters when this runs.
        """

    def update_reference(self, server_round: int) -> list[np.ndarray]:
        """The global arrays the updates of ``server_round`` started from (``max-update-norm``'s origin)."""
        return self.current

    # --------------------------------------------------------------- resume
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The initial parameters, or the checkpoint's when resuming (restores the strategy too)."""
        checkpoint = self.setup.checkpoint
        if checkpoint is None:
            return super().initialize_parameters(client_manager)
        expected = parameters_to_ndarrays(self.initial_parameters) if self.initial_parameters else self.current
        reason = check_update(checkpoint.parameters, expected)
        if reason is not None:
            raise CheckpointError(f"{checkpoint.path}: its parameters do not fit this model ({reason})")
        self.initial_parameters = None
        self.current = [np.array(a, copy=True) for a in checkpoint.parameters]
        self.load_strategy_state(dict(checkpoint.strategy_state))
        restore_rng(checkpoint.rng)
        log(INFO, "resumed %s from round %s (%s); next round %s of %s", self.recorder.run_dir,
            checkpoint.server_round, checkpoint.path, self.first_round, self.config.num_server_rounds)
        return ndarrays_to_parameters(self.current)

    def save_checkpoint(self, server_round: int, rows: list[dict[str, Any]] | None = None) -> None:
        """Write ``checkpoint.npz`` for the state after ``server_round`` (atomically)."""
        checkpoint = Checkpoint(
            server_round=server_round, parameters=list(self.current), strategy_state=dict(self.strategy_state()),
            config=dict(self.recorder.run_config), rows=list(self.recorder.rows if rows is None else rows),
            generations=list(self.generations), rng=capture_rng(),
        )
        path = save_checkpoint(self.recorder.run_dir, checkpoint)
        log(INFO, "round %s: checkpoint written to %s", server_round, path)

    def checkpoint_due(self, server_round: int) -> bool:
        every = self.config.checkpoint_every
        return every > 0 and (server_round % every == 0 or server_round == self.config.num_server_rounds)

    # ------------------------------------------------------------ Flower hooks
    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        attempt = self._attempts.get(server_round, -1) + 1
        self._attempts[server_round] = attempt
        if attempt == 0:
            self._round_start = time.perf_counter()
            self.recorder.start_round(server_round)
            self.recorder.add(server_round, round_skipped=False, clients_selected=0, clients_ok=0,
                              clients_rejected=0, clients_failed=0, bytes_sent=0, bytes_received=0)
        sampler = SeededClientManager(client_manager, self.config.seed, server_round, attempt, purpose=0,
                                      order=self.partitions.partition_order)
        instructions = super().configure_fit(server_round, parameters, sampler)
        instructions = [(proxy, FitIns(ins.parameters, self._with_run_keys(ins.config, server_round)))
                        for proxy, ins in instructions]
        self.recorder.increment(server_round, bytes_sent=sent_bytes(instructions),
                                clients_selected=len(instructions))
        if attempt > 0:
            self.recorder.add(server_round, round_attempts=attempt + 1)
        if len(instructions) < self.min_fit_clients:
            self.handle_insufficient(server_round, sampler.shortfall or (
                f"{len(instructions)} clients sampled, min-fit-clients={self.min_fit_clients}"))
            return []
        return instructions

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        if self.fraction_evaluate == 0.0:
            return []
        sampler = SeededClientManager(client_manager, self.config.seed, server_round, 0, purpose=1,
                                      order=self.partitions.partition_order)
        instructions = super().configure_evaluate(server_round, parameters, sampler)
        return [(proxy, EvaluateIns(ins.parameters, self._with_run_keys(ins.config, server_round)))
                for proxy, ins in instructions]

    def _with_run_keys(self, config: dict[str, Scalar], server_round: int) -> dict[str, Scalar]:
        return {SERVER_ROUND_KEY: server_round, **config, GENERATIONS_KEY: encode_generations(self.generations)}

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Screen the replies (:meth:`screen_results`), then aggregate the valid ones with :meth:`aggregate_updates`."""
        accepted = self.screen_results(server_round, results, failures)
        if accepted is None:
            return None, {}
        train_metrics = weighted_means([(res.num_examples, res.metrics) for _, res in accepted])
        self.recorder.add(server_round, **train_metrics)
        self.current = self.aggregate_updates(server_round, accepted)
        self.recorder.add(server_round, fit_seconds=time.perf_counter() - self._round_start)
        return ndarrays_to_parameters(self.current), train_metrics

    def screen_results(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> list[tuple[ClientProxy, FitRes]] | None:
        """Validate, log and count a round's replies; None if too few are valid to aggregate."""
        received = sum(payload_bytes(parameters_to_ndarrays(res.parameters)) for _, res in results)
        for proxy, res in results:
            self.partitions.partition_key(str(proxy.cid), res.metrics)  # learn node id -> partition id
            if self.partition_counts is None and NUM_PARTITIONS_METRIC in res.metrics:
                self.record_partition(int(res.metrics[NUM_PARTITIONS_METRIC]))
        accepted, rejected = self.validate_results(server_round, results)
        for failure in failures:
            log(WARNING, "round %s: a client failed: %s", server_round, self.describe(failure))
        self.recorder.increment(server_round, bytes_received=received, clients_rejected=rejected,
                                clients_failed=len(failures))
        self.recorder.add(server_round, clients_ok=len(accepted), partitions_ok=sorted(
            int(res.metrics[PARTITION_METRIC]) for _, res in accepted if PARTITION_METRIC in res.metrics))
        needed = max(1, self.min_fit_clients)
        if len(accepted) < needed:
            self.handle_insufficient(server_round, f"{len(accepted)} valid updates ({rejected} rejected, "
                                                   f"{len(failures)} failed), min-fit-clients={needed}")
            return None
        return accepted

    def validate_results(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> tuple[list[tuple[ClientProxy, FitRes]], int]:
        """The results that pass :func:`check_update`, sorted by partition id, and how many were rejected."""
        accepted = []
        bound = self.config.max_update_norm or None
        origin = self.update_reference(server_round)
        # Replies arrive in completion order; a fixed order makes aggregation bit-reproducible.
        for proxy, res in self.in_partition_order(results):
            reason = check_update(parameters_to_ndarrays(res.parameters), self.reference, bound, origin)
            if reason is None and res.num_examples <= 0:
                reason = f"num_examples={res.num_examples}"
            if reason is None:
                accepted.append((proxy, res))
            else:
                log(WARNING, "round %s: rejected the update of %s: %s", server_round,
                    self.client_name(str(proxy.cid)), reason)
        return accepted, len(results) - len(accepted)

    def record_partition(self, num_partitions: int) -> None:
        """Rebuild the clients' split (deterministic in the run config) and record its class counts.

        The server holds the same data as the clients, so the split is recomputed here rather than
        sent; a failure only costs the partition plot and the per-client class columns.
        """
        try:
            split = federate(self.config, num_partitions)
        except Exception as error:  # a plot must never stop a run
            log(WARNING, "could not rebuild the partition for plots/partition.png: %s", error)
            self.partition_counts = np.zeros((0, 0), dtype=np.int64)
            return
        self.partition_counts = split.client_class_counts()
        self.recorder.record_partition(self.partition_counts, split.bundle.class_names,
                                       split.bundle.class_counts())

    def handle_insufficient(self, server_round: int, reason: str) -> None:
        """A round cannot be aggregated: retry, skip or stop, as ``on-insufficient-clients`` says."""
        mode = self.config.on_insufficient_clients
        attempt = self._attempts.get(server_round, 0)
        if mode == "retry" and attempt < self.config.round_retries:
            log(WARNING, "round %s: %s; retrying with a new sample of clients (retry %s of %s)",
                server_round, reason, attempt + 1, self.config.round_retries)
            self._retry_round = server_round
            return
        self.recorder.add(server_round, round_skipped=True, skip_reason=reason)
        if mode != "fail":
            log(WARNING, "round %s: %s; round skipped, the global model stays as it was", server_round, reason)
            return
        log(WARNING, "round %s: %s; stopping the run (on-insufficient-clients=fail)", server_round, reason)
        self.recorder.add(server_round, round_seconds=time.perf_counter() - self._round_start)
        self.recorder.end_round(server_round)
        if self.config.checkpoint_every > 0 and server_round > 1:
            # The state after round - 1 is unchanged: checkpoint it so that resume restarts this round.
            self.save_checkpoint(server_round - 1, rows=self.recorder.rows[:-1])
        raise InsufficientClientsError(
            f"round {server_round}: {reason} (on-insufficient-clients=fail). Resume later with "
            f"resume={str(self.recorder.run_dir)!r}, or lower min-fit-clients"
        )

    def wants_retry(self, server_round: int) -> bool:
        """True once after a round asked to be retried (``FederationServer`` re-runs its fit phase)."""
        if self._retry_round == server_round:
            self._retry_round = None
            return True
        return False

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """Server-side metrics of the global model on the validation and the global test set."""
        if server_round == 0:
            return None  # no evaluation of the untrained initial model
        model = self.global_model(parameters_to_ndarrays(parameters))
        metrics = self.server_metrics(model)
        self.recorder.add(server_round, **metrics)
        # Per-client multi-label scores read the test split: never in tuning runs (evaluate-test=false).
        if (server_round == self.config.num_server_rounds and self.setup.data.bundle.task == "multilabel"
                and self.config.evaluate_test):
            self.record_client_multilabel(server_round, model)
        if self.fraction_evaluate == 0.0:
            self.end_round(server_round)
        main = self.recorder.main_metric
        prefix = "test" if f"test_{main}" in metrics else "val"
        return 1.0 - metrics.get(f"{prefix}_{main}", math.nan), metrics

    def evaluation_sets(self) -> dict[str, Any]:
        """The server's evaluation sets by metric prefix: ``test`` (unless evaluate-test=false), ``val``."""
        data = self.setup.data
        sets: dict[str, Any] = {"test": data.bundle.test} if self.config.evaluate_test else {}
        if len(data.validation_indices):
            sets["val"] = data.validation
        return sets

    def server_metrics(self, model: nn.Module) -> dict[str, float]:
        """``val_*`` and ``test_*`` metrics of ``model`` (see :meth:`evaluation_sets`)."""
        data, cfg = self.setup.data, self.config
        counts = data.bundle.class_counts()
        metrics: dict[str, float] = {}
        for prefix, dataset in self.evaluation_sets().items():
            values = evaluate_model(
                model, dataset, data.bundle.task, self.setup.device, counts,
                cfg.eval_batch_size, cfg.many_shot_min, cfg.few_shot_max, shot_split=cfg.shot_split,
            )
            metrics.update({f"{prefix}_{k}": v for k, v in values.items()})
        return metrics

    def record_client_multilabel(self, server_round: int, model: nn.Module) -> None:
        """Per client: macro-F1 / macro-AUC of ``model`` on the global test set over the client's classes."""
        counts = self.partition_counts
        if counts is None or counts.size == 0:
            return
        scores = per_client_multilabel_scores(model, self.setup.data.bundle, counts, self.setup.device,
                                              self.config.eval_batch_size)
        self.recorder.add_client_metrics(server_round, scores)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """PM: the unweighted mean over clients of their personalized local-test accuracy."""
        for failure in failures:
            log(WARNING, "round %s: a client failed to evaluate: %s", server_round, self.describe(failure))
        accuracies = [float(res.metrics["accuracy"]) for _, res in results]
        pm = client_mean(accuracies) if accuracies else float("nan")
        self.recorder.add_client_metrics(server_round, {
            int(res.metrics[PARTITION_METRIC]): {k: float(v) for k, v in res.metrics.items()
                                                 if k not in BOOKKEEPING_METRICS and isinstance(v, (int, float))}
            for _, res in results if PARTITION_METRIC in res.metrics})
        self.recorder.add(server_round, test_pm=pm, eval_clients=len(accuracies), eval_failed=len(failures))
        self.end_round(server_round)
        return (1.0 - pm if accuracies else None), {"pm": pm}

    def end_round(self, server_round: int) -> None:
        """Write the round's line, the checkpoint when due, and after the last round the summary."""
        self.recorder.add(server_round, round_seconds=time.perf_counter() - self._round_start)
        self.recorder.end_round(server_round)
        if self.checkpoint_due(server_round):
            self.save_checkpoint(server_round)
        if server_round == self.config.num_server_rounds:
            self.recorder.finish()

    def close_round(self, server_round: int) -> None:
        """End the round if no hook did (e.g. nobody could be sampled for federated evaluation)."""
        if self.recorder.is_open(server_round):
            self.end_round(server_round)

    # ------------------------------------------------------- naming and order
    def in_partition_order(self, results: Sequence[tuple[ClientProxy, Any]]) -> list[tuple[ClientProxy, Any]]:
        """Fit or evaluate replies sorted by the partition id each carries (stable across runs)."""
        return self.partitions.in_partition_order(results)

    def client_name(self, cid: str) -> str:
        """``node <id> (partition <k>)`` for logs."""
        return self.partitions.client_name(cid)

    def describe(self, failure: Any) -> str:
        """One line about a failed reply, naming the client."""
        return self.partitions.describe(failure)

"""Run a federation inside one process with Flower's own server loop (for sweeps and benchmarks).

The same ``server_fn`` and ``client_fn`` as a ``flwr run`` build the same strategy and the same
NumPyClients; Flower's ``Server.fit`` drives the rounds (``configure_fit`` -> ``fit`` ->
``aggregate_fit`` -> ``evaluate`` -> federated evaluation). Only the transport differs: each
client proxy calls its ClientApp's ``client_fn`` directly instead of over gRPC/Ray, one client at
a time, and keeps that node's ``context.state`` between rounds as a SuperNode does. There is no
process isolation, so use ``python -m fedapp.simulate`` (the default ``--engine flower``) to run a
real Flower simulation; use this engine where many runs must fit on a small machine.

The server is the app's :class:`~fedapp.server_loop.FederationServer` (resume, retries, named
failures) with in-process proxies whose ids are ``partition-id + 1`` (or any ``node_ids``): with the
seeded client sampling and partition-ordered aggregation of :class:`~strategies.base.FederatedStrategy`,
a run, and a run resumed from any of its checkpoints, are bit-for-bit reproducible here. A client that raises becomes a failure of that
round, as on Ray. Memory: one ``Context`` per node (``context.state`` only grows for nodes that
trained and keep private state) and the dataset cached once in this process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.common import (
    DisconnectRes,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
    ReconnectIns,
)
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from fedapp.client_app import client_fn
from fedapp.config import ConfigError, RunConfig
from fedapp.server_app import server_fn
from fedapp.server_loop import FederationServer


class InProcessClientProxy(ClientProxy):
    """A SuperNode in this process: builds the ClientApp's client per message, keeps its state."""

    def __init__(self, node_id: int, node_config: dict[str, Any], run_config: dict[str, Any]) -> None:
        super().__init__(cid=str(node_id))
        self.context = Context(
            run_id=0, node_id=node_id, node_config=node_config, state=RecordDict(), run_config=run_config
        )

    def _client(self):
        return client_fn(self.context)

    def get_properties(self, ins: GetPropertiesIns, timeout: float | None, group_id: int | None) -> GetPropertiesRes:
        return self._client().get_properties(ins)

    def get_parameters(self, ins: GetParametersIns, timeout: float | None, group_id: int | None) -> GetParametersRes:
        return self._client().get_parameters(ins)

    def fit(self, ins: FitIns, timeout: float | None, group_id: int | None) -> FitRes:
        return self._client().fit(ins)

    def evaluate(self, ins: EvaluateIns, timeout: float | None, group_id: int | None) -> EvaluateRes:
        return self._client().evaluate(ins)

    def reconnect(self, ins: ReconnectIns, timeout: float | None, group_id: int | None) -> DisconnectRes:
        return DisconnectRes(reason="in-process")


def run_inprocess(overrides: dict[str, Any], num_nodes: int, node_config: dict[str, Any] | None = None,
                  node_ids: list[int] | None = None) -> Path:
    """Run the app with ``overrides`` on ``num_nodes`` in-process nodes; returns the run directory.

    ``node_config`` is added to every node's config (e.g. ``{"state-dir": ...}``). ``node_ids`` are
    the node ids of partitions ``0..num_nodes-1`` (default ``partition + 1``); ``flwr run`` draws
    random ones, which must not change the results.
    """
    run_config = {**RunConfig.default_values(), **overrides}
    config = RunConfig.from_run_config(run_config)
    if config.min_available_clients > num_nodes:
        raise ConfigError(f"min-available-clients={config.min_available_clients} is not allowed with "
                          f"{num_nodes} nodes; allowed: <= {num_nodes} (the run would wait for clients forever)")
    components = server_fn(Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    strategy = components.server.strategy
    manager = SimpleClientManager()
    ids = list(node_ids) if node_ids is not None else [k + 1 for k in range(num_nodes)]
    if len(ids) != num_nodes or len(set(ids)) != num_nodes:
        raise ValueError(f"node_ids must be {num_nodes} distinct ids, got {ids}")
    for partition_id, node_id in enumerate(ids):
        node = {"partition-id": partition_id, "num-partitions": num_nodes, **(node_config or {})}
        manager.register(InProcessClientProxy(node_id, node, run_config))
    server = FederationServer(client_manager=manager, strategy=strategy)
    server.set_max_workers(1)  # one client at a time: deterministic and memory-bounded
    server.fit(num_rounds=components.config.num_rounds, timeout=None)
    return Path(strategy.recorder.run_dir)

"""ClientApp: node config + run config -> this node's data partition -> the algorithm's client.

What wraps the algorithm's NumPyClient is composed here, innermost first:
:class:`~clients.base.PartitionClient` (builds it per message, tags replies with the partition),
:class:`~fedapp.faults.FaultInjectingClient` (a testing aid, only where ``FEDAPP_FAULT_INJECTION``
is set) and :class:`~fedapp.node_state.NodeStateClient` (only with ``state-dir``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from flwr.app import Context
from flwr.client import Client, ClientApp

from clients.base import BaseClient, ClientSetup, PartitionClient
from fedapp.algorithm import Algorithm
from fedapp.config import RunConfig
from fedapp.data.partition_cache import default_cache_dir, node_split
from fedapp.faults import FaultInjectingClient, faults_from_environment
from fedapp.loops import resolve_device, set_determinism
from fedapp.node_state import NodeStateClient
from fedapp.registry import get_algorithm


def client_fn(context: Context) -> Client:
    node = context.node_config
    for key in ("partition-id", "num-partitions"):
        if key not in node:
            raise ValueError(f"node config lacks {key!r}; start the SuperNode with --node-config "
                             "\"partition-id=<i> num-partitions=<n>\"")
    config = node_run_config(RunConfig.from_run_config(context.run_config), node)
    torch.set_num_threads(int(node.get("torch-threads", 1)))  # 2 Ray actors share 2 cores
    partition_id, num_partitions = int(node["partition-id"]), int(node["num-partitions"])
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id={partition_id} is not allowed; allowed: 0..{num_partitions - 1}")
    algorithm = get_algorithm(config.algorithm)
    cache_dir = partition_cache_dir(node, algorithm.client)
    build = functools.partial(build_client, algorithm, config, partition_id, num_partitions, cache_dir, context)

    client: Client = PartitionClient(build, partition_id, num_partitions)
    faults = faults_from_environment()
    if faults:
        client = FaultInjectingClient(client, faults, partition_id)
    if config.state_dir:
        client = NodeStateClient(client, context.state, config.state_dir, partition_id, config.checkpoint_every)
    return client


def node_run_config(config: RunConfig, node: dict) -> RunConfig:
    """The run config with this SuperNode's own settings (node config) applied."""
    overrides = {}
    if node.get("data-root"):
        overrides["data_root"] = str(node["data-root"])
    if node.get("device"):
        overrides["device"] = str(node["device"])
    if "num-workers" in node:  # DataLoader processes this machine can afford per client
        overrides["num_workers"] = int(node["num-workers"])
    if node.get("state-dir"):  # where this node keeps its clients' private state (see fedapp.node_state)
        overrides["state_dir"] = str(node["state-dir"])
    return config.replace(**overrides) if overrides else config


def build_client(algorithm: Algorithm, config: RunConfig, partition_id: int, num_partitions: int,
                 cache_dir: Path | None, context: Context) -> BaseClient:
    """The algorithm's NumPyClient for this node's partition, built from the current ``context.state``."""
    split = node_split(config, num_partitions, partition_id, cache_dir)
    device = resolve_device(config.device)
    set_determinism(config.deterministic, device)
    return algorithm.client(ClientSetup(config, partition_id, split, device, context.state, algorithm))


def partition_cache_dir(node_config: dict, client_class: type) -> Path | None:
    """Where this node caches its partition (node config ``partition-cache``): a folder, ``""`` for
    ``$FLWR_HOME/fedapp/partitions``, or ``"off"``. Off for clients that read every partition."""
    value = str(node_config.get("partition-cache", ""))
    if value == "off" or getattr(client_class, "needs_all_partitions", False):
        return None
    return Path(value) if value else default_cache_dir()


app = ClientApp(client_fn=client_fn)

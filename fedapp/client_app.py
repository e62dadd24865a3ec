"""ClientApp: node config + run config -> this node's data partition -> the registered NumPyClient."""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import Context
from flwr.client import Client, ClientApp

from fedapp.config import RunConfig
from fedapp.data.partition_cache import default_cache_dir, node_split
from fedapp.loops import resolve_device, set_determinism
from fedapp.registry import get_algorithm
from clients.base import ClientSetup


def client_fn(context: Context) -> Client:
    node = context.node_config
    for key in ("partition-id", "num-partitions"):
        if key not in node:
            raise ValueError(f"node config lacks {key!r}; start the SuperNode with --node-config "
                             "\"partition-id=<i> num-partitions=<n>\"")
    config = RunConfig.from_run_config(context.run_config)
    overrides = {}
    if node.get("data-root"):
        overrides["data_root"] = str(node["data-root"])
    if node.get("device"):
        overrides["device"] = str(node["device"])
    if "num-workers" in node:  # DataLoader processes this machine can afford per client
        overrides["num_workers"] = int(node["num-workers"])
    if node.get("state-dir"):  # where this node keeps its clients' private state (see fedapp.node_state)
        overrides["state_dir"] = str(node["state-dir"])
    if overrides:
        config = config.replace(**overrides)
    torch.set_num_threads(int(node.get("torch-threads", 1)))  # 2 Ray actors share 2 cores
    partition_id, num_partitions = int(node["partition-id"]), int(node["num-partitions"])
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id={partition_id} is not allowed; allowed: 0..{num_partitions - 1}")
    client_class = get_algorithm(config.algorithm).client
    split = node_split(config, num_partitions, partition_id, partition_cache_dir(node, client_class))
    device = resolve_device(config.device)
    set_determinism(config.deterministic, device)
    setup = ClientSetup(config, partition_id, split, device, context.state)
    return client_class(setup).to_client()


def partition_cache_dir(node_config: dict, client_class: type) -> Path | None:
    """Where this node caches its partition (node config ``partition-cache``): a folder, ``""`` for
    ``$FLWR_HOME/fedapp/partitions``, or ``"off"``. Off for clients that read every partition."""
    value = str(node_config.get("partition-cache", ""))
    if value == "off" or getattr(client_class, "needs_all_partitions", False):
        return None
    return Path(value) if value else default_cache_dir()


app = ClientApp(client_fn=client_fn)

"""What travels between the server and the clients besides model arrays: the shared config and metric keys.

Every fit/evaluate instruction carries :data:`SERVER_ROUND_KEY` and :data:`GENERATIONS_KEY` (the
run's checkpoint generations, for :mod:`fedapp.node_state`); every fit/evaluate reply carries the
bookkeeping metrics :data:`PARTITION_METRIC` and :data:`NUM_PARTITIONS_METRIC`, and
``get_properties`` answers :data:`PARTITION_METRIC`. The server orders, samples and files clients
by partition id because Flower's node ids change with every run. Keys that one algorithm adds
(e.g. SCAFFOLD's control variates) live in that algorithm's client module.
"""

from __future__ import annotations

from typing import Any, Mapping

SERVER_ROUND_KEY = "server-round"
GENERATIONS_KEY = "state-generations"
PARTITION_METRIC = "partition-id"
NUM_PARTITIONS_METRIC = "num-partitions"
# Reply metrics that are bookkeeping, not training metrics to average.
BOOKKEEPING_METRICS = (PARTITION_METRIC, NUM_PARTITIONS_METRIC)


def server_round_of(config: Mapping[str, Any]) -> int:
    """The round an instruction belongs to (0 where the server sent none)."""
    return int(config.get(SERVER_ROUND_KEY, 0))
